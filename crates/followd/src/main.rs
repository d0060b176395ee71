//! The `followd` command: `serve`, `usersig`, `listen`, `openapi`, and `export`, `import`, `migrate`
//! ([`followd::bulk::cli`]). Parses arguments, loads the config,
//! calls the library.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use followd::config::{starter, Config};
use std::path::{Path, PathBuf};

// The request path allocates small, short-lived buffers on many threads; mimalloc is markedly faster
// than glibc's allocator at that (profiles of the delivery engine showed ~15 % in glibc malloc/free).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "followd", version, about = "A self-hosted, wire-compatible stand-in for Tencent Cloud Chat's Follow feature")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API. With no config file, writes a starter one first.
    Serve {
        /// The config file.
        #[arg(long, default_value = "followd.toml")]
        config: PathBuf,
    },
    /// Print a UserSig signed with an app's key.
    Usersig {
        /// The config file.
        #[arg(long, default_value = "followd.toml")]
        config: PathBuf,
        /// The app (default: the first in the config).
        #[arg(long)]
        sdkappid: Option<u64>,
        /// The UserID the UserSig is for.
        #[arg(long)]
        identifier: String,
        /// Validity in seconds.
        #[arg(long, default_value_t = followd_protocol::usersig::DEFAULT_EXPIRE_SECS)]
        expire: u64,
    },
    /// Print the OpenAPI 3.1 document of every route (`crates/followd/openapi.json` is this output).
    Openapi,
    /// Receive webhooks locally: verify, answer OK, print one JSON line per webhook on stdout.
    Listen {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: String,
        /// The app whose webhooks are accepted.
        #[arg(long)]
        sdkappid: u64,
        /// Require Sign/RequestTime made with this token.
        #[arg(long)]
        token: Option<String>,
        /// Require a Standard Webhooks signature made with this secret.
        #[arg(long)]
        signing_secret: Option<String>,
        /// Pass accepted webhooks on, unchanged, to this URL (its answer is relayed).
        #[arg(long)]
        forward: Option<String>,
    },
    #[command(flatten)]
    Bulk(followd::bulk::cli::BulkCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Bulk(cmd) => std::process::exit(followd::bulk::cli::run(cmd)?),
        Command::Openapi => {
            print!("{}", followd::docs::json());
            Ok(())
        }
        Command::Listen { listen, sdkappid, token, signing_secret, forward } => {
            let mut verifier = followd_receiver::Verifier::new(sdkappid);
            if let Some(t) = token {
                verifier = verifier.token(t);
            }
            if let Some(s) = signing_secret {
                verifier = verifier.signing_secret(s);
            }
            tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
                let listener = tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("--listen: cannot bind {listen}"))?;
                followd::listen::run(listener, verifier, forward, shutdown_signal()).await
            })
        }
        Command::Usersig { config, sdkappid, identifier, expire } => {
            let c = Config::load(&config)?;
            let app = match sdkappid {
                Some(id) => c
                    .apps
                    .iter()
                    .find(|a| a.sdkappid == id)
                    .with_context(|| format!("no app with sdkappid {id} in {}", config.display()))?,
                None => &c.apps[0],
            };
            followd_protocol::UserId::parse(&identifier).with_context(|| format!("--identifier {identifier:?}"))?;
            let now = followd::now_secs();
            println!("{}", followd_protocol::usersig::generate(&app.secret_key, app.sdkappid, &identifier, now, expire, None));
            Ok(())
        }
    }
}

fn serve(path: &Path) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FOLLOWD_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    log_panics();
    // Test builds only (see Cargo.toml): FAILPOINTS=name=action;… makes a component slow or die.
    let _failpoints = fail::has_failpoints().then(|| {
        tracing::warn!(failpoints = %std::env::var("FAILPOINTS").unwrap_or_default(), "built with failpoints: a test build, not for production");
        fail::FailScenario::setup()
    });
    if !path.exists() {
        first_run(path)?;
    }
    let config = Config::load(path)?;
    let addr = config.listen_addr()?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let listener = followd::net::bind(addr).with_context(|| format!("listen: cannot bind {addr}"))?;
        followd::run(config, listener, shutdown_signal()).await
    })
}

/// Sends panics to the log as well (with the thread's name), so a component that dies leaves its
/// cause where operators look; `/healthz` then reports it.
fn log_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current().name().unwrap_or("unnamed").to_owned();
        tracing::error!(thread, panic = %info, "a thread panicked");
        default(info);
    }));
}

/// Writes a starter config (owner-only, it holds a secret) and prints how to call the server.
fn first_run(path: &Path) -> anyhow::Result<()> {
    let key = hex::encode(rand::random::<[u8; 32]>());
    let sdkappid = 1_400_000_000;
    let text = starter(sdkappid, &key);
    write_private(path, &text).with_context(|| format!("writing a starter config to {}", path.display()))?;
    let c = Config::from_toml(&text, Path::new("."))?;
    let sig = followd_protocol::usersig::generate(
        &key,
        sdkappid,
        "administrator",
        followd::now_secs(),
        followd_protocol::usersig::DEFAULT_EXPIRE_SECS,
        None,
    );
    let shown = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    println!("followd: no config file, so wrote a starter one to {}", shown.display());
    println!("  sdkappid   {sdkappid}");
    println!("  admin      administrator");
    println!("  usersig    {sig}");
    println!("  (valid 180 days; make another with: followd usersig --identifier administrator)");
    println!();
    println!("Try it:");
    println!(
        "  curl -s 'http://{}/v4/im_open_login_svc/account_import?sdkappid={sdkappid}&identifier=administrator&usersig={sig}&random=1&contenttype=json' -d '{{\"UserID\":\"alice\"}}'",
        c.listen
    );
    println!();
    Ok(())
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(text.as_bytes())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

//! The `followd export`, `followd import` and `followd migrate` subcommands: their arguments, and
//! the runtime, Ctrl-C handling and exit status around [`super::client`] and [`super::migrate`].
//!
//! Exit status: 0 done; 1 an error (nothing more was applied); 2 import stopped at a malformed
//! line (everything before it applied); 3 migrate finished with failed accounts; 130 interrupted
//! (run the same command again to resume).

use anyhow::Context as _;
use std::path::PathBuf;

use super::client::{self, ImportArgs, Mode, Target};
use super::migrate::{self, MigrateArgs};
use crate::config::Config;

/// The bulk subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BulkCommand {
    /// Write the app's graph (accounts, then follows) as NDJSON, from a consistent snapshot.
    Export {
        /// The config file (the server's address and the app's key).
        #[arg(long, default_value = "followd.toml")]
        config: PathBuf,
        /// The app (default: the first in the config).
        #[arg(long)]
        sdkappid: Option<u64>,
        /// The file to write (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The server's base URL (default: from `listen` in the config).
        #[arg(long)]
        url: Option<String>,
    },
    /// Load an export (NDJSON) or a CSV `From_Account,To_Account[,FollowTime]` into the app.
    Import {
        /// The config file.
        #[arg(long, default_value = "followd.toml")]
        config: PathBuf,
        /// The app (default: the first in the config).
        #[arg(long)]
        sdkappid: Option<u64>,
        /// The file to import.
        file: PathBuf,
        /// `merge` adds; `replace` also removes the app's follows that the file does not have.
        #[arg(long, value_enum, default_value = "merge")]
        mode: Mode,
        /// Send the webhooks the changes owe (none by default).
        #[arg(long)]
        webhooks: bool,
        /// Follows per request.
        #[arg(long, default_value_t = 50_000)]
        batch: usize,
        /// The checkpoint file (default: FILE.followd-import).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The server's base URL (default: from `listen` in the config).
        #[arg(long)]
        url: Option<String>,
    },
    /// Copy a graph from Tencent Cloud Chat (or any server with its /v4 REST API) into the app.
    Migrate {
        /// The config file.
        #[arg(long, default_value = "followd.toml")]
        config: PathBuf,
        /// The app (default: the first in the config).
        #[arg(long)]
        sdkappid: Option<u64>,
        /// The source's base URL, e.g. https://console.tim.qq.com.
        #[arg(long)]
        from: String,
        /// The source app's SDKAppID.
        #[arg(long)]
        from_sdkappid: u64,
        /// The source app's key.
        #[arg(long)]
        from_key: String,
        /// The source app's admin.
        #[arg(long, default_value = "administrator")]
        from_admin: String,
        /// The users to copy: `UserID[,Nick,FaceUrl]` a line.
        #[arg(long)]
        accounts: PathBuf,
        /// Calls a second to the source.
        #[arg(long, default_value_t = migrate::DEFAULT_RATE)]
        rate: u32,
        /// Send the webhooks the changes owe on this server (none by default).
        #[arg(long)]
        webhooks: bool,
        /// The checkpoint file (default: ACCOUNTS.followd-migrate).
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// The server's base URL (default: from `listen` in the config).
        #[arg(long)]
        url: Option<String>,
    },
}

fn target(config: &std::path::Path, sdkappid: Option<u64>, url: Option<String>) -> anyhow::Result<Target> {
    let c = Config::load(config).with_context(|| format!("loading {}", config.display()))?;
    Target::from_config(&c, sdkappid, url)
}

/// Runs a bulk subcommand; returns the process's exit status.
pub fn run(cmd: BulkCommand) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("stopping after the work in flight (Ctrl-C again to quit at once)");
                let _ = stop_tx.send(true);
                if tokio::signal::ctrl_c().await.is_ok() {
                    std::process::exit(130);
                }
            }
        });
        match cmd {
            BulkCommand::Export { config, sdkappid, out, url } => {
                let t = target(&config, sdkappid, url)?;
                let r = client::export(&t, out.as_deref(), false, stop).await?;
                eprintln!("exported {} accounts and {} follows ({} bytes)", r.accounts, r.follows, r.bytes);
                Ok(0)
            }
            BulkCommand::Import { config, sdkappid, file, mode, webhooks, batch, checkpoint, url } => {
                let t = target(&config, sdkappid, url)?;
                let args = ImportArgs { file, mode, webhooks, batch, checkpoint, quiet: false };
                let r = client::import(&t, &args, stop).await?;
                eprint!("{}", r.summary());
                Ok(if r.failure.is_some() {
                    2
                } else if r.interrupted {
                    130
                } else {
                    0
                })
            }
            BulkCommand::Migrate {
                config,
                sdkappid,
                from,
                from_sdkappid,
                from_key,
                from_admin,
                accounts,
                rate,
                webhooks,
                checkpoint,
                url,
            } => {
                let t = target(&config, sdkappid, url)?;
                let args = MigrateArgs {
                    from,
                    from_sdkappid,
                    from_key,
                    from_admin,
                    accounts,
                    rate,
                    webhooks,
                    checkpoint,
                    stop_after: None,
                    quiet: false,
                };
                let r = migrate::migrate(&t, &args, stop).await?;
                eprint!("{}", r.summary());
                Ok(if r.interrupted {
                    130
                } else if !r.failures.is_empty() {
                    3
                } else {
                    0
                })
            }
        }
    })
}

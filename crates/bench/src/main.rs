//! `followd-bench`: loads a real followd server over HTTP on loopback and prints figures.
//!
//! Every throughput figure is printed beside a baseline measured in the same run with the same load
//! generator: a trivial JSON echo server (`followd-bench echo`, a separate process on the same HTTP
//! stack). The ratio is the figure that holds on a noisy machine; absolute numbers drift.

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

mod bulk;
mod console;
mod delete;
mod flood;
mod live;
mod pg;
mod webhooks;

const APP: u64 = 1400000000;
pub(crate) const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
pub(crate) const ADMIN: &str = "administrator";

#[derive(Parser)]
#[command(name = "followd-bench", about = "Benchmarks a real followd server over loopback HTTP")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// The followd binary (default: next to this one; build with `cargo build --release`).
    #[arg(long)]
    server: Option<PathBuf>,
    /// Seconds per throughput phase.
    #[arg(long, default_value_t = 8)]
    seconds: u64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Users in the throughput phases.
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    /// Edges of the graph loaded for the storage figures.
    #[arg(long, default_value_t = 1_000_000)]
    graph_edges: u64,
    /// Followers of the account whose list latency is measured.
    #[arg(long, default_value_t = 1_000_000)]
    fans: u64,
    /// Latency samples per page depth.
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    /// Run followd on PostgreSQL: a database of the run's own is created on this server and dropped
    /// at the end (`postgres://user@host:port/db`, any database the user may connect to).
    #[arg(long)]
    database_url: Option<String>,
    /// followd processes sharing the PostgreSQL database; the load is spread over them by request.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
}

#[derive(Subcommand)]
enum Cmd {
    /// Webhook delivery: throughput against a raw client, latency, isolation from hanging endpoints.
    Webhooks {
        /// Seconds per phase.
        #[arg(long, default_value_t = 8)]
        seconds: u64,
        /// Events in the backlog that is drained.
        #[arg(long, default_value_t = 200_000)]
        backlog: u64,
        /// Run followd on PostgreSQL, in a database of the run's own on this server (`--nodes N`
        /// before the subcommand: N processes on it, each request and app spread over them).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Live notifications: commit-to-WebSocket latency with many connected clients, memory per client.
    Live {
        /// Connected clients.
        #[arg(long, default_value_t = 10_000)]
        clients: u64,
        /// Follows a second while measuring.
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Seconds of measurement.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// Deleting an account with a million followers: other writers' latency before and during the job.
    Delete {
        /// Followers of the deleted account.
        #[arg(long, default_value_t = 1_000_000)]
        fans: u64,
        /// Concurrent connections of the other writers.
        #[arg(long, default_value_t = 8)]
        writers: usize,
        /// Requests a second of the other writers, all together (paced, well below saturation).
        #[arg(long, default_value_t = 1_000)]
        rate: u64,
        /// Seconds of the baseline phase, before the deletion.
        #[arg(long, default_value_t = 10)]
        baseline: u64,
        /// The server's `deletion_chunk_edges` (default: the server's default).
        #[arg(long)]
        chunk: Option<usize>,
        /// Send no webhooks (by default the deletion's events go to a receiver in this process).
        #[arg(long)]
        no_webhook: bool,
    },
    /// Overload: the server's memory and answers under a flood of concurrent connections, and a
    /// normal request's latency right after it.
    Flood {
        /// Concurrent connections, each sending one request.
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Share of the requests that send only half their body and stall, in percent.
        #[arg(long, default_value_t = 10)]
        slow_percent: usize,
        /// Floods one after the other against the same server (memory kept, or leaked, shows in the later ones).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// The web console: server time of each page with a million events in the log and a user with a
    /// million followers, beside `GET /healthz` in the same run.
    Console {
        /// Followers of the big account (one webhook event each).
        #[arg(long, default_value_t = 1_000_000)]
        fans: u64,
        /// GETs of each page.
        #[arg(long, default_value_t = 50)]
        samples: usize,
    },
    /// `followd import` of a generated graph against `follow_add` of the same edges, then `followd
    /// export`: edges/s, the ratio, and peak RSS of the server and of each command.
    Import {
        /// Edges imported (and exported).
        #[arg(long, default_value_t = 1_000_000)]
        edges: u64,
        /// Edges loaded through follow_add for the baseline (a prefix of the same graph).
        #[arg(long, default_value_t = 200_000)]
        sample: u64,
    },
    /// The baseline: a trivial JSON echo server (started by the benchmark itself).
    Echo {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.cmd {
        Some(Cmd::Echo { ref listen }) => rt.block_on(echo_server(listen.clone())),
        Some(Cmd::Live { clients, rate, seconds }) => rt.block_on(async { live::run(&server_binary(&cli)?, clients, rate, seconds).await }),
        Some(Cmd::Flood { connections, slow_percent, rounds }) => {
            rt.block_on(async { flood::run(&server_binary(&cli)?, connections, slow_percent, rounds).await })
        }
        Some(Cmd::Webhooks { seconds, backlog, ref database_url }) => {
            if database_url.is_none() && cli.nodes != 1 {
                bail!("--nodes needs --database-url: only PostgreSQL is shared by several nodes");
            }
            rt.block_on(async { webhooks::run(&server_binary(&cli)?, seconds, backlog, database_url.as_deref(), cli.nodes.max(1)).await })
        }
        Some(Cmd::Delete { fans, writers, rate, baseline, chunk, no_webhook }) => rt.block_on(async {
            let opts = delete::Options { fans, writers, rate, baseline, chunk, webhook: !no_webhook, connections: cli.connections };
            delete::run(&server_binary(&cli)?, opts).await
        }),
        Some(Cmd::Console { fans, samples }) => {
            rt.block_on(async { console::run(&server_binary(&cli)?, fans, samples, cli.connections).await })
        }
        Some(Cmd::Import { edges, sample }) => rt.block_on(async {
            bulk::run(&server_binary(&cli)?, bulk::Options { edges, sample: sample.min(edges), connections: cli.connections }).await
        }),
        None => rt.block_on(bench(cli)),
    }
}

async fn echo_server(listen: String) -> anyhow::Result<()> {
    use axum::routing::post;
    let app = axum::Router::new().route(
        "/echo",
        post(|body: bytes::Bytes| async move {
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            ([("content-type", "application/json")], serde_json::to_vec(&v).unwrap())
        }),
    );
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    eprintln!("echo listening addr={}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

pub(crate) struct Child {
    pub(crate) proc: tokio::process::Child,
    pub(crate) addr: String,
}

pub(crate) async fn spawn(mut cmd: tokio::process::Command) -> anyhow::Result<Child> {
    let mut proc = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().context("starting a child process")?;
    let mut lines = BufReader::new(proc.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??.context("child exited before listening")?;
        // Figures of a test build (failpoints compiled in) would not describe the product.
        if line.contains("built with failpoints") {
            bail!("the server binary is a test build (failpoints); build it with `cargo build --release -p followd`");
        }
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Child { proc, addr })
}

pub(crate) fn peak_rss_kib(pid: u32) -> Option<u64> {
    proc_status_kib(pid, "VmHWM:")
}

/// A numeric `/proc/PID/status` field: `VmRSS:` and `VmHWM:` in KiB, `Threads:` a count.
pub(crate) fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find(|l| l.starts_with(field))?.split_whitespace().nth(1)?.parse().ok()
}

pub(crate) struct Target {
    pub(crate) http: reqwest::Client,
    pub(crate) base: String,
    pub(crate) query: String,
}

impl Target {
    pub(crate) fn url(&self, api: &str) -> String {
        format!("{}/v4/{api}?{}", self.base, self.query)
    }

    pub(crate) async fn call(&self, api: &str, body: &Value) -> anyhow::Result<Value> {
        let r: Value = self.http.post(self.url(api)).body(body.to_string()).send().await?.json().await?;
        if r["ActionStatus"] != "OK" {
            bail!("{api} refused: {r}");
        }
        Ok(r)
    }
}

/// The outcome of one load phase.
#[derive(Clone, Copy)]
pub(crate) struct Phase {
    pub(crate) requests: u64,
    pub(crate) units: u64,
    pub(crate) secs: f64,
}

impl Phase {
    pub(crate) fn rps(&self) -> f64 {
        self.requests as f64 / self.secs
    }
    fn ups(&self) -> f64 {
        self.units as f64 / self.secs
    }
}

/// Drives `conns` concurrent request loops for `dur` (or until `limit` requests); `make(i)` builds
/// request i as (url, body); `units(resp)` counts what the response achieved.
pub(crate) async fn drive(
    http: &reqwest::Client,
    conns: usize,
    dur: Duration,
    limit: u64,
    make: Arc<dyn Fn(u64) -> (String, String) + Send + Sync>,
    units: fn(&Value) -> u64,
) -> anyhow::Result<Phase> {
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (http, next, make) = (http.clone(), next.clone(), make.clone());
        tasks.push(tokio::spawn(async move {
            let (mut reqs, mut done) = (0u64, 0u64);
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let (url, body) = make(i);
                let r: Value = http.post(url).body(body).send().await?.json().await?;
                if r.get("ActionStatus").is_some_and(|s| s != "OK") {
                    bail!("refused: {r}");
                }
                reqs += 1;
                done += units(&r);
            }
            Ok::<_, anyhow::Error>((reqs, done))
        }));
    }
    let (mut requests, mut total) = (0, 0);
    for t in tasks {
        let (r, u) = t.await??;
        requests += r;
        total += u;
    }
    Ok(Phase { requests, units: total, secs: start.elapsed().as_secs_f64() })
}

pub(crate) fn ok_items(r: &Value) -> u64 {
    r["ResultItem"].as_array().map_or(0, |a| a.iter().filter(|i| i["ResultCode"] == 0).count() as u64)
}

fn one(_: &Value) -> u64 {
    1
}

pub(crate) fn user(i: u64) -> String {
    format!("u{i:07}")
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn latency(t: &Target, api: &str, body: &Value, n: usize) -> anyhow::Result<(f64, f64)> {
    let url = t.url(api);
    let text = body.to_string();
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let s = Instant::now();
        let r: Value = t.http.post(&url).body(text.clone()).send().await?.json().await?;
        ms.push(s.elapsed().as_secs_f64() * 1000.0);
        if r.get("ActionStatus").is_some_and(|s| s != "OK") {
            bail!("refused: {r}");
        }
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
}

fn server_binary(cli: &Cli) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let server_bin = cli.server.clone().unwrap_or_else(|| me.with_file_name("followd"));
    if !server_bin.exists() {
        bail!("{} not found: build it with `cargo build --release -p followd` or pass --server", server_bin.display());
    }
    Ok(server_bin)
}

async fn bench(cli: Cli) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let server_bin = server_binary(&cli)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("followd.toml");
    let db = cli.database_url.as_deref().map(pg::Db::create).transpose()?;
    if db.is_none() && cli.nodes != 1 {
        bail!("--nodes needs --database-url: only PostgreSQL is shared by several nodes");
    }
    let top = db.as_ref().map_or(String::new(), |d| format!("database_url = \"{}\"\n", d.url));
    std::fs::write(
        &config,
        format!(
            "{top}listen = \"127.0.0.1:0\"\n[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmax_following = 0\n"
        ),
    )?;
    let mut servers = Vec::new();
    for _ in 0..cli.nodes.max(1) {
        let mut cmd = tokio::process::Command::new(&server_bin);
        cmd.args(["serve", "--config"]).arg(&config).env("FOLLOWD_LOG", "warn,followd=info");
        servers.push(spawn(cmd).await?);
    }
    let server = &servers[0];
    let mut echo_cmd = tokio::process::Command::new(&me);
    echo_cmd.arg("echo");
    let echo = spawn(echo_cmd).await?;

    let http = reqwest::Client::builder().pool_max_idle_per_host(cli.connections * 2).build()?;
    let sig = followd_protocol::usersig::generate(KEY, APP, ADMIN, now(), 86400, None);
    let t = Target {
        http: http.clone(),
        base: format!("http://{}", server.addr),
        query: format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"),
    };
    let t = Arc::new(t);
    // Request i goes to node i % nodes.
    let nodes: Arc<Vec<Target>> = Arc::new(
        servers.iter().map(|s| Target { http: http.clone(), base: format!("http://{}", s.addr), query: t.query.clone() }).collect(),
    );
    let dur = Duration::from_secs(cli.seconds);
    let conns = cli.connections;
    let store = db.as_ref().map_or("SQLite".to_owned(), |_| format!("PostgreSQL, {} node(s)", servers.len()));
    eprintln!(
        "followd {} (pid {:?}) on {store}, echo {}, {} connections, {} s a phase",
        server.addr,
        server.proc.id(),
        echo.addr,
        conns,
        cli.seconds
    );

    // Users for the throughput phases.
    let u = cli.users;
    import(&t, &http, conns, 0, 2 * u).await?;

    // A graph of `graph_edges` edges among users u..2u (each follows `per_user` others spread over the
    // id range), loaded through the API; the storage figures are read from it.
    let per_user = cli.graph_edges.div_ceil(u);
    let stride = (u / per_user.max(1)).max(1);
    let ns = nodes.clone();
    let graph_make: Arc<dyn Fn(u64) -> (String, String) + Send + Sync> = Arc::new(move |i| {
        let url = ns[i as usize % ns.len()].url("follow/follow_add");
        let (f, chunk) = (i % u, i / u);
        let items: Vec<Value> = (chunk * 20..((chunk + 1) * 20).min(per_user))
            .map(|k| json!({"To_Account": user(u + (f * 7919 + 1 + k * stride) % u)}))
            .collect();
        (url.clone(), json!({"From_Account": user(u + f), "FollowItem": items}).to_string())
    });
    let load_start = Instant::now();
    let graph = drive(&http, conns, Duration::from_secs(24 * 3600), u * per_user.div_ceil(20), graph_make, ok_items).await?;
    eprintln!("loaded a graph of {} edges in {:.1} s", graph.units, load_start.elapsed().as_secs_f64());
    let measure = |dir: &Path| match &db {
        Some(d) => pg::storage(&d.url),
        None => storage(&dir.join("data")),
    };
    let (g_edges, g_live, g_edge_bytes, _) = measure(dir.path())?;

    // The list-latency account: `fans` followers, loaded through the API.
    let star = load_star(&t, &http, conns, 2 * u, cli.fans).await?;

    // Cursors at the first, middle and last page, found by walking the list.
    let mut cursors = vec![("first", String::new())];
    let mut cursor = String::new();
    let mut depth = 0u64;
    let mid = cli.fans / 2;
    let last = cli.fans.saturating_sub(100);
    while depth < last {
        let want = (last - depth).min(1000).min(if depth < mid { mid - depth } else { u64::MAX }).max(1);
        let r =
            t.call("follow/follow_get", &json!({"From_Account": star, "FollowType": 1, "StartCursor": cursor, "WantNum": want})).await?;
        depth += r["FollowItem"].as_array().map_or(0, |a| a.len() as u64);
        cursor = r["NextCursor"].as_str().unwrap_or("").to_owned();
        if depth == mid {
            cursors.push(("middle", cursor.clone()));
        }
        if cursor.is_empty() {
            break;
        }
    }
    cursors.push(("last", cursor));
    let mut lat = Vec::new();
    for (name, c) in &cursors {
        let body = json!({"From_Account": star, "FollowType": 1, "StartCursor": c, "WantNum": 100});
        let (p50, p99) = latency(&t, "follow/follow_get", &body, cli.samples).await?;
        eprintln!("follow_get {name} page: p50 {p50:.2} ms, p99 {p99:.2} ms");
        lat.push((*name, p50, p99));
    }
    let echo_body = json!({"From_Account": star, "FollowType": 1, "StartCursor": "", "WantNum": 100});
    let echo_t = Target { http: http.clone(), base: format!("http://{}", echo.addr), query: String::new() };
    let url = format!("{}/echo", echo_t.base);
    let mut ms = Vec::new();
    for _ in 0..cli.samples {
        let s = Instant::now();
        http.post(&url).body(echo_body.to_string()).send().await?.bytes().await?;
        ms.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let (echo_p50, echo_p99) = (percentile(&ms, 0.5), percentile(&ms, 0.99));
    // Storage right after loading, before the throughput phases churn the files.
    let (edges, live_bytes, edge_bytes, account_bytes) = measure(dir.path())?;

    let echo_url = format!("http://{}/echo", echo.addr);
    let echo_make = |url: String| -> Arc<dyn Fn(u64) -> (String, String) + Send + Sync> {
        Arc::new(move |i| {
            (url.clone(), json!({"From_Account": user(i % 1000), "FollowItem": [{"To_Account": user(i % 1000 + 1)}]}).to_string())
        })
    };
    let echo1 = drive(&http, conns, dur, u64::MAX, echo_make(echo_url.clone()), one).await?;
    eprintln!("echo: {:.0} req/s", echo1.rps());

    // Calls go to the nodes of `ns` in turn.
    let add_make_on = |per: u64, ns: Arc<Vec<Target>>| -> Arc<dyn Fn(u64) -> (String, String) + Send + Sync> {
        Arc::new(move |i| {
            let url = ns[i as usize % ns.len()].url("follow/follow_add");
            let (f, round) = (i % u, i / u);
            let items: Vec<Value> = (0..per).map(|j| json!({"To_Account": user((f + 1 + round * per + j) % u)})).collect();
            (url.clone(), json!({"From_Account": user(f), "FollowItem": items}).to_string())
        })
    };
    let del_make_on = |per: u64, ns: Arc<Vec<Target>>| -> Arc<dyn Fn(u64) -> (String, String) + Send + Sync> {
        Arc::new(move |i| {
            let url = ns[i as usize % ns.len()].url("follow/follow_delete");
            let (f, round) = (i % u, i / u);
            let to: Vec<String> = (0..per).map(|j| user((f + 1 + round * per + j) % u)).collect();
            (url.clone(), json!({"From_Account": user(f), "To_Account": to}).to_string())
        })
    };
    let add_make = |per: u64| add_make_on(per, nodes.clone());
    let del_make = |per: u64| del_make_on(per, nodes.clone());
    let add20 = drive(&http, conns, dur, u64::MAX, add_make(20), ok_items).await?;
    eprintln!("follow_add x20: {:.0} edges/s ({:.0} req/s)", add20.ups(), add20.rps());
    let del20 = drive(&http, conns, Duration::from_secs(3600), add20.requests, del_make(20), ok_items).await?;
    eprintln!("follow_delete x20: {:.0} edges/s", del20.ups());
    let add1 = drive(&http, conns, dur, u64::MAX, add_make(1), ok_items).await?;
    eprintln!("follow_add x1: {:.0} edges/s", add1.ups());
    let del1 = drive(&http, conns, Duration::from_secs(3600), add1.requests, del_make(1), ok_items).await?;
    eprintln!("follow_delete x1: {:.0} edges/s", del1.ups());
    // With several nodes, the same follows through the first node alone and through all of them, in
    // turn and twice, in this run: the ratio of the two then does not depend on how two separate
    // runs found the machine. Each phase's edges are removed again after it.
    let mut spread: Option<[(f64, f64); 2]> = None;
    if nodes.len() > 1 {
        let first: Arc<Vec<Target>> =
            Arc::new(vec![Target { http: http.clone(), base: nodes[0].base.clone(), query: nodes[0].query.clone() }]);
        // [per target count][one node, all nodes]: summed rates.
        let mut sums = [[0.0f64; 2]; 2];
        for round in 0..2 {
            for (k, set) in [&first, &nodes].into_iter().enumerate() {
                for (j, per) in [1u64, 20].into_iter().enumerate() {
                    let add = drive(&http, conns, dur, u64::MAX, add_make_on(per, set.clone()), ok_items).await?;
                    drive(&http, conns, Duration::from_secs(3600), add.requests, del_make_on(per, set.clone()), ok_items).await?;
                    let rate = if per == 1 { add.rps() } else { add.ups() };
                    eprintln!("round {round}, {} node(s) serving, follow_add x{per}: {rate:.0}/s", set.len());
                    sums[j][k] += rate;
                }
            }
        }
        spread = Some([(sums[0][0] / 2.0, sums[0][1] / 2.0), (sums[1][0] / 2.0, sums[1][1] / 2.0)]);
    }
    let echo2 = drive(&http, conns, dur, u64::MAX, echo_make(echo_url.clone()), one).await?;
    let echo_rps = (echo1.rps() + echo2.rps()) / 2.0;
    eprintln!("echo again: {:.0} req/s", echo2.rps());

    let rss = servers.iter().filter_map(|s| s.proc.id().and_then(peak_rss_kib)).max().unwrap_or(0);
    // Stop gracefully so the WAL is checkpointed, then measure the files.
    for s in &servers {
        if let Some(pid) = s.proc.id() {
            std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
        }
    }
    for s in &mut servers {
        s.proc.wait().await?;
    }
    // PostgreSQL's own rate for as many edge rows as the 20-target phase added, with nothing else
    // running.
    let copy = match &db {
        Some(d) => {
            let r = pg::copy_rate(&d.url, add20.units.max(100_000))?;
            eprintln!("PostgreSQL COPY of {} edge rows: {r:.0} rows/s", add20.units.max(100_000));
            Some(r)
        }
        None => None,
    };

    println!();
    println!("| figure | value | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    println!("| store | {store} | | |");
    println!("| echo endpoint | {echo_rps:.0} req/s | | |");
    if let Some(copy) = copy {
        println!("| PostgreSQL COPY of the same edge rows (scratch table with the edges' indexes) | {copy:.0} rows/s | | |");
        println!(
            "| follow_add, 20 targets/call, against COPY | {:.0} edges/s | COPY {copy:.0} rows/s | {:.3} of COPY |",
            add20.ups(),
            add20.ups() / copy
        );
        println!(
            "| follow_add, 1 target/call, against COPY | {:.0} edges/s | COPY {copy:.0} rows/s | {:.3} of COPY |",
            add1.ups(),
            add1.ups() / copy
        );
    }
    for (name, p) in [("follow_add, 20 targets/call", add20), ("follow_delete, 20 targets/call", del20)] {
        println!(
            "| {name} | {:.0} edges/s ({:.0} calls/s) | echo {echo_rps:.0} req/s | {:.2} edges per echo request |",
            p.ups(),
            p.rps(),
            p.ups() / echo_rps
        );
    }
    for (name, p) in [("follow_add, 1 target/call", add1), ("follow_delete, 1 target/call", del1)] {
        println!("| {name} | {:.0} calls/s | echo {echo_rps:.0} req/s | {:.2} of echo |", p.rps(), p.rps() / echo_rps);
    }
    if let Some([(one1, all1), (one20, all20)]) = spread {
        let n = nodes.len();
        println!(
            "| follow_add, 1 target/call: {n} nodes against the first alone, same run (in turn, twice) | {all1:.0} against {one1:.0} calls/s | | {:.2}x |",
            all1 / one1
        );
        println!(
            "| follow_add, 20 targets/call: {n} nodes against the first alone, same run (in turn, twice) | {all20:.0} against {one20:.0} edges/s | | {:.2}x |",
            all20 / one20
        );
    }
    for (name, p50, p99) in &lat {
        println!("| follow_get WantNum 100, {name} page of {} followers | p50 {p50:.2} ms, p99 {p99:.2} ms | echo p50 {echo_p50:.2} ms, p99 {echo_p99:.2} ms | p99 {:.1}x echo |", cli.fans, p99 / echo_p99);
    }
    let accounts = 2 * u + cli.fans + 1;
    println!("| graph of {g_edges} edges among {u} users: whole database per edge | {:.1} B | | |", g_live as f64 / g_edges.max(1) as f64);
    println!(
        "| same graph: edge structures per edge (both orderings + mutual) | {:.1} B | | |",
        g_edge_bytes as f64 / g_edges.max(1) as f64
    );
    println!(
        "| after adding {} followers of one account: edge structures per edge | {:.1} B | | |",
        cli.fans,
        edge_bytes as f64 / edges.max(1) as f64
    );
    println!(
        "| after adding them: whole database per edge ({edges} edges, {accounts} accounts) | {:.1} B | | |",
        live_bytes as f64 / edges.max(1) as f64
    );
    println!("| accounts table and index per account | {:.1} B | | |", account_bytes as f64 / accounts as f64);
    println!("| server peak RSS (largest node) | {:.1} MiB | | |", rss as f64 / 1024.0);
    let summary = json!({
        "echo_rps": echo_rps.round(),
        "add20_edges_per_s": add20.ups().round(), "add20_edges_per_echo_req": round2(add20.ups() / echo_rps),
        "del20_edges_per_s": del20.ups().round(), "del20_edges_per_echo_req": round2(del20.ups() / echo_rps),
        "add1_calls_per_s": add1.rps().round(), "add1_vs_echo": round2(add1.rps() / echo_rps),
        "del1_calls_per_s": del1.rps().round(), "del1_vs_echo": round2(del1.rps() / echo_rps),
        "follow_get_p99_ms": lat.iter().map(|(n, _, p99)| (n.to_string(), json!(round2(*p99)))).collect::<serde_json::Map<_, _>>(),
        "echo_p99_ms": round2(echo_p99),
        "fans": cli.fans, "graph_edges": g_edges,
        "graph_db_bytes_per_edge": round2(g_live as f64 / g_edges.max(1) as f64),
        "graph_edge_bytes_per_edge": round2(g_edge_bytes as f64 / g_edges.max(1) as f64),
        "all_edge_bytes_per_edge": round2(edge_bytes as f64 / edges.max(1) as f64),
        "all_db_bytes_per_edge": round2(live_bytes as f64 / edges.max(1) as f64),
        "peak_rss_mib": round2(rss as f64 / 1024.0),
        "store": store, "copy_rows_per_s": copy.map(f64::round),
        "add20_vs_copy": copy.map(|c| round2(add20.ups() / c * 1000.0) / 1000.0),
        "nodes_vs_one_same_run": spread.map(|[(one1, all1), (one20, all20)]| json!({"add1": round2(all1 / one1), "add20": round2(all20 / one20)})),
    });
    println!("{summary}");
    drop(echo);
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Makes user `fan0 + fans` followed by users `fan0..fan0 + fans` (all created as needed) through
/// the bulk import API, 50,000 follows a request, with the webhooks the follows owe (one event each,
/// as many `follow_add` calls would make): loading a million followers through the API itself took
/// minutes on PostgreSQL. Returns the followed account.
pub(crate) async fn load_star(t: &Arc<Target>, http: &reqwest::Client, _conns: usize, fan0: u64, fans: u64) -> anyhow::Result<String> {
    const PER_REQUEST: u64 = 50_000;
    let load_start = Instant::now();
    let star = user(fan0 + fans);
    let url = format!("{}/bulk/v1/import?{}", t.base, t.query);
    let mut lo = 0;
    while lo < fans {
        let hi = (lo + PER_REQUEST).min(fans);
        let follows: Vec<Value> = (lo..hi).map(|i| json!({"From_Account": user(fan0 + i), "To_Account": star})).collect();
        let body = json!({"Accounts": [{"UserID": star}], "Follows": follows, "Webhooks": true}).to_string();
        let r: Value = http.post(&url).body(body).send().await?.json().await?;
        if r["ErrorCode"] != 0 || r["Rejected"].as_array().is_some_and(|a| !a.is_empty()) {
            bail!("loading the followers: {r}");
        }
        lo = hi;
    }
    eprintln!("loaded {fans} followers in {:.1} s", load_start.elapsed().as_secs_f64());
    Ok(star)
}

/// Imports users `from..to` through multiaccount_import, 100 a call.
pub(crate) async fn import(t: &Arc<Target>, http: &reqwest::Client, conns: usize, from: u64, to: u64) -> anyhow::Result<()> {
    let url = t.url("im_open_login_svc/multiaccount_import");
    let calls = (to - from).div_ceil(100);
    let make: Arc<dyn Fn(u64) -> (String, String) + Send + Sync> = Arc::new(move |i| {
        let lo = from + i * 100;
        let accounts: Vec<String> = (lo..(lo + 100).min(to)).map(user).collect();
        (url.clone(), json!({ "Accounts": accounts }).to_string())
    });
    drive(http, conns, Duration::from_secs(24 * 3600), calls, make, one).await?;
    Ok(())
}

/// Read from the live database (through its WAL): (edges, bytes in use, bytes of the edge structures,
/// bytes of the accounts table and index).
fn storage(data: &Path) -> anyhow::Result<(u64, u64, u64, u64)> {
    let c = rusqlite::Connection::open_with_flags(data.join("followd.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let pages: u64 = c.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: u64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let page_size: u64 = c.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    let live = (pages - free) * page_size;
    let edges: u64 = c.query_row("SELECT count(*) FROM edges", [], |r| r.get(0))?;
    let size = |names: &str| -> anyhow::Result<u64> {
        Ok(c.query_row(&format!("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN ({names})"), [], |r| r.get(0))?)
    };
    Ok((edges, live, size("'edges','edges_in','mutual'")?, size("'accounts','accounts_by_name'")?))
}

//! `followd-bench webhooks`: delivery throughput against a raw-client baseline, commit-to-receipt
//! latency at a paced 1,000 events/s, and the same latency with 10 % of endpoints hanging.

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{Path, State};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{drive, import, ok_items, percentile, spawn, user, Phase, Target, ADMIN, KEY};

/// SDKAppIDs: app 0 carries the throughput phases, apps 1..=10 the latency phases.
const APP0: u64 = 1_500_000_000;
const LATENCY_APPS: u64 = 10;

/// The bench's receiver: counts, and for latency phases remembers when each (From, To) arrived.
struct Receiver {
    count: AtomicU64,
    open: tokio::sync::watch::Sender<bool>,
    /// (receiver path, From_Account, first target) → arrival.
    arrivals: Mutex<HashMap<(String, String, String), Instant>>,
    track: std::sync::atomic::AtomicBool,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    Path(path): Path<String>,
    body: Bytes,
) -> ([(&'static str, &'static str); 1], &'static str) {
    if path == "hang" {
        std::future::pending::<()>().await;
    }
    let mut open = r.open.subscribe();
    while !*open.borrow_and_update() {
        if open.changed().await.is_err() {
            break;
        }
    }
    if r.track.load(Ordering::Relaxed) {
        let at = Instant::now();
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            let from = v["From_Account"].as_str().unwrap_or("").to_owned();
            let to = v["FollowList"][0]["To_Account"].as_str().unwrap_or("").to_owned();
            r.arrivals.lock().insert((path, from, to), at);
        }
    }
    r.count.fetch_add(1, Ordering::Relaxed);
    ([("content-type", "application/json")], followd_protocol::webhook::RESPONSE_OK)
}

fn config(receiver: &str, top: &str) -> String {
    let mut c = format!("{top}listen = \"127.0.0.1:0\"\n");
    for i in 0..=LATENCY_APPS {
        // App 0's long timeout lets a gated receiver hold a backlog without failing attempts.
        let timeout = if i == 0 { 600_000 } else { 2_000 };
        c.push_str(&format!(
            "[[apps]]\nsdkappid = {}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmax_following = 0\n\
             [apps.webhook]\nurl = \"http://{receiver}/ok/{i}\"\nallow_private_destinations = true\ntimeout_ms = {timeout}\n",
            APP0 + i
        ));
    }
    c
}

fn target(http: &reqwest::Client, addr: &str, app: u64) -> Arc<Target> {
    let sig = followd_protocol::usersig::generate(KEY, app, ADMIN, crate::now(), 86400, None);
    Arc::new(Target {
        http: http.clone(),
        base: format!("http://{addr}"),
        query: format!("sdkappid={app}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"),
    })
}

/// Events not yet delivered, summed over the nodes (each reports those it owns).
async fn pending(http: &reqwest::Client, addrs: &[String]) -> anyhow::Result<u64> {
    let mut sum = 0;
    for addr in addrs {
        let text = http.get(format!("http://{addr}/metrics")).send().await?.text().await?;
        let line = text.lines().find(|l| l.starts_with("followd_webhook_pending_events ")).context("no pending gauge")?;
        sum += line.split_whitespace().nth(1).unwrap_or("0").parse::<u64>()?;
    }
    Ok(sum)
}

/// An admin setting changed on one node applies on the others within a second (they re-read it).
async fn settle(nodes: usize) {
    if nodes > 1 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

async fn wait_count(r: &Receiver, n: u64, limit: Duration) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while r.count.load(Ordering::Relaxed) < n {
        if start.elapsed() > limit {
            anyhow::bail!("only {} of {n} webhooks arrived within {limit:?}", r.count.load(Ordering::Relaxed));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(start.elapsed())
}

/// Sends `rate` single-target follows a second for `secs`, spread over `apps` (each `users` users),
/// and returns the send→receipt latency (ms) of every one whose app is in `measured`.
async fn paced(
    t: &[Arc<Target>],
    r: &Arc<Receiver>,
    rate: u64,
    secs: u64,
    users: u64,
    measured: &[usize],
    round: u64,
) -> anyhow::Result<Vec<f64>> {
    r.arrivals.lock().clear();
    r.track.store(true, Ordering::Relaxed);
    let total = rate * secs;
    let start = Instant::now();
    let sent = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let mut tasks = Vec::new();
    for i in 0..total {
        tokio::time::sleep_until((start + Duration::from_micros(i * 1_000_000 / rate)).into()).await;
        let app = (i % t.len() as u64) as usize;
        let (tt, sent, measure) = (t[app].clone(), sent.clone(), measured.contains(&app));
        // Round r uses targets of its own, so every call is a new edge that owes a webhook.
        let from = user(i / t.len() as u64 % users);
        let to = user(users + round * 20_000 + i / t.len() as u64 / users);
        tasks.push(tokio::spawn(async move {
            let at = Instant::now();
            let body = json!({"From_Account": from, "FollowItem": [{"To_Account": to}]});
            let ok = tt.call("follow/follow_add", &body).await.is_ok_and(|r| ok_items(&r) == 1);
            if ok && measure {
                sent.lock().push(((format!("ok/{}", app + 1), from, to), at, at.elapsed()));
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let sent = std::mem::take(&mut *sent.lock());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lat = Vec::with_capacity(sent.len());
    let mut api: Vec<f64> = sent.iter().map(|s| s.2.as_secs_f64() * 1000.0).collect();
    api.sort_by(f64::total_cmp);
    eprintln!("API follow_add latency in this phase: p50 {:.2} ms, p99 {:.2} ms", percentile(&api, 0.5), percentile(&api, 0.99));
    for (key, at, _) in &sent {
        loop {
            if let Some(arr) = r.arrivals.lock().get(key) {
                lat.push(arr.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "webhook for {key:?} never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    r.track.store(false, Ordering::Relaxed);
    lat.sort_by(f64::total_cmp);
    Ok(lat)
}

/// With `database_url`, followd runs on PostgreSQL, in a database of the run's own (dropped after), as
/// `nodes` processes: request *i* of a phase goes to node *i* mod `nodes`, and latency app *i* is
/// written through node *i* mod `nodes`.
pub async fn run(server_bin: &std::path::Path, seconds: u64, backlog: u64, database_url: Option<&str>, nodes: usize) -> anyhow::Result<()> {
    let db = database_url.map(crate::pg::Db::create).transpose()?;
    let top = db.as_ref().map_or(String::new(), |d| format!("database_url = \"{}\"\n", d.url));
    let (open, _) = tokio::sync::watch::channel(true);
    let rcv = Arc::new(Receiver { count: AtomicU64::new(0), open, arrivals: Mutex::new(HashMap::new()), track: false.into() });
    let app = axum::Router::new().route("/{*path}", axum::routing::post(receive)).with_state(rcv.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let raddr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("followd.toml");
    std::fs::write(&cfg, config(&raddr.to_string(), &top))?;
    let mut servers = Vec::new();
    for _ in 0..nodes {
        let mut cmd = tokio::process::Command::new(server_bin);
        cmd.args(["serve", "--config"]).arg(&cfg).env("FOLLOWD_LOG", "warn,followd=info");
        servers.push(spawn(cmd).await?);
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.addr.clone()).collect();
    let http = reqwest::Client::builder().pool_max_idle_per_host(512).build()?;
    let conns = 64;
    eprintln!("followd {addrs:?} on {}, receiver {raddr}", if db.is_some() { "PostgreSQL" } else { "SQLite" });

    // Baseline: the same kind of client posting the same request to the same receiver, no storage.
    let body = followd_protocol::webhook::follow_add_body("u0000001", &["u0000002"], 1_700_000_000_000);
    let query = followd_protocol::webhook::query(
        APP0,
        followd_protocol::CallbackCommand::FollowAdd,
        "127.0.0.1",
        followd_protocol::OptPlatform::RestApi,
        None,
    );
    let url = format!("http://{raddr}/ok/0?{query}");
    let raw_client = reqwest::Client::builder().pool_max_idle_per_host(512).tcp_nodelay(true).build()?;
    let make: Arc<dyn Fn(u64) -> (String, String) + Send + Sync> = Arc::new(move |_| (url.clone(), body.clone()));
    let raw = drive(&raw_client, 256, Duration::from_secs(seconds), u64::MAX, make, |_| 1).await?;
    eprintln!("raw client → receiver: {:.0} req/s", raw.rps());

    // Throughput 1: drain a backlog. The receiver holds every request until the backlog is written.
    let t0 = target(&http, &addrs[0], APP0);
    let users = 20_000;
    import(&t0, &http, conns, 0, users + 1_000).await?;
    rcv.count.store(0, Ordering::Relaxed);
    rcv.open.send_replace(false);
    let urls: Vec<String> = addrs.iter().map(|a| target(&http, a, APP0).url("follow/follow_add")).collect();
    let node_urls = urls.clone();
    let make: Arc<dyn Fn(u64) -> (String, String) + Send + Sync> = Arc::new(move |i| {
        let body = json!({"From_Account": user(i % users), "FollowItem": [{"To_Account": user(users + i / users)}]});
        (node_urls[i as usize % node_urls.len()].clone(), body.to_string())
    });
    let load = drive(&http, conns, Duration::from_secs(3600), backlog, make, ok_items).await?;
    anyhow::ensure!(load.units == backlog, "only {} of {backlog} follows were new", load.units);
    rcv.open.send_replace(true);
    let drain = wait_count(&rcv, backlog, Duration::from_secs(600)).await?;
    let drain_rate = backlog as f64 / drain.as_secs_f64();
    eprintln!("drained {backlog} webhooks in {:.2} s: {drain_rate:.0}/s", drain.as_secs_f64());

    // Throughput 2: deliver while writing at the maximum rate (20 targets a call, one event a call).
    rcv.count.store(0, Ordering::Relaxed);
    let make: Arc<dyn Fn(u64) -> (String, String) + Send + Sync> = Arc::new(move |i| {
        let items: Vec<Value> = (0..20).map(|j| json!({"To_Account": user(users + 100 + (i / users) * 20 + j)})).collect();
        (urls[i as usize % urls.len()].clone(), json!({"From_Account": user(i % users), "FollowItem": items}).to_string())
    });
    let writes: Phase = drive(&http, conns, Duration::from_secs(seconds), u64::MAX, make, |_| 1).await?;
    let delivered_during = rcv.count.load(Ordering::Relaxed);
    let backlog_at_end = pending(&http, &addrs).await?;
    let catch_up = wait_count(&rcv, writes.requests, Duration::from_secs(600)).await?;
    eprintln!(
        "writing {:.0} calls/s ({:.0} edges/s): {:.0} webhooks/s delivered meanwhile, {backlog_at_end} pending at the end, caught up {:.0} ms later",
        writes.rps(),
        writes.rps() * 20.0,
        delivered_during as f64 / writes.secs,
        catch_up.as_secs_f64() * 1000.0
    );

    // Latency at a paced 1,000 events/s over ten apps, all healthy, then with one endpoint in ten hanging.
    let lat_targets: Vec<Arc<Target>> = (1..=LATENCY_APPS).map(|i| target(&http, &addrs[i as usize % nodes], APP0 + i)).collect();
    let lusers = 2_000;
    for t in &lat_targets {
        import(t, &http, 8, 0, lusers + 60_000).await?;
    }
    let all: Vec<usize> = (0..lat_targets.len()).collect();
    let healthy: Vec<usize> = (0..lat_targets.len() - 1).collect();
    // All healthy, then one endpoint in ten hanging, then (once its backlog has been delivered) all
    // healthy again: the baseline is the mean of the two healthy runs, so drift over the run (a
    // bigger database, a warmer machine) does not count against either side.
    let lat_all = paced(&lat_targets, &rcv, 1000, seconds, lusers, &all, 0).await?;
    let hang_app = lat_targets.last().unwrap();
    let r = hang_app.call("callback_config/set_callback", &json!({"Url": format!("http://{raddr}/hang")})).await?;
    anyhow::ensure!(r["ErrorCode"] == 0, "set_callback: {r}");
    settle(nodes).await;
    let lat_hang = paced(&lat_targets, &rcv, 1000, seconds, lusers, &healthy, 1).await?;
    let r = hang_app.call("callback_config/set_callback", &json!({"Url": format!("http://{raddr}/ok/{LATENCY_APPS}")})).await?;
    anyhow::ensure!(r["ErrorCode"] == 0, "set_callback: {r}");
    settle(nodes).await;
    let drained = Instant::now();
    while pending(&http, &addrs).await? > 0 {
        anyhow::ensure!(drained.elapsed() < Duration::from_secs(120), "the hanging endpoint's backlog did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let lat_all2 = paced(&lat_targets, &rcv, 1000, seconds, lusers, &all, 2).await?;
    let (p50, p99) = (percentile(&lat_all, 0.5), percentile(&lat_all, 0.99));
    let (h50, h99) = (percentile(&lat_hang, 0.5), percentile(&lat_hang, 0.99));
    let p99_after = percentile(&lat_all2, 0.99);
    let b99 = (p99 + p99_after) / 2.0;
    let rss = servers.iter().filter_map(|s| s.proc.id().and_then(crate::peak_rss_kib)).max().unwrap_or(0);

    println!();
    println!("| figure | value | baseline (same run) | ratio | target |");
    println!("|---|---|---|---|---|");
    println!("| raw client → receiver, no storage (256 in flight) | {:.0} req/s | | | |", raw.rps());
    println!(
        "| draining a backlog of {backlog} events | {drain_rate:.0} webhooks/s | raw {:.0} req/s | {:.2} of raw | ≥ 20,000/s |",
        raw.rps(),
        drain_rate / raw.rps()
    );
    println!(
        "| delivery while writing 20-target follow_add at full speed | {:.0} webhooks/s during {:.0} calls/s ({:.0} edges/s); {backlog_at_end} pending at the end, caught up {:.0} ms later | | | no growing backlog |",
        delivered_during as f64 / writes.secs,
        writes.rps(),
        writes.rps() * 20.0,
        catch_up.as_secs_f64() * 1000.0
    );
    println!("| commit-to-receipt at 1,000 events/s (request sent → webhook received) | p50 {p50:.2} ms, p99 {:.2} ms | | | p50 ≤ 2 ms, p99 ≤ 20 ms |", p99);
    println!(
        "| same with 1 endpoint in 10 hanging: healthy endpoints | p50 {h50:.2} ms, p99 {h99:.2} ms | all healthy before and after: p99 {p99:.2} and {p99_after:.2} ms | {:.2}x | ≤ 1.2x |",
        h99 / b99
    );
    println!("| server peak RSS (largest of {nodes} node(s)) | {:.1} MiB | | | |", rss as f64 / 1024.0);
    let summary = json!({
        "raw_rps": raw.rps().round(),
        "drain_webhooks_per_s": drain_rate.round(), "drain_vs_raw": ((drain_rate / raw.rps()) * 100.0).round() / 100.0,
        "write_calls_per_s": writes.rps().round(), "delivered_during_writes_per_s": (delivered_during as f64 / writes.secs).round(),
        "pending_after_writes": backlog_at_end, "catch_up_ms": (catch_up.as_secs_f64() * 1000.0).round(),
        "latency_p50_ms": (p50 * 100.0).round() / 100.0, "latency_p99_ms": (p99 * 100.0).round() / 100.0,
        "hanging_healthy_p99_ms": (h99 * 100.0).round() / 100.0, "healthy_after_p99_ms": (p99_after * 100.0).round() / 100.0, "hanging_vs_healthy_p99": ((h99 / b99) * 100.0).round() / 100.0,
        "peak_rss_mib": ((rss as f64 / 1024.0) * 10.0).round() / 10.0, "nodes": nodes,
    });
    println!("{summary}");
    Ok(())
}

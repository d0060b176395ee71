//! `followd-bench live`: commit-to-WebSocket latency with many connected clients, and the server's
//! memory per connected client.

use futures_util::StreamExt as _;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{import, percentile, proc_status_kib, spawn, user, Target, ADMIN, KEY};

const APP: u64 = 1_600_000_000;

/// (recipient, other user) of each FollowersListChanged addition → arrival.
type Arrivals = Arc<Mutex<HashMap<(u64, String), Instant>>>;

pub async fn run(server_bin: &std::path::Path, clients: u64, rate: u64, seconds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("followd.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:0\"\n[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmax_following = 0\n"
        ),
    )?;
    let mut cmd = tokio::process::Command::new(server_bin);
    cmd.args(["serve", "--config"]).arg(&cfg).env("FOLLOWD_LOG", "warn,followd=info");
    let server = spawn(cmd).await?;
    let pid = server.proc.id().unwrap_or(0);
    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build()?;
    let sig = followd_protocol::usersig::generate(KEY, APP, ADMIN, crate::now(), 86400, None);
    let t = Arc::new(Target {
        http: http.clone(),
        base: format!("http://{}", server.addr),
        query: format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}"),
    });
    // Users 0..clients are connected; the followers are other users.
    import(&t, &http, 32, 0, clients + rate * seconds).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = proc_status_kib(pid, "VmRSS:").unwrap_or(0);

    let arrivals: Arrivals = Arc::new(Mutex::new(HashMap::new()));
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients as usize);
    for i in 0..clients {
        let u = user(i);
        let s = followd_protocol::usersig::generate(KEY, APP, &u, crate::now(), 86400, None);
        let url = format!("ws://{}/v1/client/events?sdkappid={APP}&identifier={u}&usersig={s}", server.addr);
        let (ws, _) = tokio_tungstenite::connect_async(url).await?;
        let (arrivals, received) = (arrivals.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let (_sink, mut stream) = ws.split();
            while let Some(Ok(m)) = stream.next().await {
                if let tokio_tungstenite::tungstenite::Message::Text(text) = m {
                    let at = Instant::now();
                    if let Ok(v) = serde_json::from_str::<Value>(&text) {
                        if v["Event"] == "FollowersListChanged" && v["IsAdd"] == true {
                            let mut a = arrivals.lock();
                            for other in v["Users"].as_array().into_iter().flatten() {
                                a.insert((i, other["UserID"].as_str().unwrap_or("").to_owned()), at);
                            }
                        }
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let connect_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    let per_client_kib = (after.saturating_sub(before)) as f64 / clients as f64;
    eprintln!(
        "{clients} clients connected in {connect_secs:.1} s; server RSS {before} KiB → {after} KiB ({per_client_kib:.1} KiB a client)"
    );

    // A paced `rate` follows a second: follower f (not connected) follows connected user i.
    let total = rate * seconds;
    let sent = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let url = t.url("follow/follow_add");
    let begin = Instant::now();
    let mut calls = Vec::new();
    for k in 0..total {
        tokio::time::sleep_until((begin + Duration::from_micros(k * 1_000_000 / rate)).into()).await;
        let (http, url, sent) = (http.clone(), url.clone(), sent.clone());
        let (target, follower) = (k * 7919 % clients, user(clients + k));
        calls.push(tokio::spawn(async move {
            let at = Instant::now();
            let body = json!({"From_Account": follower, "FollowItem": [{"To_Account": user(target)}]}).to_string();
            let r: Value = http.post(url).body(body).send().await?.json().await?;
            anyhow::ensure!(r["ResultItem"][0]["ResultCode"] == 0, "{r}");
            sent.lock().push(((target, follower), at));
            Ok(())
        }));
    }
    for c in calls {
        c.await??;
    }
    let sent = std::mem::take(&mut *sent.lock());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lat = Vec::with_capacity(sent.len());
    for (key, at) in &sent {
        loop {
            if let Some(arr) = arrivals.lock().get(key) {
                lat.push(arr.saturating_duration_since(*at).as_secs_f64() * 1000.0);
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "notification for {key:?} never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    lat.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&lat, 0.5), percentile(&lat, 0.99));
    let rss = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
    println!();
    println!("| figure | value | target |");
    println!("|---|---|---|");
    println!("| commit-to-WebSocket at {rate} follows/s with {clients} clients connected (request sent → notification received) | p50 {p50:.2} ms, p99 {p99:.2} ms | p99 ≤ 50 ms |");
    println!("| server memory per connected client (RSS growth / clients) | {per_client_kib:.1} KiB | ≤ 20 KiB |");
    println!("| connecting {clients} clients | {connect_secs:.1} s | |");
    println!("| server peak RSS | {:.1} MiB | |", rss as f64 / 1024.0);
    println!(
        "{}",
        json!({"clients": clients, "rate": rate, "p50_ms": (p50 * 100.0).round() / 100.0, "p99_ms": (p99 * 100.0).round() / 100.0, "kib_per_client": (per_client_kib * 10.0).round() / 10.0, "notifications": received.load(Ordering::Relaxed), "peak_rss_mib": (rss as f64 / 102.4).round() / 10.0})
    );
    for t in tasks {
        t.abort();
    }
    Ok(())
}

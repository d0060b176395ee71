//! `followd-bench flood`: the server's memory and answers under a flood of concurrent connections.
//!
//! Every connection opens first; once all are open, each sends one request at the same moment (a
//! share of them send their headers and only part of the body, then stall) and reads the answer.
//! The figures: the server's RSS idle, at its peak during the flood and after it, the answers by
//! code, and the latency of a normal request right after the flood against the same figure idle.

use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{import, percentile, proc_status_kib, spawn, user, Target, ADMIN, KEY};

const APP: u64 = 1_700_000_000;
const USERS: u64 = 1000;
/// Sequential requests of each latency figure.
const SAMPLES: usize = 500;

/// What one flooding connection saw.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Outcome {
    /// An HTTP 200 envelope with this `ErrorCode`.
    Code(u64),
    /// Something else came back (the text says what).
    Other(String),
    /// The connection closed without an answer.
    Closed,
    /// The connection could not be opened.
    NoConnection,
}

/// The figures of one flood.
struct Round {
    rss_peak: u64,
    rss_after: u64,
    rss_later: u64,
    threads_peak: u64,
    after_p50: f64,
    after_p99: f64,
    secs: f64,
    counts: BTreeMap<Outcome, u64>,
}

pub async fn run(server_bin: &std::path::Path, connections: usize, slow_percent: usize, rounds: usize) -> anyhow::Result<()> {
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
    let http = reqwest::Client::builder().pool_max_idle_per_host(16).build()?;
    let sig = followd_protocol::usersig::generate(KEY, APP, ADMIN, crate::now(), 86400, None);
    let query = format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json");
    let t = Arc::new(Target { http: http.clone(), base: format!("http://{}", server.addr), query: query.clone() });
    import(&t, &http, 8, 0, USERS).await?;

    let (idle_p50, idle_p99) = check_latency(&t).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle = proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    let threads_idle = proc_status_kib(pid, "Threads:").unwrap_or(0);
    let mut done = Vec::new();
    for _ in 0..rounds.max(1) {
        done.push(round(&t, pid, &server.addr, &query, connections, slow_percent).await?);
    }

    let mib = |kib: u64| kib as f64 / 1024.0;
    let ratio = |kib: u64| kib as f64 / rss_idle.max(1) as f64;
    println!();
    println!("Idle: RSS {:.1} MiB, {threads_idle} threads, follow_check p50 {idle_p50:.2} ms, p99 {idle_p99:.2} ms.", mib(rss_idle));
    println!("{connections} connections a flood, {slow_percent} % of requests stall mid-body.");
    println!();
    println!("| flood | RSS at the peak | 1 s after | 15 s after | threads at the peak | follow_check right after (p99 vs idle) | duration | answers |");
    println!("|---|---|---|---|---|---|---|---|");
    for (i, r) in done.iter().enumerate() {
        let answers: Vec<String> = r.counts.iter().map(|(o, n)| format!("{} {n}", describe(o))).collect();
        println!(
            "| {} | {:.1} MiB ({:.2}x idle) | {:.1} MiB ({:.2}x) | {:.1} MiB ({:.2}x) | {} | p50 {:.2} ms, p99 {:.2} ms ({:.2}x) | {:.1} s | {} |",
            i + 1,
            mib(r.rss_peak),
            ratio(r.rss_peak),
            mib(r.rss_after),
            ratio(r.rss_after),
            mib(r.rss_later),
            ratio(r.rss_later),
            r.threads_peak,
            r.after_p50,
            r.after_p99,
            r.after_p99 / idle_p99,
            r.secs,
            answers.join(", ")
        );
    }
    let rounds: Vec<serde_json::Value> = done
        .iter()
        .map(|r| {
            let by_code: serde_json::Map<String, serde_json::Value> = r.counts.iter().map(|(o, n)| (describe(o), json!(n))).collect();
            json!({"rss_peak_mib": round1(mib(r.rss_peak)), "rss_after_mib": round1(mib(r.rss_after)), "rss_15s_after_mib": round1(mib(r.rss_later)),
                   "threads_peak": r.threads_peak, "check_after_p99_ms": round2(r.after_p99), "flood_secs": round1(r.secs), "answers": by_code})
        })
        .collect();
    println!(
        "{}",
        json!({"connections": connections, "slow_percent": slow_percent, "rss_idle_mib": round1(mib(rss_idle)), "check_idle_p99_ms": round2(idle_p99), "rounds": rounds})
    );
    Ok(())
}

/// One flood, with the server's RSS and threads sampled while it runs and after it.
async fn round(t: &Target, pid: u32, addr: &str, query: &str, connections: usize, slow_percent: usize) -> anyhow::Result<Round> {
    let sampling = Arc::new(AtomicBool::new(true));
    let (peak, threads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let sampler = {
        let (sampling, peak, threads) = (sampling.clone(), peak.clone(), threads.clone());
        tokio::spawn(async move {
            while sampling.load(Ordering::Relaxed) {
                peak.fetch_max(proc_status_kib(pid, "VmRSS:").unwrap_or(0), Ordering::Relaxed);
                threads.fetch_max(proc_status_kib(pid, "Threads:").unwrap_or(0), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let start = Instant::now();
    let outcomes = flood(addr, query, connections, slow_percent).await;
    let secs = start.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let (after_p50, after_p99) = check_latency(t).await?;
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    // Reads run on blocking threads; idle ones exit after tokio's 10 s keep-alive, with their memory.
    tokio::time::sleep_until((ended + Duration::from_secs(15)).into()).await;
    let rss_later = proc_status_kib(pid, "VmRSS:").unwrap_or(0);
    let mut counts: BTreeMap<Outcome, u64> = BTreeMap::new();
    for o in outcomes {
        *counts.entry(o).or_default() += 1;
    }
    Ok(Round {
        rss_peak: peak.load(Ordering::Relaxed),
        rss_after,
        rss_later,
        threads_peak: threads.load(Ordering::Relaxed),
        after_p50,
        after_p99,
        secs,
        counts,
    })
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Code(0) => "OK".into(),
        Outcome::Code(c) => format!("ErrorCode {c}"),
        Outcome::Other(s) => format!("other: {s}"),
        Outcome::Closed => "closed without an answer".into(),
        Outcome::NoConnection => "could not connect".into(),
    }
}

/// p50 and p99 of [`SAMPLES`] sequential `follow_check` calls, in ms.
async fn check_latency(t: &Target) -> anyhow::Result<(f64, f64)> {
    let url = t.url("follow/follow_check");
    let body = json!({"From_Account": user(0), "To_Account": [user(1), user(2)]}).to_string();
    let mut ms = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let s = Instant::now();
        let r: serde_json::Value = t.http.post(&url).body(body.clone()).send().await?.json().await?;
        ms.push(s.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(r["ActionStatus"] == "OK", "follow_check refused: {r}");
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
}

/// Opens `n` connections, then sends one request on each at once: `follow_add` and `follow_check`
/// alternately, and on `slow_percent` % of them only the headers and half the body.
pub(crate) async fn flood(addr: &str, query: &str, n: usize, slow_percent: usize) -> Vec<Outcome> {
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let (addr, mut go, opened) = (addr.to_owned(), go_rx.clone(), opened.clone());
        let slow = slow_percent > 0 && i % (100 / slow_percent.clamp(1, 100)) == 0;
        let request = request(query, i as u64, slow);
        tasks.push(tokio::spawn(async move {
            let stream = tokio::time::timeout(Duration::from_secs(60), tokio::net::TcpStream::connect(&addr)).await;
            opened.fetch_add(1, Ordering::Relaxed);
            let Ok(Ok(mut stream)) = stream else { return Outcome::NoConnection };
            let _ = go.wait_for(|go| *go).await;
            if stream.write_all(&request).await.is_err() {
                return Outcome::Closed;
            }
            let mut answer = Vec::new();
            match tokio::time::timeout(Duration::from_secs(120), stream.read_to_end(&mut answer)).await {
                Ok(_) => parse(&answer),
                Err(_) => Outcome::Other("no answer within 120 s".into()),
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    while opened.load(Ordering::Relaxed) < n as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = go_tx.send(true);
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| Outcome::Other(e.to_string())));
    }
    out
}

/// One request with `Connection: close`; a slow one announces its body but sends only half of it.
pub(crate) fn request(query: &str, i: u64, slow: bool) -> Vec<u8> {
    let (api, body) = if i % 2 == 0 {
        ("follow_add", json!({"From_Account": user(i % USERS), "FollowItem": [{"To_Account": user((i / 2 + 1) % USERS)}]}))
    } else {
        ("follow_check", json!({"From_Account": user(i % USERS), "To_Account": [user((i + 1) % USERS)]}))
    };
    let body = body.to_string();
    let sent = if slow { &body[..body.len() / 2] } else { &body[..] };
    format!("POST /v4/follow/{api}?{query} HTTP/1.1\r\nhost: followd\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{sent}", body.len())
        .into_bytes()
}

/// What an answer read to its end says.
pub(crate) fn parse(answer: &[u8]) -> Outcome {
    if answer.is_empty() {
        return Outcome::Closed;
    }
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return Outcome::Other("a truncated answer".into()) };
    if !head.starts_with("HTTP/1.1 200") {
        return Outcome::Other(head.lines().next().unwrap_or("").to_owned());
    }
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) if v["RequestId"].is_string() => v["ErrorCode"].as_u64().map_or(Outcome::Other("no ErrorCode".into()), Outcome::Code),
        _ => Outcome::Other("a body that is not the envelope".into()),
    }
}

//! `followd-bench delete`: other writers' latency while an account with a million followers is
//! deleted, beside their latency without it in the same run.
//!
//! Other writers (1-target `follow_add`/`follow_delete` between other users, at a fixed rate well
//! below saturation) run through a baseline phase, then `account_delete` removes the big account and
//! the same writers run until the server's `followd_account_deletions_in_progress` falls back to 0,
//! and, with webhooks, on until the owed webhooks are delivered. The load is open-loop: each request
//! is sent at its scheduled time on whichever pooled connection is free, so a slow answer never
//! delays the requests after it (a closed loop would hide a stall, and a paced sequential writer that
//! falls behind would report its own queue), and its latency is counted from that time.

use anyhow::bail;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{import, load_star, percentile, spawn, user, Target, ADMIN, KEY};

const APP: u64 = 1_700_000_000;
/// Users of the other writers: writer k writes from `user(k)` to `user(TARGETS0..TARGETS0 + TARGETS)`.
const TARGETS0: u64 = 1_000;
const TARGETS: u64 = 1_000;
/// The deleted account's followers are numbered from here.
const FAN0: u64 = 10_000;
/// The server's count of delivered webhooks.
const DELIVERED: &str = "followd_webhook_attempts_total{outcome=\"ok\"}";
/// Samples of the first second are left out (connections warming up).
const WARM_UP: f64 = 1.0;

/// What `followd-bench delete` is asked to do.
pub struct Options {
    /// Followers of the deleted account.
    pub fans: u64,
    /// Users the other writers write from.
    pub writers: usize,
    /// Their requests a second, together.
    pub rate: u64,
    /// Seconds before the deletion.
    pub baseline: u64,
    /// The server's `deletion_chunk_edges`.
    pub chunk: Option<usize>,
    /// Whether the app subscribes to the delete webhook (sent to a receiver in this process).
    pub webhook: bool,
    /// Connections used to load the graph.
    pub connections: usize,
}

/// (start, since the writers began, s; latency from the scheduled start, ms) of every request.
type Samples = Arc<parking_lot::Mutex<Vec<(f64, f64)>>>;

pub async fn run(server_bin: &std::path::Path, o: Options) -> anyhow::Result<()> {
    // The webhooks go to a separate process (the echo server answers each with JSON, which counts as
    // delivered), so receiving them does not slow this process's writers.
    let mut echo_cmd = tokio::process::Command::new(std::env::current_exe()?);
    echo_cmd.arg("echo");
    let receiver = spawn(echo_cmd).await?;
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("followd.toml");
    let mut text = String::from("listen = \"127.0.0.1:0\"\n");
    if let Some(c) = o.chunk {
        text.push_str(&format!("deletion_chunk_edges = {c}\n"));
    }
    text.push_str(&format!("[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmax_following = 0\n"));
    if o.webhook {
        text.push_str(&format!(
            "[apps.webhook]\nurl = \"http://{}/echo\"\nallow_private_destinations = true\ncommands = [\"Follow.CallbackAfterFollowDelete\"]\n",
            receiver.addr
        ));
    }
    std::fs::write(&cfg, text)?;
    let mut cmd = tokio::process::Command::new(server_bin);
    cmd.args(["serve", "--config"]).arg(&cfg).env("FOLLOWD_LOG", "warn,followd=info");
    let server = spawn(cmd).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(o.connections.max(o.writers) * 2).build()?;
    let sig = followd_protocol::usersig::generate(KEY, APP, ADMIN, crate::now(), 86400, None);
    let t = Arc::new(Target {
        http: http.clone(),
        base: format!("http://{}", server.addr),
        query: format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"),
    });
    eprintln!("followd {} (pid {:?}); {} followers, {} writers at {} req/s", server.addr, server.proc.id(), o.fans, o.writers, o.rate);
    import(&t, &http, o.connections, 0, TARGETS0 + TARGETS).await?;
    let star = load_star(&t, &http, o.connections, FAN0, o.fans).await?;
    // Let the load's webhooks (none are owed for follow_add) and the checkpointer settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let samples = Samples::default();
    let writers = tokio::spawn(writers(t.clone(), o.writers as u64, o.rate, start, stop.clone(), samples.clone()));
    tokio::time::sleep(Duration::from_secs(o.baseline)).await;

    let removed_before = metric(&http, &server.addr, "followd_account_deletion_edges_removed_total").await?;
    let delivered_before = metric(&http, &server.addr, DELIVERED).await?;
    let deleted_at = start.elapsed().as_secs_f64();
    let call = Instant::now();
    let r = t.call("im_open_login_svc/account_delete", &json!({"DeleteItem": [{"UserID": star}]})).await?;
    let api_ms = call.elapsed().as_secs_f64() * 1000.0;
    if r["ResultItem"][0]["ResultCode"] != 0 {
        bail!("account_delete refused: {r}");
    }
    let limit = Duration::from_secs(600);
    while metric(&http, &server.addr, "followd_account_deletions_in_progress").await? > 0.0 {
        if call.elapsed() > limit {
            bail!("the deletion did not finish within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let job_secs = call.elapsed().as_secs_f64();
    let finished_at = start.elapsed().as_secs_f64();
    let removed = metric(&http, &server.addr, "followd_account_deletion_edges_removed_total").await? - removed_before;
    let delivered = metric(&http, &server.addr, DELIVERED).await? - delivered_before;
    // Then until the owed webhooks are delivered: their delivery also competes for the machine.
    while metric(&http, &server.addr, "followd_webhook_pending_events").await? > 0.0 {
        if call.elapsed() > limit {
            bail!("the webhooks were not delivered within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let drained_at = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    writers.await??;
    let samples = std::mem::take(&mut *samples.lock());
    let phase = |from: f64, to: f64| -> Vec<f64> {
        let mut v: Vec<f64> = samples.iter().filter(|(s, _)| (from..to).contains(s)).map(|&(_, ms)| ms).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (before, during, drain) = (phase(WARM_UP, deleted_at), phase(deleted_at, finished_at), phase(finished_at, drained_at));
    if before.is_empty() || during.is_empty() {
        bail!("no samples in a phase ({} before, {} during)", before.len(), during.len());
    }
    let stat = |v: &[f64]| (percentile(v, 0.5), percentile(v, 0.99), v[v.len() - 1]);
    let ((b50, b99, bmax), (d50, d99, dmax)) = (stat(&before), stat(&during));

    println!();
    println!("| figure | value | baseline (same run) | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| other writers while {} followers are deleted ({} samples) | p50 {d50:.2} ms, p99 {d99:.2} ms, max {dmax:.1} ms | before ({} samples): p50 {b50:.2} ms, p99 {b99:.2} ms, max {bmax:.1} ms | p99 {:.2}x |",
        o.fans,
        during.len(),
        before.len(),
        d99 / b99
    );
    if o.webhook && !drain.is_empty() {
        let (p50, p99, max) = stat(&drain);
        println!(
            "| other writers after the job, until its webhooks are delivered ({:.1} s, {} samples) | p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.1} ms | | p99 {:.2}x |",
            drained_at - finished_at,
            drain.len(),
            p99 / b99
        );
    }
    println!("| the deletion job | {job_secs:.1} s, {:.0} edges/s ({removed} edges) | | |", removed / job_secs);
    println!("| account_delete API call | {api_ms:.1} ms | | |");
    println!("| webhooks delivered while the job ran (the writers' own included) | {delivered} | | |");
    let summary = json!({
        "fans": o.fans, "writers": o.writers, "rate": o.rate, "chunk": o.chunk, "webhook": o.webhook,
        "before_p50_ms": round2(b50), "before_p99_ms": round2(b99), "before_max_ms": round2(bmax),
        "during_p50_ms": round2(d50), "during_p99_ms": round2(d99), "during_max_ms": round2(dmax),
        "p99_ratio": round2(d99 / b99), "job_secs": round2(job_secs), "edges_per_s": (removed / job_secs).round(),
        "edges_removed": removed, "account_delete_ms": round2(api_ms), "webhooks_during_job": delivered,
    });
    println!("{summary}");
    drop((server, receiver));
    Ok(())
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Sends `rate` requests a second until `stop`, each at its scheduled time in its own task:
/// alternately a follow and an unfollow of the same pair, so nearly every request changes an edge.
async fn writers(t: Arc<Target>, users: u64, rate: u64, start: Instant, stop: Arc<AtomicBool>, samples: Samples) -> anyhow::Result<()> {
    let (add, del) = (Arc::new(t.url("follow/follow_add")), Arc::new(t.url("follow/follow_delete")));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0u64.. {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let at = start + Duration::from_micros(i * 1_000_000 / rate);
        tokio::time::sleep_until(at.into()).await;
        let pair = i / 2;
        let (from, to) = (user(pair % users), user(TARGETS0 + (pair / users) % TARGETS));
        let (url, body) = if i % 2 == 0 {
            (add.clone(), json!({"From_Account": from, "FollowItem": [{"To_Account": to}]}))
        } else {
            (del.clone(), json!({"From_Account": from, "To_Account": [to]}))
        };
        let (http, samples) = (t.http.clone(), samples.clone());
        tasks.spawn(async move {
            let r: Value = http.post(url.as_str()).body(body.to_string()).send().await?.json().await?;
            samples.lock().push(((at - start).as_secs_f64(), at.elapsed().as_secs_f64() * 1000.0));
            if r["ActionStatus"] != "OK" || r["ResultItem"][0]["ResultCode"] != 0 {
                bail!("a writer's request was refused: {r}");
            }
            Ok::<_, anyhow::Error>(())
        });
        while let Some(done) = tasks.try_join_next() {
            done??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// A metric's value from the server's `/metrics`; a labelled series not yet created counts 0.
async fn metric(http: &reqwest::Client, addr: &str, name: &str) -> anyhow::Result<f64> {
    let text = http.get(format!("http://{addr}/metrics")).send().await?.text().await?;
    match text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')) {
        Some(v) => Ok(v.trim().parse()?),
        None if name.contains('{') => Ok(0.0),
        None => bail!("the server exports no metric {name}"),
    }
}

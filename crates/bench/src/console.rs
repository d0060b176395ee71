//! `followd-bench console`: the web console's server time per page with a large log and a large
//! account: 1,000,000 events (one `Follow.CallbackAfterFollowAdd` per follow) and a user with
//! 1,000,000 followers, all loaded through the REST API.
//!
//! Each page is fetched `samples` times in a row over loopback by a signed-in admin; the figure is
//! the time from sending the request to the last byte of the page. `GET /healthz` (no work at all)
//! is timed the same way in the same run as the baseline: the difference is the console's work.

use anyhow::{bail, Context as _};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{load_star, percentile, spawn, user, Target, ADMIN, KEY};

const APP: u64 = 1_800_000_000;

pub async fn run(server_bin: &std::path::Path, fans: u64, samples: usize, conns: usize) -> anyhow::Result<()> {
    let mut echo_cmd = tokio::process::Command::new(std::env::current_exe()?);
    echo_cmd.arg("echo");
    let receiver = spawn(echo_cmd).await?;
    let dir = tempfile::tempdir()?;
    let cfg = dir.path().join("followd.toml");
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmax_following = 0\n\
         [apps.webhook]\nurl = \"http://{}/echo\"\nallow_private_destinations = true\n",
        receiver.addr
    );
    std::fs::write(&cfg, text)?;
    let mut cmd = tokio::process::Command::new(server_bin);
    cmd.args(["serve", "--config"]).arg(&cfg).env("FOLLOWD_LOG", "warn,followd=info");
    let server = spawn(cmd).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(conns * 2).redirect(reqwest::redirect::Policy::none()).build()?;
    let sig = followd_protocol::usersig::generate(KEY, APP, ADMIN, crate::now(), 86400, None);
    let base = format!("http://{}", server.addr);
    let t = Arc::new(Target {
        http: http.clone(),
        base: base.clone(),
        query: format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"),
    });
    let star = load_star(&t, &http, conns, 0, fans).await?;
    // Let the deliveries finish, so the figures are not measured under the delivery load.
    let drain = Instant::now();
    loop {
        let m = http.get(format!("{base}/metrics")).send().await?.text().await?;
        let pending = m
            .lines()
            .find(|l| l.starts_with("followd_webhook_pending_events "))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok());
        if pending == Some(0.0) || drain.elapsed() > Duration::from_secs(600) {
            eprintln!("deliveries drained in {:.1} s (pending now {pending:?})", drain.elapsed().as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let events = t.call("callback_config/list_events", &json!({"Limit": 1})).await?;
    let newest = events["Events"][0].clone();
    let wid = newest["WebhookId"].as_str().context("no event in the log")?.to_owned();
    let event_count = newest["EventId"].as_i64().unwrap_or(0);

    let login = format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}");
    let r =
        http.post(format!("{base}/console/login")).header("content-type", "application/x-www-form-urlencoded").body(login).send().await?;
    let cookie = r.headers().get("set-cookie").context("no session cookie")?.to_str()?.split(';').next().unwrap_or("").to_owned();
    // The followers list's second page, by the cursor the first one links to.
    let first = get(&http, &format!("{base}/console/apps/{APP}/users/{star}"), &cookie).await?;
    let next = first.split("id=\"next-page\" href=\"").nth(1).and_then(|s| s.split('"').next()).map(|s| s.replace("&amp;", "&"));
    let mid = user(fans / 2);
    let pages: Vec<(&str, String)> = vec![
        ("overview", format!("/console/apps/{APP}")),
        ("events (newest 50)", format!("/console/apps/{APP}/events")),
        ("events from one user", format!("/console/apps/{APP}/events?from={mid}")),
        ("events, dead only", format!("/console/apps/{APP}/events?state=dead")),
        ("one event + attempts", format!("/console/apps/{APP}/events/{wid}")),
        ("webhook settings", format!("/console/apps/{APP}/webhook")),
        ("user with 1M followers", format!("/console/apps/{APP}/users/{star}")),
        ("its followers, page 2", next.unwrap_or_default()),
        ("a follower's page", format!("/console/apps/{APP}/users/{mid}")),
    ];
    let baseline = time(&http, &format!("{base}/healthz"), "", samples).await?;
    println!("console pages, {event_count} events in the log, {fans} followers of {star}; {samples} GETs each, sequential, loopback");
    println!("baseline GET /healthz: p50 {:.2} ms, p99 {:.2} ms", baseline.0, baseline.1);
    println!("{:<26} {:>9} {:>9} {:>14}", "page", "p50 ms", "p99 ms", "p50 / baseline");
    let mut worst: f64 = 0.0;
    for (name, path) in pages {
        if path.is_empty() {
            bail!("{name}: no link to follow");
        }
        let (p50, p99) = time(&http, &format!("{base}{path}"), &cookie, samples).await?;
        worst = worst.max(p99);
        println!("{name:<26} {p50:>9.2} {p99:>9.2} {:>13.1}x", p50 / baseline.0);
    }
    println!("slowest p99: {worst:.2} ms (target: under 100 ms a page)");
    drop(server);
    drop(receiver);
    Ok(())
}

async fn get(http: &reqwest::Client, url: &str, cookie: &str) -> anyhow::Result<String> {
    let r = http.get(url).header("cookie", cookie).send().await?;
    if r.status() != 200 {
        bail!("GET {url}: HTTP {}", r.status());
    }
    Ok(r.text().await?)
}

async fn time(http: &reqwest::Client, url: &str, cookie: &str, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut ms = Vec::with_capacity(n);
    get(http, url, cookie).await?;
    for _ in 0..n {
        let s = Instant::now();
        get(http, url, cookie).await?;
        ms.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    Ok((percentile(&ms, 0.5), percentile(&ms, 0.99)))
}

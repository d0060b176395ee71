//! `followd migrate`: pulls a graph out of a Tencent Cloud Chat app (or any server speaking its
//! `/v4` REST API, another followd included) and imports it through the bulk API.
//!
//! For each UserID of the accounts file it reads the user's following list (`follow_get`,
//! `FollowType` 2) page by page, at most `--rate` calls a second over every request in flight,
//! retrying `60007` and time-outs with backoff. The list comes newest first with `FollowTime` in
//! seconds; follows of one user within one second get keys a tick apart in the list's order, so the
//! user's following list keeps the source's order. (The order of ties across different users, which
//! the source API does not show, may differ.) Several users are fetched at once, and their results
//! are imported in file order in batches; after each batch a checkpoint records the line reached.

use anyhow::Context as _;
use futures_util::StreamExt as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::{BufRead, BufReader};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

use super::client::{retriable, Refused, Target};
use super::progress::Progress;
use super::{ImportReply, ImportRequest, WireAccount, WireFollow};

/// Tencent's own limit on REST calls, the default `--rate`.
pub const DEFAULT_RATE: u32 = 200;
/// Users whose lists are fetched at once.
const IN_FLIGHT: usize = 16;
/// Follows gathered before they are imported.
const FLUSH_AT: usize = 10_000;

/// What `followd migrate` does.
#[derive(Debug, Clone)]
pub struct MigrateArgs {
    /// The source's base URL (`https://console.tim.qq.com` or `http://host:port`).
    pub from: String,
    /// The source app.
    pub from_sdkappid: u64,
    /// Its key.
    pub from_key: String,
    /// Its admin.
    pub from_admin: String,
    /// The accounts file: `UserID[,Nick,FaceUrl]` a line.
    pub accounts: PathBuf,
    /// Calls a second to the source.
    pub rate: u32,
    /// Emit the webhooks the changes owe on this server.
    pub webhooks: bool,
    /// The checkpoint file (default: the accounts file's name + `.followd-migrate`).
    pub checkpoint: Option<PathBuf>,
    /// Stop after this many accounts (the checkpoint lets a later run go on).
    pub stop_after: Option<u64>,
    /// Print no progress.
    pub quiet: bool,
}

/// An account that could not be migrated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The line of the accounts file.
    pub line: u64,
    /// The UserID (or the line's text).
    pub user: String,
    /// Why.
    pub reason: String,
}

/// What a migration did, over every run that contributed to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrateReport {
    /// Lines of the accounts file done.
    pub lines: u64,
    /// Accounts read from the source (whose lists were read).
    pub accounts: u64,
    /// Accounts created here (listed ones and targets).
    pub accounts_created: u64,
    /// Follows read from the source.
    pub follows: u64,
    /// Follows added here.
    pub follows_added: u64,
    /// Follows that were here already.
    pub follows_existing: u64,
    /// Follows refused here (over a limit).
    pub rejected: u64,
    /// Source calls made.
    pub calls: u64,
    /// Accounts that failed, with the reason.
    pub failures: Vec<Failure>,
    /// Stopped before the end (Ctrl-C or `stop_after`); run again to go on.
    pub interrupted: bool,
    /// Every line done.
    pub complete: bool,
}

impl MigrateReport {
    /// The summary printed at the end.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "accounts read: {}\naccounts created: {}\nfollows read: {}\nfollows added: {}\nfollows already there: {}\nfollows refused: {}\nsource calls: {}\nfailures: {}\n",
            self.accounts,
            self.accounts_created,
            self.follows,
            self.follows_added,
            self.follows_existing,
            self.rejected,
            self.calls,
            self.failures.len()
        );
        for f in &self.failures {
            s += &format!("  line {} {}: {}\n", f.line, f.user, f.reason);
        }
        if self.interrupted {
            s += &format!("stopped after line {}; run the same command again to go on\n", self.lines);
        }
        s
    }
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    accounts_len: u64,
    report: MigrateReport,
}

/// One followed user as the source lists it.
struct Listed {
    to: String,
    secs: i64,
    nick: Option<String>,
    face_url: Option<String>,
}

/// A user's whole following list, newest first, and the calls it took.
async fn fetch(source: &Target, limiter: &DefaultDirectRateLimiter, user: &str) -> (u64, Result<Vec<Listed>, String>) {
    let mut out = Vec::new();
    let mut cursor = String::new();
    let mut calls = 0;
    loop {
        let body = json!({"From_Account": user, "FollowType": 2, "StartCursor": cursor, "WantNum": 1000});
        let mut pause = Duration::from_millis(200);
        let mut tries = 0;
        let page: serde_json::Value = loop {
            limiter.until_ready().await;
            calls += 1;
            match source.call::<_, serde_json::Value>("/v4/follow/follow_get", &body, Duration::from_secs(10)).await {
                Ok(v) => break v,
                Err(e) if tries < 8 && retriable(&e) => {
                    tries += 1;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(e) => {
                    let reason = match e.downcast_ref::<Refused>() {
                        Some(r) => format!("the source answered {} {}", r.code, r.info),
                        None => format!("{e:#}"),
                    };
                    return (calls, Err(reason));
                }
            }
        };
        let items = page["FollowItem"].as_array().map(Vec::as_slice).unwrap_or_default();
        for i in items {
            let (Some(to), Some(secs)) = (i["To_Account"].as_str(), i["FollowTime"].as_i64()) else {
                return (calls, Err("the source's answer has an entry without To_Account or FollowTime".into()));
            };
            let tag =
                |t: &str| i["ProfileItem"].as_array()?.iter().find(|p| p["Tag"] == t).and_then(|p| p["Value"].as_str()).map(str::to_owned);
            out.push(Listed { to: to.to_owned(), secs, nick: tag("Tag_Profile_IM_Nick"), face_url: tag("Tag_Profile_IM_Image") });
        }
        cursor = page["NextCursor"].as_str().unwrap_or("").to_owned();
        if cursor.is_empty() {
            return (calls, Ok(out));
        }
        if items.is_empty() {
            return (calls, Err("the source returned an empty page with a next cursor".into()));
        }
    }
}

/// The follow times of a list (newest first, seconds) as µs: within one second, a tick (4 µs) apart
/// in the list's order, the last (oldest) on the second itself.
fn times(list: &[Listed]) -> Vec<i64> {
    let tick = followd_graph::TICK_MICROS;
    let mut out = vec![0; list.len()];
    let mut i = list.len();
    let mut run = 0i64;
    while i > 0 {
        i -= 1;
        run = if i + 1 < list.len() && list[i].secs == list[i + 1].secs { run + 1 } else { 0 };
        out[i] = list[i].secs * 1_000_000 + (run * tick).min(999_999 - 999_999 % tick);
    }
    out
}

/// `followd migrate`.
pub async fn migrate(target: &Target, args: &MigrateArgs, stop: watch::Receiver<bool>) -> anyhow::Result<MigrateReport> {
    let file = std::fs::File::open(&args.accounts).with_context(|| format!("opening {}", args.accounts.display()))?;
    let accounts_len = file.metadata()?.len();
    let cp_path = args.checkpoint.clone().unwrap_or_else(|| {
        let mut s = args.accounts.as_os_str().to_owned();
        s.push(".followd-migrate");
        PathBuf::from(s)
    });
    let mut report = match std::fs::read(&cp_path).ok().and_then(|b| serde_json::from_slice::<Checkpoint>(&b).ok()) {
        Some(c) if c.accounts_len == accounts_len => c.report,
        _ => MigrateReport::default(),
    };
    let lines: Vec<(u64, String)> = BufReader::new(file)
        .lines()
        .enumerate()
        .skip(report.lines as usize)
        .map(|(i, l)| l.map(|l| (i as u64 + 1, l)))
        .collect::<Result<_, _>>()
        .context("reading the accounts file")?;
    let total = report.lines + lines.len() as u64;
    let source = Target::new(args.from.clone(), args.from_sdkappid, args.from_key.clone(), args.from_admin.clone());
    let limiter = Arc::new(RateLimiter::direct(Quota::per_second(NonZeroU32::new(args.rate.max(1)).expect("at least 1"))));
    let mut progress = Progress::new("migrate", "accounts", Some(total), args.quiet);
    let take = args.stop_after.map_or(usize::MAX, |n| n as usize);
    let stop_pulling = stop.clone();
    let mut fetched = futures_util::stream::iter(lines.into_iter().take(take))
        .take_while(move |_| std::future::ready(!*stop_pulling.borrow()))
        .map(|(line, text)| {
            let (source, limiter) = (source.clone(), limiter.clone());
            async move {
                let mut fields = text.split(',').map(str::trim);
                let user = fields.next().unwrap_or("").to_owned();
                let (nick, face) = (fields.next().filter(|s| !s.is_empty()), fields.next().filter(|s| !s.is_empty()));
                let account = WireAccount { user_id: user.clone(), nick: nick.map(str::to_owned), face_url: face.map(str::to_owned) };
                if user.is_empty() {
                    return (line, account, 0, Ok(None));
                }
                if let Err(e) = followd_protocol::UserId::parse(&user) {
                    return (line, account, 0, Err(format!("not a valid UserID: {e}")));
                }
                let (calls, list) = fetch(&source, &limiter, &user).await;
                (line, account, calls, list.map(Some))
            }
        })
        .buffered(IN_FLIGHT);
    let mut pending = ImportRequest { webhooks: args.webhooks, ..ImportRequest::default() };
    let mut pending_line = report.lines;
    let mut done = 0u64;
    while let Some((line, account, calls, result)) = fetched.next().await {
        report.calls += calls;
        done += 1;
        match result {
            Ok(None) => {}
            Ok(Some(list)) => {
                report.accounts += 1;
                report.follows += list.len() as u64;
                for (l, us) in list.iter().zip(times(&list)) {
                    pending.accounts.push(WireAccount { user_id: l.to.clone(), nick: l.nick.clone(), face_url: l.face_url.clone() });
                    pending.follows.push(WireFollow { from: account.user_id.clone(), to: l.to.clone(), time_us: Some(us) });
                }
                pending.accounts.push(account);
            }
            Err(reason) => report.failures.push(Failure { line, user: account.user_id, reason }),
        }
        pending_line = line;
        progress.advance(1, report.lines + done);
        if pending.follows.len() + pending.accounts.len() >= FLUSH_AT {
            flush(target, &mut pending, &mut report, pending_line, &cp_path, accounts_len).await?;
        }
    }
    flush(target, &mut pending, &mut report, pending_line, &cp_path, accounts_len).await?;
    progress.finish();
    if report.lines < total {
        report.interrupted = true;
    } else {
        report.complete = true;
        let _ = std::fs::remove_file(&cp_path);
    }
    let _ = stop;
    Ok(report)
}

/// Imports what was gathered (in chunks the bulk API takes) and checkpoints `line`.
async fn flush(
    target: &Target,
    pending: &mut ImportRequest,
    report: &mut MigrateReport,
    line: u64,
    cp_path: &std::path::Path,
    accounts_len: u64,
) -> anyhow::Result<()> {
    let req = std::mem::replace(pending, ImportRequest { webhooks: pending.webhooks, ..ImportRequest::default() });
    // Accounts first (so their profiles are set), then follows, each chunk within the batch limit.
    let max = super::MAX_BATCH;
    let chunks =
        req.accounts.chunks(max).map(|a| ImportRequest { accounts: a.to_vec(), webhooks: req.webhooks, ..ImportRequest::default() }).chain(
            req.follows.chunks(max).map(|f| ImportRequest { follows: f.to_vec(), webhooks: req.webhooks, ..ImportRequest::default() }),
        );
    for chunk in chunks {
        let r: ImportReply = target.call_retrying("/bulk/v1/import", &chunk).await.context("importing into this server")?;
        report.accounts_created += r.accounts_created;
        report.follows_added += r.follows_added;
        report.follows_existing += r.follows_existing;
        report.rejected += r.rejected.len() as u64;
    }
    report.lines = line.max(report.lines);
    let cp = Checkpoint { accounts_len, report: report.clone() };
    let tmp = cp_path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&cp)?)?;
    std::fs::rename(&tmp, cp_path)?;
    Ok(())
}

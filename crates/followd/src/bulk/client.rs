//! `followd export` and `followd import`: clients of the bulk API of a running server.
//!
//! Import reads its file in batches and sends one at a time while it parses the next, so the
//! server applies them in file order (the limits and the webhooks depend on it). After each batch
//! it writes a checkpoint (the byte offset and line number reached, the totals so far) next to the
//! file; a run that finds one resumes there, and a finished run removes it. Every batch is
//! idempotent, so a batch that was applied but not checkpointed (a crash between the two) changes
//! nothing when it is sent again.

use anyhow::{bail, Context as _};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

use super::format::{self, Line};
use super::progress::Progress;
use super::{ImportReply, ImportRequest, SweepReply, SweepRequest};
use crate::config::Config;

/// An app of a running followd, and the admin credentials to call its APIs with.
#[derive(Clone)]
pub struct Target {
    base: String,
    sdkappid: u64,
    key: String,
    admin: String,
    http: reqwest::Client,
}

/// A refusal from the server (its envelope's code and message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server refused: {code} {info}")]
pub struct Refused {
    /// `ErrorCode`.
    pub code: u32,
    /// `ErrorInfo`.
    pub info: String,
}

impl Target {
    /// An app at `base` (`http://host:port`), called as `admin` with UserSigs made with `key`.
    pub fn new(base: impl Into<String>, sdkappid: u64, key: impl Into<String>, admin: impl Into<String>) -> Target {
        let http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build().expect("an HTTP client");
        Target { base: base.into().trim_end_matches('/').to_owned(), sdkappid, key: key.into(), admin: admin.into(), http }
    }

    /// The app `sdkappid` (default: the first) of the config file, at its `listen` address (or `url`).
    pub fn from_config(config: &Config, sdkappid: Option<u64>, url: Option<String>) -> anyhow::Result<Target> {
        let app = match sdkappid {
            Some(id) => {
                config.apps.iter().find(|a| a.sdkappid == id).with_context(|| format!("no app with sdkappid {id} in the config"))?
            }
            None => config.apps.first().context("the config has no app")?,
        };
        let admin = app.admins.first().context("the app has no admin")?;
        let base = match url {
            Some(u) => u,
            None => {
                let mut addr = config.listen_addr()?;
                if addr.ip().is_unspecified() {
                    addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                format!("http://{addr}")
            }
        };
        Ok(Target::new(base, app.sdkappid, app.secret_key.clone(), admin.clone()))
    }

    /// The app's SDKAppID.
    pub fn sdkappid(&self) -> u64 {
        self.sdkappid
    }

    /// The signed URL of `path` (`/bulk/v1/import`, `/v4/follow/follow_get`).
    pub fn url(&self, path: &str) -> String {
        let sig = followd_protocol::usersig::generate(&self.key, self.sdkappid, &self.admin, crate::now_secs(), 86_400, None);
        let mut q = form_urlencoded::Serializer::new(String::new());
        q.append_pair("sdkappid", &self.sdkappid.to_string())
            .append_pair("identifier", &self.admin)
            .append_pair("usersig", &sig)
            .append_pair("random", &rand::random::<u32>().to_string())
            .append_pair("contenttype", "json");
        format!("{}{path}?{}", self.base, q.finish())
    }

    /// Posts `req` to `path` once; the server's answer, or its refusal as [`Refused`] in the error.
    pub async fn call<Req: Serialize, Rep: DeserializeOwned>(&self, path: &str, req: &Req, timeout: Duration) -> anyhow::Result<Rep> {
        let body = serde_json::to_vec(req)?;
        let r = self
            .http
            .post(self.url(path))
            .body(body)
            .timeout(timeout)
            .send()
            .await
            .with_context(|| format!("calling {}{path}", self.base))?;
        let status = r.status();
        let v: serde_json::Value = r.json().await.with_context(|| format!("{path}: HTTP {status}, not a JSON answer"))?;
        let code = v["ErrorCode"].as_u64().unwrap_or(u64::MAX) as u32;
        if code != 0 {
            return Err(Refused { code, info: v["ErrorInfo"].as_str().unwrap_or("").to_owned() }.into());
        }
        serde_json::from_value(v).with_context(|| format!("{path}: an answer of an unexpected shape"))
    }

    /// [`Target::call`], retried with backoff (up to about a minute) when the server is busy
    /// (`60007`), shutting down, or cannot be reached: for idempotent calls only.
    pub async fn call_retrying<Req: Serialize, Rep: DeserializeOwned>(&self, path: &str, req: &Req) -> anyhow::Result<Rep> {
        let mut pause = Duration::from_millis(100);
        let mut tries = 0;
        loop {
            match self.call(path, req, Duration::from_secs(300)).await {
                Ok(r) => return Ok(r),
                Err(e) if tries < 12 && retriable(&e) => {
                    tries += 1;
                    tracing::debug!(error = format!("{e:#}"), "retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a failed call may succeed if tried again: the server was busy, shutting down or unreachable.
pub fn retriable(e: &anyhow::Error) -> bool {
    if let Some(r) = e.downcast_ref::<Refused>() {
        return matches!(r.code, 60007 | 30007 | 70169);
    }
    e.chain().any(|c| c.downcast_ref::<reqwest::Error>().is_some_and(|r| r.is_timeout() || r.is_connect() || r.is_request()))
}

/// Resolves once `stop` says so (never, if its sender is gone without saying it).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Account lines.
    pub accounts: u64,
    /// Follow lines.
    pub follows: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// `followd export`: streams the app's graph to `out` (a file, written under a temporary name and
/// renamed when complete) or stdout.
pub async fn export(target: &Target, out: Option<&Path>, quiet: bool, mut stop: watch::Receiver<bool>) -> anyhow::Result<ExportReport> {
    let part = out.map(|p| {
        let mut s = p.as_os_str().to_owned();
        s.push(".part");
        PathBuf::from(s)
    });
    let mut sink: Box<dyn Write> = match &part {
        Some(p) => Box::new(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
    };
    let result = async {
        let mut r = target.http.post(target.url("/bulk/v1/export")).body("{}").send().await.context("calling the export API")?;
        if r.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json")) {
            let v: serde_json::Value = r.json().await?;
            bail!("the server refused the export: {} {}", v["ErrorCode"], v["ErrorInfo"].as_str().unwrap_or(""));
        }
        let mut progress = Progress::new("export", "lines", None, quiet);
        let (mut bytes, mut lines) = (0u64, 0u64);
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::select! {
                c = r.chunk() => c.context("reading the export")?,
                () = stopped(&mut stop) => bail!("interrupted"),
            };
            let Some(chunk) = chunk else { break };
            sink.write_all(&chunk)?;
            bytes += chunk.len() as u64;
            let n = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
            lines += n;
            // The end of the stream, for the check of its last line below.
            tail.extend_from_slice(&chunk[chunk.len().saturating_sub(8192)..]);
            if tail.len() > 16 * 1024 {
                tail.drain(..tail.len() - 8192);
            }
            progress.advance(n, bytes);
        }
        progress.finish();
        sink.flush()?;
        let last = String::from_utf8_lossy(&tail);
        let last = last.trim_end().rsplit('\n').next().unwrap_or("");
        match format::parse(last, i64::MAX / 2) {
            Ok(Line::End { accounts, follows }) if accounts + follows + 2 == lines => Ok(ExportReport { accounts, follows, bytes }),
            _ => bail!("the export ended early (no complete last line): {}", last.chars().take(200).collect::<String>()),
        }
    }
    .await;
    drop(sink);
    match (&result, &part, out) {
        (Ok(_), Some(p), Some(o)) => std::fs::rename(p, o).with_context(|| format!("renaming {} to {}", p.display(), o.display()))?,
        (Err(_), Some(p), _) => {
            let _ = std::fs::remove_file(p);
        }
        _ => {}
    }
    result
}

/// How `followd import` treats what the file does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Adds the file's accounts and follows; keeps everything else.
    Merge,
    /// Also removes the app's follows that the file does not name.
    Replace,
}

/// What `followd import` does.
#[derive(Debug, Clone)]
pub struct ImportArgs {
    /// The file (NDJSON or CSV).
    pub file: PathBuf,
    /// Merge or replace.
    pub mode: Mode,
    /// Emit the webhooks the changes owe.
    pub webhooks: bool,
    /// Follows (and accounts) per request.
    pub batch: usize,
    /// The checkpoint file (default: the file's name + `.followd-import`).
    pub checkpoint: Option<PathBuf>,
    /// Print no progress.
    pub quiet: bool,
}

impl ImportArgs {
    /// Merge, no webhooks, default batches and checkpoint.
    pub fn new(file: impl Into<PathBuf>) -> ImportArgs {
        ImportArgs { file: file.into(), mode: Mode::Merge, webhooks: false, batch: 50_000, checkpoint: None, quiet: true }
    }

    fn checkpoint_path(&self) -> PathBuf {
        self.checkpoint.clone().unwrap_or_else(|| {
            let mut s = self.file.as_os_str().to_owned();
            s.push(".followd-import");
            PathBuf::from(s)
        })
    }
}

/// A follow that was not applied, with its line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedLine {
    /// The line number (from 1).
    pub line: u64,
    /// `From_Account`.
    pub from: String,
    /// `To_Account`.
    pub to: String,
    /// The code (`32100` for `max_following`, …).
    pub code: u32,
    /// Why.
    pub info: String,
}

/// The most rejected lines a report lists (all are counted).
const MAX_LISTED: usize = 1000;

/// What an import did, over every run that contributed to it (a resumed one included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportReport {
    /// Lines read and applied (the next line is where a resumed run starts).
    pub lines: u64,
    /// Accounts created.
    pub accounts_created: u64,
    /// Account lines for accounts that existed.
    pub accounts_existing: u64,
    /// Follows added.
    pub follows_added: u64,
    /// Follows that existed already.
    pub follows_existing: u64,
    /// Follows refused (over a limit, or a self-follow), not applied.
    pub rejected: u64,
    /// The first of them.
    pub rejected_lines: Vec<RejectedLine>,
    /// Follows removed (`replace`).
    pub removed: u64,
    /// The line the run stopped at and why (a malformed line), if it did.
    pub failure: Option<String>,
    /// Whether the run was interrupted (Ctrl-C) before the end; run again to resume.
    pub interrupted: bool,
    /// Whether the whole file was applied (and, for `replace`, the sweep done).
    pub complete: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Checkpoint {
    file_len: u64,
    mode: Mode,
    run: Option<i64>,
    offset: u64,
    /// Records seen so far (account lines, follow lines), to check an export's last line.
    seen: (u64, u64),
    /// `None` while loading; the sweep's cursor once every batch is in.
    sweep: Option<String>,
    report: ImportReport,
}

fn save(path: &Path, c: &Checkpoint) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(c)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// One batch read from the file.
#[derive(Default)]
struct Batch {
    req: ImportRequest,
    /// The line of each follow.
    lines: Vec<u64>,
    /// Where the file stands after it.
    offset: u64,
    line: u64,
    seen: (u64, u64),
    malformed: Option<String>,
    eof: bool,
}

fn read_batch(reader: &mut impl BufRead, mut offset: u64, mut line: u64, mut seen: (u64, u64), size: usize) -> anyhow::Result<Batch> {
    let now_us = crate::clock::now_millis() * 1000;
    let mut b = Batch::default();
    let mut text = String::new();
    while b.req.follows.len() + b.req.accounts.len() < size {
        text.clear();
        let n = reader.read_line(&mut text).context("reading the file")?;
        if n == 0 {
            b.eof = true;
            break;
        }
        match format::parse(&text, now_us) {
            Ok(Line::Skip) => {}
            Ok(Line::Account(a)) => {
                seen.0 += 1;
                b.req.accounts.push(a);
            }
            Ok(Line::Follow(f)) => {
                seen.1 += 1;
                b.req.follows.push(f);
                b.lines.push(line + 1);
            }
            Ok(Line::End { accounts, follows }) if (accounts, follows) != seen => {
                b.malformed = Some(format!(
                    "line {}: the export's last line counts {accounts} accounts and {follows} follows, the file has {} and {}",
                    line + 1,
                    seen.0,
                    seen.1
                ));
                break;
            }
            Ok(Line::End { .. }) => {}
            Err(reason) => {
                b.malformed = Some(format!("line {}: {reason}", line + 1));
                break;
            }
        }
        offset += n as u64;
        line += 1;
    }
    b.offset = offset;
    b.line = line;
    b.seen = seen;
    Ok(b)
}

/// `followd import`: applies the file to the app; resumes from the checkpoint when there is one.
/// A malformed line stops the import after everything before it was applied
/// ([`ImportReport::failure`]); Ctrl-C (`stop`) stops it after the batch in flight.
pub async fn import(target: &Target, args: &ImportArgs, stop: watch::Receiver<bool>) -> anyhow::Result<ImportReport> {
    let file = std::fs::File::open(&args.file).with_context(|| format!("opening {}", args.file.display()))?;
    let file_len = file.metadata()?.len();
    let cp_path = args.checkpoint_path();
    let mut cp = match std::fs::read(&cp_path).ok().and_then(|b| serde_json::from_slice::<Checkpoint>(&b).ok()) {
        Some(c) if c.file_len == file_len && c.mode == args.mode => {
            if !args.quiet {
                eprintln!("import: resuming at line {} from {}", c.report.lines + 1, cp_path.display());
            }
            c
        }
        _ => Checkpoint {
            file_len,
            mode: args.mode,
            run: (args.mode == Mode::Replace).then(|| rand::random::<i64>() & i64::MAX),
            offset: 0,
            seen: (0, 0),
            sweep: None,
            report: ImportReport::default(),
        },
    };
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(cp.offset))?;
    let mut progress = Progress::new("import", "lines", Some(file_len), args.quiet);
    let batch_size = args.batch.clamp(1, super::MAX_BATCH);
    if cp.sweep.is_none() {
        let mut next = read_batch(&mut reader, cp.offset, cp.report.lines, cp.seen, batch_size)?;
        loop {
            let mut batch = std::mem::take(&mut next);
            batch.req.webhooks = args.webhooks;
            batch.req.replace_run = cp.run;
            let sending = {
                let (t, req) = (target.clone(), std::mem::take(&mut batch.req));
                let empty = req.accounts.is_empty() && req.follows.is_empty();
                tokio::spawn(async move {
                    if empty {
                        return Ok((ImportReply::default(), req));
                    }
                    t.call_retrying::<_, ImportReply>("/bulk/v1/import", &req).await.map(|r| (r, req))
                })
            };
            // Read the next batch while this one is applied.
            let more = !batch.eof && batch.malformed.is_none();
            if more {
                next = read_batch(&mut reader, batch.offset, batch.line, batch.seen, batch_size)?;
            }
            let (reply, req) = sending.await.context("the import task")??;
            let r = &mut cp.report;
            r.accounts_created += reply.accounts_created;
            r.accounts_existing += reply.accounts_existing;
            r.follows_added += reply.follows_added;
            r.follows_existing += reply.follows_existing;
            r.rejected += reply.rejected.len() as u64;
            for rej in reply.rejected {
                if r.rejected_lines.len() < MAX_LISTED {
                    let f = req.follows.get(rej.index).context("the server rejected a follow the batch does not have")?;
                    let line = batch.lines.get(rej.index).copied().unwrap_or(0);
                    r.rejected_lines.push(RejectedLine {
                        line,
                        from: f.from.clone(),
                        to: f.to.clone(),
                        code: rej.result_code,
                        info: rej.result_info,
                    });
                }
            }
            progress.advance(batch.line - r.lines, batch.offset);
            r.lines = batch.line;
            cp.offset = batch.offset;
            cp.seen = batch.seen;
            if let Some(m) = batch.malformed {
                cp.report.failure = Some(m);
                progress.finish();
                if let Some(run) = cp.run {
                    // No sweep after part of a file: drop the run's marks; the fixed file is a new run.
                    let mut cursor = "f".to_owned();
                    while !cursor.is_empty() {
                        let step: SweepReply = target
                            .call_retrying("/bulk/v1/sweep", &SweepRequest { run, cursor, webhooks: false, allow_empty: false })
                            .await?;
                        cursor = step.next_cursor;
                    }
                    let _ = std::fs::remove_file(&cp_path);
                } else {
                    save(&cp_path, &cp)?;
                }
                return Ok(cp.report);
            }
            if !more {
                break;
            }
            if *stop.borrow() {
                save(&cp_path, &cp)?;
                progress.finish();
                cp.report.interrupted = true;
                return Ok(cp.report);
            }
            save(&cp_path, &cp)?;
        }
        cp.sweep = cp.run.map(|_| String::new());
    }
    if let (Some(run), Some(cursor)) = (cp.run, cp.sweep.clone()) {
        // A file without follows makes the app's graph empty: say so to the server.
        let allow_empty = cp.report.follows_added + cp.report.follows_existing == 0;
        let mut cursor = cursor;
        loop {
            save(&cp_path, &Checkpoint { sweep: Some(cursor.clone()), ..cp.clone() })?;
            if *stop.borrow() {
                progress.finish();
                cp.report.interrupted = true;
                return Ok(cp.report);
            }
            let step: SweepReply = target
                .call_retrying("/bulk/v1/sweep", &SweepRequest { run, cursor: cursor.clone(), webhooks: args.webhooks, allow_empty })
                .await?;
            cp.report.removed += step.removed;
            if step.next_cursor.is_empty() {
                break;
            }
            cursor = step.next_cursor;
        }
    }
    progress.finish();
    let _ = std::fs::remove_file(&cp_path);
    cp.report.complete = true;
    Ok(cp.report)
}

impl ImportReport {
    /// The summary printed at the end.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "lines applied: {}\naccounts created: {}\nfollows added: {}\nfollows already there: {}\nfollows refused: {}\n",
            self.lines, self.accounts_created, self.follows_added, self.follows_existing, self.rejected
        );
        if self.removed > 0 {
            s += &format!("follows removed (replace): {}\n", self.removed);
        }
        for r in &self.rejected_lines {
            s += &format!("  line {}: {} -> {}: {} {}\n", r.line, r.from, r.to, r.code, r.info);
        }
        if self.rejected as usize > self.rejected_lines.len() {
            s += &format!("  … and {} more\n", self.rejected as usize - self.rejected_lines.len());
        }
        if let Some(f) = &self.failure {
            s += &format!("stopped: {f}; everything before it was applied\n");
        } else if self.interrupted {
            s += &format!("interrupted after line {}; run the same command again to resume\n", self.lines);
        }
        s
    }
}

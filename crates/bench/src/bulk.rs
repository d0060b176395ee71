//! `followd-bench import`: `followd import` of a generated graph into a running server, beside
//! loading edges of the same graph through `follow_add` (20 targets a call, many connections) in the
//! same run; then `followd export` of the loaded graph from a restarted server. Prints edges per
//! second, the ratio to `follow_add`, and the peak RSS of the server and of the command in each
//! phase (run it at two sizes to see that memory does not grow with the graph). The baseline of the
//! import is SQLite's own rate for inserting the same edge rows ([`sqlite_baseline`]).
//!
//! The graph: `edges / 20` users, each following 20 others spread over all users (a multiplicative
//! hash), each follow with its own time; written as CSV `From_Account,To_Account,FollowTime`.

use anyhow::{bail, Context as _};
use serde_json::json;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{drive, import, ok_items, peak_rss_kib, proc_status_kib, spawn, user, Child, Target, ADMIN, KEY};

const APP: u64 = 1_400_000_000;
const OUT_DEGREE: u64 = 20;

/// What `followd-bench import` is asked to do.
pub struct Options {
    /// Edges of the bulk import (and of the export).
    pub edges: u64,
    /// Edges loaded through `follow_add` for the baseline (a prefix of the same graph).
    pub sample: u64,
    /// Connections of the `follow_add` load.
    pub connections: usize,
}

fn target_of(i: u64, users: u64) -> u64 {
    let from = i / OUT_DEGREE;
    let k = i % OUT_DEGREE;
    // Spread over all users, never the follower itself, distinct for one follower.
    (from + 1 + (k + 1).wrapping_mul(2_654_435_761) % (users - 1).max(1)) % users
}

fn write_graph(path: &Path, edges: u64) -> anyhow::Result<u64> {
    let users = (edges / OUT_DEGREE).max(2);
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let t0: u64 = 1_700_000_000_000_000;
    for i in 0..edges {
        let (from, to) = (i / OUT_DEGREE, target_of(i, users));
        let us = t0 + i * 8;
        writeln!(f, "{},{},{}.{:06}", user(from), user(to), us / 1_000_000, us % 1_000_000)?;
    }
    f.flush()?;
    Ok(users)
}

async fn server(bin: &Path, cfg: &Path) -> anyhow::Result<Child> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.args(["serve", "--config"]).arg(cfg).env("FOLLOWD_LOG", "warn,followd=info");
    spawn(cmd).await
}

/// Runs a `followd` command to the end; returns its seconds and its peak RSS (KiB, sampled).
async fn command(bin: &Path, args: &[&str]) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let mut child = tokio::process::Command::new(bin).args(args).stdout(std::process::Stdio::null()).kill_on_drop(true).spawn()?;
    let pid = child.id().context("no pid")?;
    let mut peak = 0;
    loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        tokio::select! {
            status = child.wait() => {
                let status = status?;
                if !status.success() {
                    bail!("followd {args:?} failed: {status}");
                }
                return Ok((start.elapsed().as_secs_f64(), peak));
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// SQLite's own rate for the same edge rows: the graph's `(src, dst, t)` rows, with ids given in order
/// of first appearance as followd gives them, inserted into a scratch database with followd's edge
/// table, its in-ordering index and its pragmas, in transactions of 50,000 rows sorted by key and
/// written 64 rows a statement, as followd's import writes them. No accounts, counters or rules:
/// what the edges alone cost the one writer.
fn sqlite_baseline(dir: &Path, edges: u64, users: u64) -> anyhow::Result<f64> {
    const BATCH: u64 = 50_000;
    const PER_STATEMENT: usize = 64;
    let path = dir.join("baseline.db");
    let conn = rusqlite::Connection::open(&path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -262144; PRAGMA mmap_size = 0;
         CREATE TABLE edges (src INTEGER NOT NULL, dst INTEGER NOT NULL, t INTEGER NOT NULL, PRIMARY KEY (src, dst)) WITHOUT ROWID;
         CREATE INDEX edges_in ON edges(dst, t);",
    )?;
    let values: Vec<String> = (0..PER_STATEMENT).map(|i| format!("(?{}, ?{}, ?{})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
    let many = format!("INSERT INTO edges(src, dst, t) VALUES {}", values.join(", "));
    let mut ids: std::collections::HashMap<u64, i64> = std::collections::HashMap::with_capacity(users as usize);
    let start = Instant::now();
    let mut i = 0;
    while i < edges {
        let mut rows: Vec<(i64, i64, i64)> = (i..(i + BATCH).min(edges))
            .map(|e| {
                let next = ids.len() as i64 + 1;
                let src = *ids.entry(e / OUT_DEGREE).or_insert(next);
                let next = ids.len() as i64 + 1;
                let dst = *ids.entry(target_of(e, users)).or_insert(next);
                (src, dst, e as i64)
            })
            .collect();
        rows.sort_unstable();
        conn.execute_batch("BEGIN")?;
        {
            let mut st = conn.prepare_cached(&many)?;
            let mut chunks = rows.chunks_exact(PER_STATEMENT);
            for c in &mut chunks {
                st.execute(rusqlite::params_from_iter(c.iter().flat_map(|&(s, d, t)| [s, d, t])))?;
            }
            let mut one = conn.prepare_cached("INSERT INTO edges(src, dst, t) VALUES (?1, ?2, ?3)")?;
            for &(s, d, t) in chunks.remainder() {
                one.execute([s, d, t])?;
            }
        }
        conn.execute_batch("COMMIT")?;
        i += BATCH;
    }
    let rate = edges as f64 / start.elapsed().as_secs_f64();
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("baseline.db{suffix}")));
    }
    Ok(rate)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub async fn run(bin: &Path, o: Options) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("graph.csv");
    let users = write_graph(&csv, o.edges)?;
    let raw_rate = sqlite_baseline(dir.path(), o.edges, users)?;
    let config = |name: &str| -> anyhow::Result<std::path::PathBuf> {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d)?;
        let cfg = d.join("followd.toml");
        std::fs::write(
            &cfg,
            format!(
                "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n[[apps]]\nsdkappid = {APP}\nsecret_key = \"{KEY}\"\nadmins = [\"{ADMIN}\"]\nmax_following = 0\n",
                d.join("data").display()
            ),
        )?;
        Ok(cfg)
    };

    // 1. follow_add: the sample, through the API.
    let cfg_api = config("api")?;
    let srv = server(bin, &cfg_api).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(o.connections * 2).build()?;
    let sig = followd_protocol::usersig::generate(KEY, APP, ADMIN, crate::now(), 86400, None);
    let t = Arc::new(Target {
        http: http.clone(),
        base: format!("http://{}", srv.addr),
        query: format!("sdkappid={APP}&identifier={ADMIN}&usersig={sig}&random=1&contenttype=json"),
    });
    let sample_users = o.sample.div_ceil(OUT_DEGREE);
    import(&t, &http, o.connections, 0, users).await?;
    let url = t.url("follow/follow_add");
    let make: Arc<dyn Fn(u64) -> (String, String) + Send + Sync> = Arc::new(move |from| {
        let items: Vec<_> = (0..OUT_DEGREE).map(|k| json!({"To_Account": user(target_of(from * OUT_DEGREE + k, users))})).collect();
        (url.clone(), json!({"From_Account": user(from), "FollowItem": items}).to_string())
    });
    let api = drive(&http, o.connections, Duration::from_secs(24 * 3600), sample_users, make, ok_items).await?;
    let api_rate = api.units as f64 / api.secs;
    drop(srv);

    // 2. followd import of the whole graph into a fresh server.
    let cfg_bulk = config("bulk")?;
    let srv = server(bin, &cfg_bulk).await?;
    let url = format!("http://{}", srv.addr);
    let server_import_base = srv.proc.id().and_then(|p| proc_status_kib(p, "VmRSS:")).unwrap_or(0);
    let cfg_s = cfg_bulk.to_str().unwrap();
    let (import_secs, import_rss) = command(bin, &["import", "--config", cfg_s, "--url", &url, csv.to_str().unwrap()]).await?;
    let server_import_rss = srv.proc.id().and_then(peak_rss_kib).unwrap_or(0);
    drop(srv);

    // 3. followd export from the same data, restarted (so its peak RSS is the export's own).
    let srv = server(bin, &cfg_bulk).await?;
    let url = format!("http://{}", srv.addr);
    // At start the store reads the newest follow time (a scan that fills the writer's page cache):
    // the export's own memory is the peak beyond this.
    let server_export_base = srv.proc.id().and_then(|p| proc_status_kib(p, "VmRSS:")).unwrap_or(0);
    let out = dir.path().join("graph.ndjson");
    let (export_secs, export_rss) = command(bin, &["export", "--config", cfg_s, "--url", &url, "--out", out.to_str().unwrap()]).await?;
    let server_export_rss = srv.proc.id().and_then(peak_rss_kib).unwrap_or(0);
    drop(srv);
    let exported = std::fs::read_to_string(&out)?.lines().filter(|l| l.starts_with("{\"From_Account\"")).count() as u64;
    if exported != o.edges {
        bail!("the export has {exported} follows, the import {}", o.edges);
    }

    let bulk_rate = o.edges as f64 / import_secs;
    let export_rate = o.edges as f64 / export_secs;
    println!("| phase | edges | seconds | edges/s | ratio | server RSS at start → peak | command peak RSS |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!("| follow_add (20 a call, {} connections) | {} | {:.1} | {:.0} | 1.0 | | |", o.connections, api.units, api.secs, api_rate);
    println!(
        "| baseline: SQLite inserting the same edge rows (no server, no rules) | {} | {:.1} | {:.0} | {:.1}× | | |",
        o.edges,
        o.edges as f64 / raw_rate,
        raw_rate,
        raw_rate / api_rate
    );
    println!(
        "| followd import (CSV) | {} | {:.1} | {:.0} | {:.1}× | {:.1} → {:.1} MiB | {:.1} MiB |",
        o.edges,
        import_secs,
        bulk_rate,
        bulk_rate / api_rate,
        mib(server_import_base),
        mib(server_import_rss),
        mib(import_rss)
    );
    println!(
        "| followd export (NDJSON) | {} | {:.1} | {:.0} | {:.1}× | {:.1} → {:.1} MiB | {:.1} MiB |",
        o.edges,
        export_secs,
        export_rate,
        export_rate / api_rate,
        mib(server_export_base),
        mib(server_export_rss),
        mib(export_rss)
    );
    println!(
        "{}",
        json!({"edges": o.edges, "follow_add_edges_per_s": api_rate.round(), "import_edges_per_s": bulk_rate.round(),
               "export_edges_per_s": export_rate.round(), "import_vs_follow_add": (bulk_rate / api_rate * 100.0).round() / 100.0,
               "sqlite_rows_per_s": raw_rate.round(), "import_vs_sqlite_rows": (bulk_rate / raw_rate * 100.0).round() / 100.0,
               "server_import_peak_rss_mib": mib(server_import_rss).round(), "import_peak_rss_mib": mib(import_rss).round(),
               "server_export_peak_rss_mib": mib(server_export_rss).round(), "server_export_start_rss_mib": mib(server_export_base).round(), "export_peak_rss_mib": mib(export_rss).round()})
    );
    Ok(())
}

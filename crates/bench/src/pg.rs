//! `followd-bench --database-url`: the same figures with followd on PostgreSQL, one node or several
//! on one database. The run creates a database of its own on the server the URL names and drops it
//! at the end. The baseline is PostgreSQL's own rate for the same edge rows: a `COPY` of as many
//! `(app, src, dst, t)` rows into a scratch table with the edges' indexes, in the same run.

use anyhow::Context as _;
use std::time::Instant;

/// A database made for this run, dropped with it.
pub(crate) struct Db {
    admin: String,
    name: String,
    /// The URL of the database made for this run.
    pub(crate) url: String,
}

/// `url` with its database replaced by `name` (the query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..].find('/').map_or(base.len(), |i| scheme_end + i);
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs `f` with a new connection to `url` on a thread of its own (the blocking client may not run
/// inside the benchmark's runtime).
pub(crate) fn with<R: Send + 'static>(
    url: &str,
    f: impl FnOnce(&mut postgres::Client) -> anyhow::Result<R> + Send + 'static,
) -> anyhow::Result<R> {
    let url = url.to_owned();
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).with_context(|| format!("connecting to {url}"))?;
        f(&mut c)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a PostgreSQL thread panicked"))?
}

impl Db {
    pub(crate) fn create(admin: &str) -> anyhow::Result<Db> {
        let name = format!("followd_bench_{}", std::process::id());
        let n = name.clone();
        with(admin, move |c| {
            c.batch_execute(&format!("DROP DATABASE IF EXISTS {n}"))?;
            c.batch_execute(&format!("CREATE DATABASE {n}"))?;
            Ok(())
        })?;
        Ok(Db { url: with_database(admin, &name), admin: admin.to_owned(), name })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let n = self.name.clone();
        if let Err(e) = with(&self.admin, move |c| Ok(c.batch_execute(&format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"))?)) {
            eprintln!("could not drop the benchmark's database {}: {e}", self.name);
        }
    }
}

/// Storage as `storage` reports it for SQLite: (edges, bytes of the whole database, bytes of the edge
/// structures (`edges` with its indexes, `mutual`), bytes of `accounts` with its indexes).
pub(crate) fn storage(url: &str) -> anyhow::Result<(u64, u64, u64, u64)> {
    with(url, |c| {
        c.batch_execute("VACUUM ANALYZE")?;
        let r = c.query_one(
            "SELECT (SELECT count(*) FROM edges), pg_database_size(current_database()), \
             pg_total_relation_size('edges') + pg_total_relation_size('mutual'), pg_total_relation_size('accounts')",
            &[],
        )?;
        Ok((r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64, r.get::<_, i64>(2) as u64, r.get::<_, i64>(3) as u64))
    })
}

/// PostgreSQL's own rate for `rows` edge rows: a `COPY` into a scratch table shaped and indexed as
/// `edges` (key `(src, dst)`, index `(dst, t, src)`), rows per second. The table is dropped after.
pub(crate) fn copy_rate(url: &str, rows: u64) -> anyhow::Result<f64> {
    with(url, move |c| {
        c.batch_execute("DROP TABLE IF EXISTS bench_scratch; CREATE TABLE bench_scratch (LIKE edges INCLUDING ALL)")?;
        let start = Instant::now();
        let mut w = c.copy_in("COPY bench_scratch(app, src, dst, t) FROM STDIN")?;
        let mut buf = String::with_capacity(1 << 20);
        for i in 0..rows {
            use std::fmt::Write as _;
            let (src, dst) = (1 + i / 20, 1_000_000_000 + (i * 7919) % (rows + 1));
            let _ = writeln!(buf, "1400000000\t{src}\t{dst}\t{}", 1_000_000_000 + i as i64);
            if buf.len() > (1 << 20) - 100 {
                std::io::Write::write_all(&mut w, buf.as_bytes())?;
                buf.clear();
            }
        }
        std::io::Write::write_all(&mut w, buf.as_bytes())?;
        w.finish()?;
        let secs = start.elapsed().as_secs_f64();
        c.batch_execute("DROP TABLE bench_scratch")?;
        Ok(rows as f64 / secs)
    })
}

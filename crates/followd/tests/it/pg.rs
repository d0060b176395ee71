//! The PostgreSQL side of the conformance suite: a database of its own for each test.
//!
//! `FOLLOWD_TEST_DATABASE_URL` names a server where the tests may create databases (`.ci/run` sets
//! it to the machine's local server). Without it the PostgreSQL tests skip, saying why. With
//! `FOLLOWD_TEST_STORE=postgres` as well, every server the API tests start runs on PostgreSQL
//! (`.ci/postgres` runs the shared modules that way).

use std::sync::atomic::{AtomicUsize, Ordering};

/// The server URL the tests may use, or `None` after printing why the caller skips.
pub fn url(test: &str) -> Option<String> {
    match std::env::var("FOLLOWD_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            eprintln!("skipping {test}: FOLLOWD_TEST_DATABASE_URL is not set (no PostgreSQL server to test against)");
            None
        }
    }
}

/// Whether the API tests' servers run on PostgreSQL.
pub fn api_on_pg() -> bool {
    std::env::var("FOLLOWD_TEST_STORE").is_ok_and(|s| s == "postgres")
}

/// True (after printing why the caller skips) when the API suite runs on PostgreSQL: for tests of
/// the embedded store's own files, or of timing that only the embedded store's write rate gives.
pub fn sqlite_only(test: &str, why: &str) -> bool {
    let pg = api_on_pg();
    if pg {
        eprintln!("skipping {test} on PostgreSQL: {why}");
    }
    pg
}

/// A database created for one test and dropped (with its connections) when this is dropped.
pub struct TestDb {
    admin: String,
    name: String,
    /// The URL of the new database.
    pub url: String,
}

/// Runs blocking client code off the async runtime (the blocking client runs a runtime of its own).
pub fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f).join().unwrap()
}

/// Replaces the database name (the path) of a `postgres://` URL.
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

impl TestDb {
    /// Creates an empty database on the server of `admin`.
    pub fn create(admin: &str) -> TestDb {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("followd_t_{}_{}_{:x}", std::process::id(), N.fetch_add(1, Ordering::Relaxed), rand_suffix());
        let (a, n) = (admin.to_owned(), name.clone());
        blocking(move || {
            let mut c = postgres::Client::connect(&a, postgres::NoTls).expect("connecting to FOLLOWD_TEST_DATABASE_URL");
            c.batch_execute(&format!("CREATE DATABASE {n}")).unwrap();
        });
        TestDb { url: with_database(admin, &name), admin: admin.to_owned(), name }
    }

    /// Runs `f` on a new connection to this database.
    pub fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut postgres::Client) -> R + Send + 'static) -> R {
        let url = self.url.clone();
        blocking(move || f(&mut postgres::Client::connect(&url, postgres::NoTls).unwrap()))
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64)
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (a, n) = (self.admin.clone(), self.name.clone());
        blocking(move || {
            if let Ok(mut c) = postgres::Client::connect(&a, postgres::NoTls) {
                let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {n} WITH (FORCE)"));
            }
        });
    }
}

#[test]
fn urls_get_the_database_swapped() {
    assert_eq!(with_database("postgres://postgres@127.0.0.1:5432/test", "x"), "postgres://postgres@127.0.0.1:5432/x");
    assert_eq!(with_database("postgres://u:p@h/test?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
}

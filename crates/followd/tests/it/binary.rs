//! The real `followd` binary as a child process, for what only a separate process shows: a crash,
//! a signal, a failpoint (`FAILPOINTS`, compiled into the binary the tests build), its own memory and
//! file descriptors, separate from the test's.

use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

pub struct Binary {
    pub proc: tokio::process::Child,
    pub addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

/// Writes the two-app test config, with `top` keys first, into `dir`; returns its path.
pub fn config_file(dir: &tempfile::TempDir, top: &str) -> std::path::PathBuf {
    let path = dir.path().join("followd.toml");
    std::fs::write(&path, config_text_with_top(top, "", "")).unwrap();
    path
}

/// Starts the binary on the config file (listening on port 0) and reads the bound address from its log.
pub async fn start(config: &Path) -> Binary {
    start_with(config, &[]).await
}

/// [`start`] with extra environment variables (e.g. `FAILPOINTS`).
pub async fn start_with(config: &Path, env: &[(&str, &str)]) -> Binary {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_followd"));
    cmd.args(["serve", "--config"]).arg(config).env("FOLLOWD_LOG", "info").env_remove("FAILPOINTS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut proc = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let mut lines = BufReader::new(proc.stderr.take().unwrap()).lines();
    let log = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
            .await
            .expect("server did not start")
            .unwrap()
            .expect("server exited");
        log.lock().unwrap().push(line.clone());
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    let keep = log.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            keep.lock().unwrap().push(line);
        }
    });
    Binary { proc, addr, log }
}

impl Binary {
    pub fn pid(&self) -> u32 {
        self.proc.id().expect("the server is running")
    }

    /// The URL of an admin API call as app A's administrator.
    pub fn url(&self, api: &str) -> String {
        format!("http://{}/v4/{api}?sdkappid={APP_A}&identifier={ADMIN}&usersig={}&contenttype=json", self.addr, sig(KEY_A, APP_A, ADMIN))
    }

    /// Calls an admin API; asserts HTTP 200 and returns the envelope.
    pub async fn call(&self, http: &reqwest::Client, api: &str, body: Value) -> Value {
        let r = http.post(self.url(api)).body(body.to_string()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    /// `GET path`: (status, body).
    pub async fn get(&self, http: &reqwest::Client, path: &str) -> (u16, String) {
        let r = http.get(format!("http://{}{path}", self.addr)).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Whether a line of the log so far contains `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        self.proc.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then waits for the graceful stop (every queued write processed).
    pub async fn stop(mut self) {
        let status = std::process::Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(60), self.proc.wait()).await.expect("the server stops").unwrap();
        assert!(exit.success(), "the server exited with {exit}");
    }
}

/// Polls `probe` until it returns `Some`, failing with `what` after `secs` seconds.
pub async fn poll<T, F: std::future::Future<Output = Option<T>>>(secs: u64, what: &str, mut probe: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {secs} s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

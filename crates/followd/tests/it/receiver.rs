//! A recording webhook receiver on loopback that can be told to fail, hang or answer slowly.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }
    pub fn sender(&self) -> String {
        self.json()["From_Account"].as_str().unwrap().to_owned()
    }
}

/// How to answer one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Ok,
    Status(u16),
    NotJson,
    Hang,
    RetryAfter(u16, u64),
    /// Answers OK after this many milliseconds.
    Slow(u64),
}

type Rule = Box<dyn Fn(&Received) -> Behavior + Send + Sync>;

struct Inner {
    got: Mutex<Vec<Received>>,
    rule: Mutex<Rule>,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let inner = Arc::new(Inner { got: Mutex::new(Vec::new()), rule: Mutex::new(Box::new(|_| Behavior::Ok)) });
        let app = axum::Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, inner }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Decides the answer to every later request.
    pub fn rule(&self, f: impl Fn(&Received) -> Behavior + Send + Sync + 'static) {
        *self.inner.rule.lock() = Box::new(f);
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.got.lock().clone()
    }

    /// Polls until `pred` holds over everything received, or panics after `secs`.
    pub async fn wait_until(&self, secs: u64, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received {} requests: {:#?}",
                got.len(),
                got.iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_for(&self, n: usize, secs: u64) -> Vec<Received> {
        self.wait_until(secs, &format!("{n} requests"), |g| g.len() >= n).await
    }
}

async fn handle(State(inner): State<Arc<Inner>>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let r = Received { at: Instant::now(), path: uri.path().to_owned(), query: uri.query().unwrap_or("").to_owned(), headers, body };
    let behavior = (inner.rule.lock())(&r);
    inner.got.lock().push(r);
    match behavior {
        Behavior::Ok => ([("content-type", "application/json")], followd_protocol::webhook::RESPONSE_OK).into_response(),
        Behavior::Status(s) => (StatusCode::from_u16(s).unwrap(), "{}").into_response(),
        Behavior::NotJson => (StatusCode::OK, "<html>ok</html>").into_response(),
        Behavior::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behavior::Slow(ms) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ([("content-type", "application/json")], followd_protocol::webhook::RESPONSE_OK).into_response()
        }
        Behavior::RetryAfter(s, secs) => (StatusCode::from_u16(s).unwrap(), [("retry-after", secs.to_string())], "{}").into_response(),
    }
}

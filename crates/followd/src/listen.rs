//! `followd listen`: a local webhook receiver for development. It verifies each webhook with the
//! receiver library, answers like an app backend, prints one JSON line per accepted webhook on stdout,
//! says on stderr why it refused one, and can pass accepted webhooks on to another URL unchanged.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use followd_receiver::{answer, Verifier};
use serde::Serialize;
use serde_json::value::RawValue;
use std::future::Future;
use std::io::Write as _;
use std::sync::Arc;

struct Listener {
    verifier: Verifier,
    forward: Option<String>,
    http: reqwest::Client,
}

/// The line printed for each accepted webhook.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "SdkAppid")]
    sdkappid: u64,
    #[serde(rename = "CallbackCommand")]
    command: &'a str,
    #[serde(rename = "OptPlatform")]
    platform: Option<&'a str>,
    #[serde(rename = "ClientIP")]
    client_ip: Option<&'a str>,
    #[serde(rename = "WebhookId")]
    webhook_id: Option<&'a str>,
    #[serde(rename = "Body")]
    body: &'a RawValue,
}

/// Headers passed on with a forwarded webhook.
const FORWARDED_HEADERS: [&str; 5] = ["content-type", "user-agent", "webhook-id", "webhook-timestamp", "webhook-signature"];

/// Serves until `shutdown` resolves.
pub async fn run(
    listener: tokio::net::TcpListener,
    verifier: Verifier,
    forward: Option<String>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let state =
        Arc::new(Listener { verifier, forward, http: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()? });
    let app = axum::Router::new().fallback(axum::routing::post(receive)).with_state(state);
    eprintln!("followd listen: waiting for webhooks addr={}", listener.local_addr()?);
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

async fn receive(State(l): State<Arc<Listener>>, RawQuery(query): RawQuery, headers: HeaderMap, body: Bytes) -> Response {
    let query = query.unwrap_or_default();
    let hook = match l.verifier.verify(&query, &headers, &body) {
        Ok(h) => h,
        Err(r) => {
            eprintln!("refused ({}): {r}", r.status());
            return json(StatusCode::from_u16(r.status()).unwrap_or(StatusCode::UNAUTHORIZED), r.answer());
        }
    };
    // The verifier parsed the body, so it is JSON.
    let raw: Box<RawValue> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return json(StatusCode::BAD_REQUEST, answer::fail(1, &e.to_string())),
    };
    let line = Line {
        sdkappid: hook.sdkappid,
        command: &hook.command,
        platform: hook.opt_platform.as_deref(),
        client_ip: hook.client_ip.as_deref(),
        webhook_id: hook.webhook_id.as_deref(),
        body: &raw,
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, &line);
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
    match &l.forward {
        None => json(StatusCode::OK, answer::OK.to_owned()),
        Some(url) => forward(&l.http, url, &query, &headers, body).await,
    }
}

/// Passes a webhook on unchanged (query, body, content and signature headers) and relays the answer.
async fn forward(http: &reqwest::Client, url: &str, query: &str, headers: &HeaderMap, body: Bytes) -> Response {
    let mut req = http.post(followd_protocol::webhook::url_with_query(url, query)).body(body);
    for name in FORWARDED_HEADERS {
        if let Some(v) = headers.get(name) {
            req = req.header(name, v.as_bytes());
        }
    }
    match req.send().await {
        Ok(resp) => {
            let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = resp.bytes().await.unwrap_or_default();
            eprintln!("forwarded to {url}: HTTP {}", status.as_u16());
            (status, [("content-type", "application/json")], body).into_response()
        }
        Err(e) => {
            eprintln!("forwarding to {url} failed: {e}");
            json(StatusCode::BAD_GATEWAY, answer::fail(1, &format!("forwarding failed: {e}")))
        }
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [("content-type", "application/json")], body).into_response()
}

//! `followd listen`: a local webhook receiver for development. It verifies each webhook with the
//! receiver library, answers like an app backend, prints one JSON line per accepted webhook on stdout,
//! says on stderr why it refused one, and can pass accepted webhooks on to another URL unchanged.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use followd_receiver::{answer, Verifier, Webhook};
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
    let line = match line(&hook, &body) {
        Ok(line) => line,
        Err(e) => return json(StatusCode::BAD_REQUEST, answer::fail(1, &e.to_string())),
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.write_all(b"\n");
        let _ = out.flush();
    }
    match &l.forward {
        None => json(StatusCode::OK, answer::OK.to_owned()),
        Some(url) => forward(&l.http, url, &query, &headers, body).await,
    }
}

/// The JSON line printed for a verified webhook, its body kept byte for byte but for line breaks.
/// The pure step of [`run`]'s handler, public so the fuzz target `listen` runs exactly what the
/// handler runs.
pub fn line(hook: &Webhook, body: &[u8]) -> serde_json::Result<String> {
    // The verifier parsed the body, so it is JSON.
    let mut raw: Box<RawValue> = serde_json::from_slice(body)?;
    // One line per webhook even for a pretty-printed body: JSON allows a line break only as
    // whitespace between tokens (inside a string it must be escaped), so a space keeps the value.
    if raw.get().contains(['\n', '\r']) {
        raw = RawValue::from_string(raw.get().replace(['\n', '\r'], " "))?;
    }
    serde_json::to_string(&Line {
        sdkappid: hook.sdkappid,
        command: &hook.command,
        platform: hook.opt_platform.as_deref(),
        client_ip: hook.client_ip.as_deref(),
        webhook_id: hook.webhook_id.as_deref(),
        body: &raw,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `listen` fuzz target: a pretty-printed body made the "one line" span several.
    #[test]
    fn a_multi_line_body_prints_on_one_line() {
        let body = b"{\n  \"CallbackCommand\": \"Follow.CallbackAfterFollowDelete\",\r\n  \"From_Account\": \"a\\nb\",\n  \"To_Account\": [\"c\"],\n  \"EventTime\": 1\n}";
        let hook = Verifier::new(7).verify("SdkAppid=7", &axum::http::HeaderMap::new(), body).unwrap();
        let line = line(&hook, body).unwrap();
        assert!(!line.contains(['\n', '\r']), "{line}");
        let printed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(printed["Body"], serde_json::from_slice::<serde_json::Value>(body).unwrap());
        assert_eq!(printed["Body"]["From_Account"], "a\nb", "an escaped line break in a string stays");
    }
}

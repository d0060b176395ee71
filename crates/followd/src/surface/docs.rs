//! `/openapi.json` and `/docs`: the API document, generated from the code ([`crate::docs`]), and
//! its human-readable rendering. Both are built once, at the first request.

use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::docs;

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], docs::json()).into_response()
}

/// `GET /docs`: the reference, server-rendered HTML that needs no script and nothing from elsewhere.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        ],
        docs::html(),
    )
        .into_response()
}

/// `GET /docs/style.css`: the reference's stylesheet.
pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], docs::STYLE).into_response()
}

//! The reference page: the OpenAPI document rendered as HTML on the server.
use serde_json::Value;

/// Renders the document.
pub fn render(_doc: &Value) -> String {
    String::from("<!doctype html><title>followd</title>")
}

//! The reference page: the OpenAPI document rendered as HTML on the server, for people.
//!
//! It is rendered from the document itself (the JSON that `/openapi.json` serves), so it shows
//! nothing the document does not say. It needs nothing from elsewhere (no CDN, no script: the
//! page is plain HTML and one stylesheet, `/docs/style.css`), and every text from the document is
//! escaped. Operations are grouped by surface (the document's tags); each shows its URL parameters,
//! its request body as a table of fields with an example, its answers and its error codes; the
//! schemas follow, each linked from where it is used.

use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;

use super::ERROR_CODES_HEADING;

/// The order the document was built in. The JSON this page is rendered from keeps object keys in
/// `serde_json`'s order, which is alphabetical unless its `preserve_order` feature is on (only
/// followd's tests turn it on: it would cost the request path a hash map per JSON object), so the
/// order of the paths and of each schema's fields comes from the typed document instead.
#[derive(Debug, Default)]
pub struct Order {
    /// The paths, in the document's order.
    pub paths: Vec<String>,
    /// Each component schema's fields, in declaration order.
    pub fields: HashMap<String, Vec<String>>,
}

/// `keys` in `order` first, then any others in their own order.
fn ordered<'a>(keys: impl Iterator<Item = &'a String>, order: Option<&'a Vec<String>>) -> Vec<&'a String> {
    let keys: Vec<&String> = keys.collect();
    let mut out: Vec<&String> = order.into_iter().flatten().filter(|k| keys.contains(k)).collect();
    out.extend(keys.into_iter().filter(|k| !order.is_some_and(|o| o.contains(k))));
    out
}

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Inline text of a description: `code` spans become `<code>`, everything else is escaped.
fn inline(s: &str) -> String {
    s.split('`').enumerate().map(|(i, part)| if i % 2 == 1 { format!("<code>{}</code>", esc(part)) } else { esc(part) }).collect()
}

/// A description: paragraphs separated by blank lines, lines starting with `- ` as a list.
fn prose(s: &str) -> String {
    let mut out = String::new();
    for block in s.split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
        if block.lines().all(|l| l.starts_with("- ")) {
            out.push_str("<ul>");
            for l in block.lines() {
                let _ = write!(out, "<li>{}</li>", inline(&l[2..]));
            }
            out.push_str("</ul>");
        } else {
            let _ = write!(out, "<p>{}</p>", inline(&block.replace('\n', " ")));
        }
    }
    out
}

fn schema_link(reference: &str) -> Option<String> {
    let name = reference.strip_prefix("#/components/schemas/")?;
    Some(format!("<a href=\"#schema-{0}\">{1}</a>", esc(name), esc(name)))
}

/// A short description of a schema's type, with links to the named schemas it uses.
fn type_of(s: &Value) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return schema_link(r).unwrap_or_else(|| esc(r));
    }
    for (key, joiner) in [("oneOf", " or "), ("allOf", " and ")] {
        if let Some(items) = s.get(key).and_then(Value::as_array) {
            return items.iter().map(type_of).collect::<Vec<_>>().join(joiner);
        }
    }
    if let Some(values) = s.get("enum").and_then(Value::as_array) {
        return values.iter().map(|v| format!("<code>{}</code>", esc(&v.to_string()))).collect::<Vec<_>>().join(" | ");
    }
    let base = match &s["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(" or "),
        _ => "any".into(),
    };
    match s.get("items") {
        Some(items) => format!("{} of {}", esc(&base), type_of(items)),
        None => esc(&base),
    }
}

/// The limits a schema sets, in words.
fn limits(s: &Value) -> String {
    let mut v = Vec::new();
    for (lo, hi, unit) in [("minimum", "maximum", ""), ("minItems", "maxItems", " entries"), ("minLength", "maxLength", " bytes")] {
        match (s.get(lo), s.get(hi)) {
            (Some(a), Some(b)) => v.push(esc(&format!("{a} to {b}{unit}"))),
            (Some(a), None) => v.push(esc(&format!("at least {a}{unit}"))),
            (None, Some(b)) => v.push(esc(&format!("at most {b}{unit}"))),
            (None, None) => {}
        }
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        v.push(format!("matches <code>{}</code>", esc(p)));
    }
    v.join(", ")
}

/// A table of an object schema's fields, in `order` when given.
fn fields(s: &Value, order: Option<&Vec<String>>) -> String {
    let Some(props) = s.get("properties").and_then(Value::as_object) else {
        return match s.get("oneOf") {
            Some(_) => format!("<p>One of: {}.</p>", alternatives(s)),
            None => "<p>No fields.</p>".into(),
        };
    };
    let required: Vec<&str> = s["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let mut out = String::from("<table><thead><tr><th>field</th><th>type</th><th></th><th>meaning</th></tr></thead><tbody>");
    for name in ordered(props.keys(), order) {
        let p = &props[name];
        let req = if required.contains(&name.as_str()) { "required" } else { "optional" };
        let limits = limits(p);
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{req}</td><td>{}{}</td></tr>",
            esc(name),
            type_of(p),
            p.get("description").and_then(Value::as_str).map(inline).unwrap_or_default(),
            if limits.is_empty() { String::new() } else { format!(" <span class=\"limits\">({limits})</span>") }
        );
    }
    out + "</tbody></table>"
}

fn alternatives(s: &Value) -> String {
    s["oneOf"]
        .as_array()
        .map(|alts| {
            alts.iter()
                .map(|a| {
                    let keys: Vec<String> = a["required"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .map(|k| format!("<code>{}</code>", esc(k)))
                        .collect();
                    if keys.is_empty() {
                        type_of(a)
                    } else {
                        keys.join(", ")
                    }
                })
                .collect::<Vec<_>>()
                .join("; or ")
        })
        .unwrap_or_default()
}

fn parameters(op: &Value) -> String {
    let Some(params) = op.get("parameters").and_then(Value::as_array) else { return String::new() };
    let mut out = String::from(
        "<h4>Parameters</h4><table><thead><tr><th>name</th><th>in</th><th>type</th><th></th><th>meaning</th></tr></thead><tbody>",
    );
    for p in params {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(p["name"].as_str().unwrap_or("")),
            esc(p["in"].as_str().unwrap_or("")),
            type_of(&p["schema"]),
            if p["required"] == true { "required" } else { "optional" },
            p.get("description").and_then(Value::as_str).map(inline).unwrap_or_default()
        );
    }
    out + "</tbody></table>"
}

fn request(op: &Value, schemas: &Value, order: &Order) -> String {
    let Some(content) = op.pointer("/requestBody/content/application~1json") else { return String::new() };
    let mut out = String::from("<h4>Request body</h4>");
    if let Some(d) = op.pointer("/requestBody/description").and_then(Value::as_str) {
        out.push_str(&prose(d));
    }
    if let Some(r) = content.pointer("/schema/$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        let _ = write!(out, "<p>Schema: {}.</p>", schema_link(r).unwrap_or_default());
        out.push_str(&fields(&schemas[name], order.fields.get(name)));
    }
    if let Some(example) = content.get("example") {
        let _ = write!(out, "<p>Example:</p><pre>{}</pre>", esc(&example.to_string()));
    }
    out
}

fn responses(op: &Value) -> String {
    let Some(rs) = op.get("responses").and_then(Value::as_object) else { return String::new() };
    let mut out = String::from("<h4>Answers</h4><table><thead><tr><th>status</th><th>body</th><th>meaning</th></tr></thead><tbody>");
    for (status, r) in rs {
        let body = r
            .get("content")
            .and_then(Value::as_object)
            .map(|c| {
                c.iter()
                    .map(|(media, m)| format!("<code>{}</code>: {}", esc(media), type_of(&m["schema"])))
                    .collect::<Vec<_>>()
                    .join("<br>")
            })
            .unwrap_or_else(|| "none".into());
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{body}</td><td>{}</td></tr>",
            esc(status),
            r.get("description").and_then(Value::as_str).map(inline).unwrap_or_default()
        );
    }
    out.push_str("</tbody></table>");
    if let Some(r) = op.pointer("/responses/101/x-websocket-message/$ref").and_then(Value::as_str) {
        let _ = write!(out, "<p>Each WebSocket message: {}.</p>", schema_link(r).unwrap_or_default());
    }
    out
}

fn error_codes(op: &Value) -> String {
    let Some(codes) = op.get("x-error-codes").and_then(Value::as_array) else { return String::new() };
    let mut out = String::from("<h4>Error codes</h4><table class=\"codes\"><thead><tr><th>ErrorCode</th><th>when</th></tr></thead><tbody>");
    for c in codes {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td></tr>",
            esc(&c["code"].to_string()),
            inline(c["meaning"].as_str().unwrap_or(""))
        );
    }
    out + "</tbody></table>"
}

/// Renders the document.
pub fn render(doc: &Value, order: &Order) -> String {
    let title = format!("{} {}", doc["info"]["title"].as_str().unwrap_or("API"), doc["info"]["version"].as_str().unwrap_or(""));
    let schemas = &doc["components"]["schemas"];
    let empty = serde_json::Map::new();
    let paths = doc["paths"].as_object().unwrap_or(&empty);
    let ops: Vec<(&str, &str, &Value)> = ordered(paths.keys(), Some(&order.paths))
        .into_iter()
        .flat_map(|path| paths[path].as_object().into_iter().flatten().map(move |(method, op)| (path.as_str(), method.as_str(), op)))
        .collect();
    let tags: Vec<(&str, &str)> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (t["name"].as_str().unwrap_or(""), t["description"].as_str().unwrap_or("")))
        .collect();
    let in_tag = |tag: &str| -> Vec<(&str, &str, &Value)> { ops.iter().filter(|(_, _, op)| op["tags"][0] == tag).copied().collect() };
    let id = |op: &Value| format!("op-{}", esc(op["operationId"].as_str().unwrap_or("")));

    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{0}</title><link rel=\"stylesheet\" href=\"/docs/style.css\"></head><body><header><h1>{0}</h1>{1}<p>The same reference as an OpenAPI 3.1 document: <a href=\"/openapi.json\">/openapi.json</a>.</p></header>",
        esc(&title),
        prose(doc["info"]["description"].as_str().unwrap_or(""))
    );
    out.push_str("<nav><h2>Contents</h2><ul>");
    for (tag, _) in &tags {
        let _ = write!(out, "<li><a href=\"#tag-{0}\">{0}</a><ul>", esc(tag));
        for (path, method, op) in in_tag(tag) {
            let _ = write!(
                out,
                "<li><a href=\"#{}\"><span class=\"method\">{}</span> {}</a></li>",
                id(op),
                esc(&method.to_uppercase()),
                esc(path)
            );
        }
        out.push_str("</ul></li>");
    }
    out.push_str("<li><a href=\"#schemas\">schemas</a></li></ul></nav><main>");
    for (tag, description) in &tags {
        let _ = write!(out, "<section id=\"tag-{0}\"><h2>{0}</h2>{1}", esc(tag), prose(description));
        for (path, method, op) in in_tag(tag) {
            let text = op["description"].as_str().unwrap_or("");
            let text = text.split(ERROR_CODES_HEADING).next().unwrap_or("");
            let _ = write!(
                out,
                "<article id=\"{}\"><h3><span class=\"method\">{}</span> <code>{}</code></h3>{}{}{}{}{}{}</article>",
                id(op),
                esc(&method.to_uppercase()),
                esc(path),
                op["summary"].as_str().map(|s| format!("<p class=\"summary\">{}</p>", inline(s))).unwrap_or_default(),
                prose(text),
                parameters(op),
                request(op, schemas, order),
                responses(op),
                error_codes(op)
            );
        }
        out.push_str("</section>");
    }
    out.push_str("<section id=\"schemas\"><h2>Schemas</h2>");
    for (name, s) in schemas.as_object().unwrap_or(&empty) {
        let _ = write!(
            out,
            "<article id=\"schema-{0}\"><h3>{0}</h3>{1}{2}</article>",
            esc(name),
            s.get("description").and_then(Value::as_str).map(prose).unwrap_or_default(),
            if s.get("properties").is_some() || s.get("oneOf").is_some() {
                fields(s, order.fields.get(name))
            } else {
                format!("<p>{}{}</p>", type_of(s), {
                    let l = limits(s);
                    if l.is_empty() {
                        String::new()
                    } else {
                        format!(" ({l})")
                    }
                })
            }
        );
    }
    out.push_str("</section></main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        assert_eq!(esc("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(inline("a `<b>` c"), "a <code>&lt;b&gt;</code> c");
        let doc = serde_json::json!({
            "info": {"title": "<script>", "version": "1", "description": "x"},
            "tags": [{"name": "t", "description": "<img>"}],
            "paths": {"/p": {"get": {"tags": ["t"], "operationId": "o\"", "summary": "<b>", "responses": {"200": {"description": "<i>"}}}}},
            "components": {"schemas": {"S<": {"type": "object", "properties": {"<f>": {"type": "string", "description": "<u>"}}}}}
        });
        let html = render(&doc, &Order::default());
        for bad in ["<script>", "<img>", "<b>", "<i>", "<u>", "<f>", "S<", "o\""] {
            assert!(!html.contains(bad), "{bad} is not escaped");
        }
        assert!(!html.contains("<script"), "no script at all");
    }
}

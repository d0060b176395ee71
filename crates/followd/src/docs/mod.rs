//! The OpenAPI 3.1 document of every route, generated from the code that serves it, and its
//! rendering for people ([`mod@html`]).
//!
//! Request bodies are the command structs that [`crate::cmd`] parses into; answer bodies are the
//! structs the server serialises (`followd_protocol::api::reply`), wrapped in the envelope's schemas
//! (`followd_protocol::api::schema`); each operation lists the codes of the pipeline
//! ([`crate::pipeline::common_errors`]) and of its command ([`crate::cmd::spec`]). The paths are
//! [`followd_protocol::api::Api::ALL`] on each surface plus the fixed routes of
//! [`crate::surface::router`]; a test checks that the router serves exactly these.
//!
//! `cargo run -p followd -- openapi > crates/followd/openapi.json` writes the committed copy; a test
//! fails when it differs from what the code generates.

pub mod html;

use followd_protocol::api::schema::{answer, envelope_components, error_name, reply_components};
use followd_protocol::api::{Api, Family};
use serde_json::json;
use std::sync::OnceLock;
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ComponentsBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::tag::TagBuilder;
use utoipa::openapi::{
    ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder, Ref, RefOr, Required, ResponseBuilder, ResponsesBuilder,
    ServerBuilder,
};

use crate::cmd::{self, Spec};
use crate::pipeline::{common_errors, Surface};

/// The tags: one per surface, in the order the reference shows them.
pub const TAGS: [(&str, &str); 6] = [
    ("follow", "The Tencent-compatible follow REST API, for an app's admins (`/v4/follow/*`)."),
    ("account", "The Tencent-compatible account REST API, for an app's admins (`/v4/im_open_login_svc/*`)."),
    ("webhooks", "The webhook settings and the delivery log, for an app's admins (`/v4/callback_config/*`)."),
    ("bulk", "Moving a whole graph in and out, for an app's admins (`/bulk/v1/*`): what `followd export`, `followd import` and `followd migrate` call."),
    ("client", "The client API for end users, each with their own UserSig, acting only for themselves (`/v1/client/*`)."),
    ("server", "Health, metrics and this document; no authentication."),
];

const DESCRIPTION: &str = "A self-hosted, wire-compatible stand-in for Tencent Cloud Chat's Follow feature.

Every API call is a `POST` with a JSON body (no `Content-Type` header is required) and the URL parameters `sdkappid`, `identifier`, `usersig` (a TLSSigAPIv2 UserSig of `identifier`, made with the app's key) and optionally `random` and `contenttype=json`. The REST API (`/v4/…`) needs an app admin's UserSig; the client API (`/v1/client/…`) takes any user's and acts for that user.

Every answer of an API is HTTP 200 with a JSON envelope: `ActionStatus` (`OK` or `FAIL`), `ErrorCode` (0 on success), `ErrorInfo`, `RequestId` (names the request in the server's log) and, on follow APIs, `ErrorDisplay`. A success carries the API's fields as well; an error carries only the envelope. Each operation lists the codes it answers with (also as `x-error-codes`). This includes refusals under overload (`60007`) and timeouts.

A path that is not documented here gets HTTP 404 with a plain-text body, or, under `/v4/`, the `60009` envelope. A connection past `max_connections` is answered at once with the `60007` envelope, whatever its path.";

/// The document, built once.
pub fn document() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(build)
}

/// The document as pretty JSON, with a final newline (the committed copy's bytes).
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_pretty_json().expect("the document serialises") + "\n")
}

/// The reference page.
pub fn html() -> &'static str {
    static HTML: OnceLock<String> = OnceLock::new();
    HTML.get_or_init(|| {
        let doc = document();
        let mut order = html::Order { paths: doc.paths.paths.keys().cloned().collect(), ..Default::default() };
        for (name, s) in doc.components.iter().flat_map(|c| &c.schemas) {
            if let RefOr::T(Schema::Object(o)) = s {
                order.fields.insert(name.clone(), o.properties.keys().cloned().collect());
            }
        }
        html::render(&serde_json::from_str(json()).expect("the document is JSON"), &order)
    })
}

/// The reference page's stylesheet.
pub const STYLE: &str = include_str!("style.css");

/// The path of `api` on `surface`.
pub fn path(api: Api, surface: Surface) -> String {
    match surface {
        Surface::Rest => format!("/v4/{}/{}", api.service(), api.name()),
        Surface::Client => format!("/v1/client/follow/{}", api.name()),
    }
}

fn tag(api: Api, surface: Surface) -> &'static str {
    match (surface, api.family()) {
        (Surface::Client, _) => "client",
        (_, Family::Follow) => "follow",
        (_, Family::Account) => "account",
        (_, Family::Config) => "webhooks",
    }
}

fn query(name: &str, required: bool, schema: ObjectBuilder, description: &str) -> utoipa::openapi::path::Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Query)
        .required(if required { Required::True } else { Required::False })
        .schema(Some(schema))
        .description(Some(description))
        .build()
}

/// The URL parameters of every API call and of the WebSocket.
fn url_parameters(surface: Surface) -> Vec<utoipa::openapi::path::Parameter> {
    let who = match surface {
        Surface::Rest => "An app admin's UserID.",
        Surface::Client => "The calling user's UserID.",
    };
    vec![
        query("sdkappid", true, ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)), "The app's SDKAppID."),
        query("identifier", true, ObjectBuilder::new().schema_type(Type::String), who),
        query("usersig", true, ObjectBuilder::new().schema_type(Type::String), "A UserSig of `identifier`, made with the app's key."),
        query(
            "random",
            false,
            ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)).maximum(Some(4294967295u64)),
            "Any 32-bit number identifying the call; ignored.",
        ),
        query("contenttype", false, ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["json"])), "`json` if present."),
    ]
}

fn errors_extension(errors: &[(u32, &'static str)]) -> ExtensionsBuilder {
    let list: Vec<_> = errors.iter().map(|(code, meaning)| json!({"code": code, "meaning": meaning})).collect();
    ExtensionsBuilder::new().add("x-error-codes", list)
}

/// The codes of `api` on `surface`, the pipeline's first, each code once.
fn codes(spec: &Spec, family: Family, surface: Surface) -> Vec<(u32, &'static str)> {
    let mut v = common_errors(family, surface);
    for &(code, meaning) in spec.errors {
        if !v.iter().any(|(c, _)| *c == code) {
            v.push((code, meaning));
        }
    }
    v
}

/// Where an operation's description lists its error codes (the reference page shows them as a table).
pub const ERROR_CODES_HEADING: &str = "Error codes (`ErrorCode` of a FAIL answer):";

fn describe_codes(codes: &[(u32, &str)]) -> String {
    let mut s = format!("{ERROR_CODES_HEADING}\n");
    for (code, meaning) in codes {
        s.push_str(&format!("\n- `{code}`: {meaning}"));
    }
    s
}

fn api_operation(api: Api, surface: Surface, spec: &Spec) -> utoipa::openapi::path::Operation {
    let family = api.family();
    let codes = codes(spec, family, surface);
    let (operation_id, description) = match surface {
        Surface::Rest => (api.name().to_owned(), describe_codes(&codes)),
        Surface::Client => (
            format!("client_{}", api.name()),
            format!(
                "The REST command for an end user: `From_Account` may be omitted and means the caller. The SDK's limits apply.\n\n{}",
                describe_codes(&codes)
            ),
        ),
    };
    let example: serde_json::Value = serde_json::from_str(spec.example).expect("examples are JSON");
    let body = RequestBodyBuilder::new()
        .required(Some(Required::True))
        .description(Some("JSON; no Content-Type header is required."))
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(Ref::from_schema_name(&spec.request))).example(Some(example)).build(),
        )
        .build();
    let ok = ResponseBuilder::new()
        .description("Every answer of the API: HTTP 200 with the success or the error envelope.")
        .content("application/json", ContentBuilder::new().schema(Some(answer(family, Some(&spec.reply)))).build())
        .build();
    let mut params = url_parameters(surface);
    if surface == Surface::Client {
        params.push(
            ParameterBuilder::new()
                .name("X-Client-Platform")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(
                    "`Web`, `Android`, `iOS`, `Windows`, `macOS` or `iPad`: the webhooks' `OptPlatform` (anything else is `Unknown`).",
                ))
                .build(),
        );
    }
    OperationBuilder::new()
        .operation_id(Some(operation_id))
        .tag(tag(api, surface))
        .summary(Some(spec.summary))
        .description(Some(description))
        .parameters(Some(params))
        .request_body(Some(body))
        .responses(ResponsesBuilder::new().response("200", ok).build())
        .extensions(Some(errors_extension(&codes).build()))
        .build()
}

fn text(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content("text/plain; charset=utf-8", ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).build())
        .build()
}

fn get(id: &str, summary: &str, responses: Vec<(&str, utoipa::openapi::Response)>) -> PathItem {
    let mut r = ResponsesBuilder::new();
    for (status, response) in responses {
        r = r.response(status, response);
    }
    PathItem::new(
        HttpMethod::Get,
        OperationBuilder::new().operation_id(Some(id)).tag("server").summary(Some(summary)).responses(r.build()).build(),
    )
}

fn events_operation() -> PathItem {
    let refusal = |d: &str| {
        ResponseBuilder::new()
            .description(d)
            .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(error_name(Family::Follow)))).build())
            .build()
    };
    let codes = common_errors(Family::Follow, Surface::Client);
    let codes: Vec<_> = codes.into_iter().filter(|(c, _)| !matches!(*c, 60002 | 60003 | 30007 | 30006)).collect();
    let op = OperationBuilder::new()
        .operation_id(Some("client_events"))
        .tag("client")
        .summary(Some("Live notifications: a WebSocket that pushes a LiveMessage each time one of the caller's lists changes."))
        .description(Some(format!(
            "Upgrades to a WebSocket. Each text message is a `LiveMessage` (see `x-websocket-message`): `FollowingListChanged`, `FollowersListChanged` or `MutualListChanged`, with the users added or removed, for changes made by any caller, REST included. The server pings every `live_ping_interval_ms`; a client silent for `live_idle_timeout_ms` is closed (1001), one that falls 64 messages behind is closed (1008). Opening it counts as a client API call; one user may hold 16 at once.\n\n{}",
            describe_codes(&codes)
        )))
        .parameters(Some(url_parameters(Surface::Client)))
        .response(
            "101",
            ResponseBuilder::new()
                .description("Switching Protocols: the WebSocket is open; each message is a LiveMessage (`x-websocket-message`).")
                .extensions(Some(ExtensionsBuilder::new().add("x-websocket-message", json!({"$ref": "#/components/schemas/LiveMessage"})).build()))
                .build(),
        )
        .response("400", text("Not a WebSocket handshake (a header is missing or wrong)."))
        .response("401", refusal("The URL parameters or the UserSig were refused; ErrorCode says why."))
        .response("426", text("The connection cannot be upgraded."))
        .response("429", refusal("`60007`: over the user's budget (client_rate_limit_per_second), or the user already has 16 connections."))
        // One key per extensions map: utoipa keeps them in a HashMap, whose order would change the output.
        .extensions(Some(errors_extension(&codes).build()))
        .build();
    PathItem::new(HttpMethod::Get, op)
}

/// The admin bulk API (`crate::bulk::server`): signed like the REST API, answered with the account
/// API's envelope, except the export's success, which is an NDJSON stream.
fn bulk_operations(schemas: &mut Vec<(String, RefOr<Schema>)>) -> Vec<(&'static str, PathItem)> {
    use crate::bulk::{ImportReply, ImportRequest, SweepReply, SweepRequest};
    use utoipa::ToSchema;
    fn add<T: ToSchema>(v: &mut Vec<(String, RefOr<Schema>)>) -> String {
        v.push((T::name().into_owned(), T::schema()));
        T::schemas(v);
        T::name().into_owned()
    }
    let mut codes = common_errors(Family::Account, Surface::Rest);
    codes.retain(|(c, _)| *c != followd_protocol::code::RATE_LIMITED);
    let op = |id: &str,
              summary: &str,
              details: &str,
              request: Option<(String, serde_json::Value)>,
              ok: utoipa::openapi::Response,
              codes: &[(u32, &'static str)]| {
        let mut b = OperationBuilder::new()
            .operation_id(Some(id))
            .tag("bulk")
            .summary(Some(summary))
            .description(Some(format!("{details}\n\n{}", describe_codes(codes))))
            .parameters(Some(url_parameters(Surface::Rest)));
        if let Some((r, example)) = request {
            b = b.request_body(Some(
                RequestBodyBuilder::new()
                    .required(Some(Required::True))
                    .content(
                        "application/json",
                        ContentBuilder::new().schema(Some(Ref::from_schema_name(r))).example(Some(example)).build(),
                    )
                    .build(),
            ));
        }
        PathItem::new(
            HttpMethod::Post,
            b.responses(ResponsesBuilder::new().response("200", ok).build()).extensions(Some(errors_extension(codes).build())).build(),
        )
    };
    let envelope = |reply: &str| {
        ResponseBuilder::new()
            .description("HTTP 200 with the success or the error envelope.")
            .content("application/json", ContentBuilder::new().schema(Some(answer(Family::Account, Some(reply)))).build())
            .build()
    };
    let (import_req, import_rep) = (add::<ImportRequest>(schemas), add::<ImportReply>(schemas));
    let (sweep_req, sweep_rep) = (add::<SweepRequest>(schemas), add::<SweepReply>(schemas));
    let stream = ResponseBuilder::new()
        .description("The graph as NDJSON (`application/x-ndjson`, see the README's \"Moving a graph\"): a `Version` line, one line per account, one per follow, and an `End` line with the counts; an export without its `End` line was cut short. A refusal is the error envelope (`application/json`).")
        .content("application/x-ndjson", ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).build())
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name(error_name(Family::Account)))).build())
        .build();
    let mut import_codes = codes.clone();
    import_codes.push((
        Family::Account.invalid(),
        "a UserID, a profile field or a FollowTimeUs is invalid, or the batch is too large; nothing was applied",
    ));
    vec![
        (
            "/bulk/v1/export",
            op(
                "bulk_export",
                "Streams the app's accounts and follows from one consistent snapshot.",
                "The body is ignored. The stream reads one snapshot, so writes made meanwhile are either wholly in it or not at all; memory stays bounded whatever the graph's size.",
                None,
                stream,
                &codes,
            ),
        ),
        (
            "/bulk/v1/import",
            op(
                "bulk_import",
                "Applies one batch of accounts and follows in one transaction (at most 100,000 items, 32 MiB).",
                "Creates missing accounts, keeps the given follow times, keeps counts exact, refuses (and lists in `Rejected`) follows over the app's limits. A follow that exists is left unchanged, so a batch sent twice changes nothing the second time. Webhooks only with `Webhooks: true`. The client keeps its position in its file.",
                Some((
                    import_req,
                    json!({"Accounts": [{"UserID": "alice", "Nick": "Alice"}], "Follows": [{"From_Account": "alice", "To_Account": "bob", "FollowTimeUs": 1767225600123456i64}], "ReplaceRun": 8237461}),
                )),
                envelope(&import_rep),
                &import_codes,
            ),
        ),
        (
            "/bulk/v1/sweep",
            op(
                "bulk_sweep",
                "One step of `replace`: removes the app's follows that the run's batches did not name.",
                "After every batch of the file was imported with the same `ReplaceRun`, call with `Cursor: \"\"`, then with each `NextCursor`, until it is `\"\"` (the run's marks are then gone). A run that marked nothing is refused unless `AllowEmpty` is set. Delete webhooks only with `Webhooks: true`.",
                Some((sweep_req, json!({"Run": 8237461, "Cursor": ""}))),
                envelope(&sweep_rep),
                &import_codes,
            ),
        ),
    ]
}

fn build() -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut components = ComponentsBuilder::new();
    let mut schemas: Vec<(String, RefOr<Schema>)> = envelope_components();
    schemas.extend(reply_components());
    for surface in [Surface::Rest, Surface::Client] {
        for api in Api::ALL {
            if surface == Surface::Client && !api.on_client() {
                continue;
            }
            let spec = match surface {
                Surface::Rest => cmd::spec(api),
                Surface::Client => cmd::follow::client_spec(api),
            };
            schemas.extend(spec.request_schemas.iter().cloned());
            paths = paths.path(path(api, surface), PathItem::new(HttpMethod::Post, api_operation(api, surface, &spec)));
        }
        if surface == Surface::Client {
            paths = paths.path("/v1/client/events", events_operation());
        }
    }
    for (path, item) in bulk_operations(&mut schemas) {
        paths = paths.path(path, item);
    }
    let unavailable = "A component is down (`down: writer`, …) or the server is shutting down; the body says which.";
    paths = paths
        .path(
            "/healthz",
            get(
                "healthz",
                "Whether every component (writer, checkpointer, delivery, live) runs.",
                vec![("200", text("`ok`")), ("503", text(unavailable))],
            ),
        )
        .path(
            "/readyz",
            get(
                "readyz",
                "Whether the server takes requests (every component up, not shutting down).",
                vec![("200", text("`ready`")), ("503", text(unavailable))],
            ),
        )
        .path(
            "/metrics",
            get(
                "metrics",
                "Prometheus metrics (OpenMetrics text).",
                vec![(
                    "200",
                    ResponseBuilder::new()
                        .description("The metrics.")
                        .content(
                            crate::metrics::CONTENT_TYPE,
                            ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).build(),
                        )
                        .build(),
                )],
            ),
        )
        .path(
            "/openapi.json",
            get(
                "openapi",
                "This document.",
                vec![(
                    "200",
                    ResponseBuilder::new()
                        .description("The OpenAPI 3.1 document.")
                        .content(
                            "application/json",
                            ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::Object))).build(),
                        )
                        .build(),
                )],
            ),
        )
        .path(
            "/docs",
            get(
                "docs",
                "This document as a web page, for people.",
                vec![("200", html_response("text/html; charset=utf-8", "The reference."))],
            ),
        )
        .path(
            "/docs/style.css",
            get(
                "docs_style",
                "The reference page's stylesheet.",
                vec![("200", html_response("text/css; charset=utf-8", "The stylesheet."))],
            ),
        );
    // Two commands share a request schema: keep each component once.
    let mut seen = std::collections::HashSet::new();
    schemas.retain(|(name, _)| seen.insert(name.clone()));
    components = components.schemas_from_iter(schemas);
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("followd")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(DESCRIPTION))
                .license(Some(utoipa::openapi::LicenseBuilder::new().name("Apache-2.0").identifier(Some("Apache-2.0")).build())),
        )
        .servers(Some([ServerBuilder::new().url("http://127.0.0.1:5080").description(Some("The default listen address")).build()]))
        .tags(Some(TAGS.map(|(name, d)| TagBuilder::new().name(name).description(Some(d)).build())))
        .paths(paths.build())
        .components(Some(components.build()))
        .build()
}

fn html_response(media: &str, description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(media, ContentBuilder::new().schema(Some(ObjectBuilder::new().schema_type(Type::String))).build())
        .build()
}

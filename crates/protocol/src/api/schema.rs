//! OpenAPI schemas of the [`super::Envelope`] (feature `openapi`).
//!
//! The answer bodies derive `utoipa::ToSchema` beside their `Serialize`; the envelope is one generic
//! struct with a flattened body, which a derive cannot describe, so its four shapes are built here
//! from the same field names: a success with and without `ErrorDisplay`, an error with and without it.
//! A success and an error can never both match (`ActionStatus` is `OK` in one, `FAIL` in the other),
//! so an answer is described as `oneOf` the two.

use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::ToSchema;

use super::reply::*;
use super::Family;

/// The component name of a success envelope's status fields.
pub fn ok_name(family: Family) -> &'static str {
    if family.has_error_display() {
        "FollowOkStatus"
    } else {
        "OkStatus"
    }
}

/// The component name of an error envelope.
pub fn error_name(family: Family) -> &'static str {
    if family.has_error_display() {
        "FollowError"
    } else {
        "Error"
    }
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn status(ok: bool, display: bool) -> Schema {
    let mut o = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property(
            "ActionStatus",
            string().enum_values(Some([if ok { "OK" } else { "FAIL" }])).description(Some(if ok {
                "OK: the request was applied (per-item results may still carry codes)."
            } else {
                "FAIL: the request was refused; nothing was applied."
            })),
        )
        .required("ActionStatus");
    o = if ok {
        o.property("ErrorCode", ObjectBuilder::new().schema_type(Type::Integer).enum_values(Some([0])))
            .property("ErrorInfo", string().enum_values(Some([""])))
    } else {
        o.property(
            "ErrorCode",
            ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(1)).description(Some("The Tencent error code.")),
        )
        .property("ErrorInfo", string().description(Some("What went wrong.")))
    };
    o = o.required("ErrorCode").required("ErrorInfo");
    if display {
        o = o
            .property("ErrorDisplay", string().enum_values(Some([""])).description(Some("Always \"\", as Tencent's follow APIs send it.")));
        o = o.required("ErrorDisplay");
    } else {
        o = o.property(
            "ErrorDisplay",
            string()
                .enum_values(Some([""]))
                .description(Some("Only in answers refused before the request was read (too many open connections).")),
        );
    }
    o.property("RequestId", string().description(Some("Names the request in the server's log."))).required("RequestId").into()
}

/// The envelope's components: `OkStatus`, `FollowOkStatus`, `Error` and `FollowError`.
pub fn envelope_components() -> Vec<(String, RefOr<Schema>)> {
    let mut v = Vec::new();
    for family in [Family::Follow, Family::Account] {
        let display = family.has_error_display();
        v.push((ok_name(family).to_owned(), RefOr::T(status(true, display))));
        v.push((error_name(family).to_owned(), RefOr::T(status(false, display))));
    }
    v
}

/// A success answer of `family`: the body's fields (when it has any) and the status fields.
pub fn success(family: Family, body: Option<&str>) -> RefOr<Schema> {
    let ok = Ref::from_schema_name(ok_name(family));
    match body {
        Some(name) => AllOfBuilder::new().item(Ref::from_schema_name(name)).item(ok).into(),
        None => RefOr::Ref(ok),
    }
}

/// Any answer of `family` with HTTP 200: the success or the error envelope.
pub fn answer(family: Family, body: Option<&str>) -> RefOr<Schema> {
    OneOfBuilder::new().item(success(family, body)).item(Ref::from_schema_name(error_name(family))).into()
}

/// Every answer body's schema and the schemas they refer to, by component name.
pub fn reply_components() -> Vec<(String, RefOr<Schema>)> {
    let mut v = Vec::new();
    fn add<T: ToSchema>(v: &mut Vec<(String, RefOr<Schema>)>) {
        v.push((T::name().into_owned(), T::schema()));
        T::schemas(v);
    }
    add::<Empty>(&mut v);
    add::<ResultItems>(&mut v);
    add::<CheckItems>(&mut v);
    add::<FollowPage>(&mut v);
    add::<FollowInfo>(&mut v);
    add::<FailAccounts>(&mut v);
    add::<AccountItems>(&mut v);
    add::<CallbackResponse>(&mut v);
    add::<TokenResponse>(&mut v);
    add::<EventPage>(&mut v);
    add::<AttemptPage>(&mut v);
    add::<Replayed>(&mut v);
    add::<LiveMessage>(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::super::{ApiError, Envelope, Family};
    use super::*;

    /// The keys the envelope serialises are the ones its schemas name, required where always sent.
    #[test]
    fn envelope_schemas_name_the_serialised_keys() {
        let components = envelope_components();
        let schema = |name: &str| serde_json::to_value(&components.iter().find(|(n, _)| n == name).unwrap().1).unwrap();
        for family in [Family::Follow, Family::Account, Family::Config] {
            for ok in [true, false] {
                let result: Result<Empty, ApiError> = if ok { Ok(Empty {}) } else { Err(ApiError::new(30001, "x")) };
                let sent = serde_json::to_value(Envelope::new(family, "r", &result)).unwrap();
                let s = schema(if ok { ok_name(family) } else { error_name(family) });
                let sent_keys: Vec<&String> = sent.as_object().unwrap().keys().collect();
                let required: Vec<&str> = s["required"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
                for k in &sent_keys {
                    assert!(s["properties"].get(k.as_str()).is_some(), "{k} is sent but not in the schema");
                }
                for k in &required {
                    assert!(sent.get(*k).is_some(), "{k} is required but not sent");
                }
            }
        }
    }
}

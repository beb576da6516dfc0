//! Errors as a kube-apiserver reports them. Every failure the emulator answers is an [`ApiError`]:
//! either a `meta.k8s.io/v1` `Status` object with the real HTTP code, reason, details and causes,
//! or the plain-text `404 page not found` the real server's mux gives for a path it does not
//! serve. Keeping all constructors here means the message formats (which clients parse and users
//! read) match the real server in one place.

use serde_json::{Map, Value, json};

/// A failed request, as it goes on the wire.
#[derive(Clone, Debug)]
pub(crate) enum ApiError {
    /// A JSON `Status` body.
    Status(Box<StatusError>),
    /// The mux's plain-text `404 page not found` (unknown group, version or resource type).
    PageNotFound,
}

/// The fields of a failure `Status`.
#[derive(Clone, Debug)]
pub(crate) struct StatusError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

/// The kind of a field-level validation error, as in `k8s.io/apimachinery/pkg/util/validation/field`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldErrorKind {
    Required,
    Invalid,
    Forbidden,
    Duplicate,
    NotSupported,
    NotFound,
}

/// One `details.causes[]` entry of a 422 `Invalid` Status.
#[derive(Clone, Debug)]
pub(crate) struct FieldError {
    pub kind: FieldErrorKind,
    pub field: String,
    pub value: Option<Value>,
    pub detail: String,
}

impl FieldError {
    pub(crate) fn new(
        kind: FieldErrorKind,
        field: impl Into<String>,
        value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            kind,
            field: field.into(),
            value,
            detail: detail.into(),
        }
    }
    pub(crate) fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Required, field, None, detail)
    }
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: &Value,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(FieldErrorKind::Invalid, field, Some(value.clone()), detail)
    }
    pub(crate) fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Forbidden, field, None, detail)
    }
    /// `Unsupported value`; `supported` lists the allowed values.
    pub(crate) fn not_supported(
        field: impl Into<String>,
        value: &Value,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Self::new(
            FieldErrorKind::NotSupported,
            field,
            Some(value.clone()),
            list.join(", "),
        )
    }
    pub(crate) fn immutable(field: impl Into<String>, value: &Value) -> Self {
        Self::invalid(field, value, "field is immutable")
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::NotFound => "FieldValueNotFound",
        }
    }

    /// The cause message, without the field prefix (as the real server puts it in `causes[]`).
    pub(crate) fn message(&self) -> String {
        let value = self.value.as_ref().map(go_value).unwrap_or_default();
        let with_detail = |head: String| {
            if self.detail.is_empty() {
                head
            } else {
                format!("{head}: {}", self.detail)
            }
        };
        match self.kind {
            FieldErrorKind::Required => with_detail("Required value".into()),
            FieldErrorKind::Invalid => with_detail(format!("Invalid value: {value}")),
            FieldErrorKind::Forbidden => with_detail("Forbidden".into()),
            FieldErrorKind::Duplicate => format!("Duplicate value: {value}"),
            FieldErrorKind::NotSupported => format!(
                "Unsupported value: {value}: supported values: {}",
                self.detail
            ),
            FieldErrorKind::NotFound => format!("Not found: {value}"),
        }
    }
}

/// Formats a value the way Go's `%#v`-ish error messages show it: strings quoted, the rest as JSON.
pub(crate) fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// `resource` or `resource.group`, as used in NotFound/AlreadyExists/Conflict messages.
pub(crate) fn qualified_resource(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

fn details(name: &str, group: &str, kind: &str) -> Map<String, Value> {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !group.is_empty() {
        d.insert("group".into(), json!(group));
    }
    if !kind.is_empty() {
        d.insert("kind".into(), json!(kind));
    }
    d
}

impl ApiError {
    pub(crate) fn new(
        code: u16,
        reason: &'static str,
        message: impl Into<String>,
        details: Option<Value>,
    ) -> Self {
        ApiError::Status(Box::new(StatusError {
            code,
            reason,
            message: message.into(),
            details,
        }))
    }

    pub(crate) fn code(&self) -> u16 {
        match self {
            ApiError::Status(s) => s.code,
            ApiError::PageNotFound => 404,
        }
    }

    /// The `Status` object for this error (`None` for the plain-text 404).
    pub(crate) fn to_status(&self) -> Option<Value> {
        let ApiError::Status(s) = self else {
            return None;
        };
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": s.message, "reason": s.reason, "code": s.code,
        });
        if let Some(d) = &s.details {
            status["details"] = d.clone();
        }
        if s.reason.is_empty() {
            status.as_object_mut().map(|m| m.remove("reason"));
        }
        Some(status)
    }

    pub(crate) fn not_found(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!("{} {name:?} not found", qualified_resource(group, resource));
        Self::new(
            404,
            "NotFound",
            msg,
            Some(Value::Object(details(name, group, resource))),
        )
    }

    pub(crate) fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        let msg = format!(
            "{} {name:?} already exists",
            qualified_resource(group, resource)
        );
        Self::new(
            409,
            "AlreadyExists",
            msg,
            Some(Value::Object(details(name, group, resource))),
        )
    }

    /// The optimistic-concurrency conflict of an update with a stale `resourceVersion`.
    pub(crate) fn conflict(group: &str, resource: &str, name: &str, why: &str) -> Self {
        let msg = format!(
            "Operation cannot be fulfilled on {} {name:?}: {why}",
            qualified_resource(group, resource)
        );
        Self::new(
            409,
            "Conflict",
            msg,
            Some(Value::Object(details(name, group, resource))),
        )
    }

    pub(crate) fn stale_resource_version(group: &str, resource: &str, name: &str) -> Self {
        Self::conflict(
            group,
            resource,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 `Invalid` for `kind` (a Kind, e.g. `Deployment`) with one cause per field error.
    pub(crate) fn invalid(group: &str, kind: &str, name: &str, errors: &[FieldError]) -> Self {
        let parts: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message()))
            .collect();
        let joined = if parts.len() == 1 {
            parts[0].clone()
        } else {
            format!("[{}]", parts.join(", "))
        };
        let qualified = qualified_resource(group, kind);
        let msg = format!("{qualified} {name:?} is invalid: {joined}");
        let causes: Vec<Value> = errors
            .iter()
            .map(|e| json!({"reason": e.reason(), "message": e.message(), "field": e.field}))
            .collect();
        let mut d = details(name, group, kind);
        d.insert("causes".into(), Value::Array(causes));
        Self::new(422, "Invalid", msg, Some(Value::Object(d)))
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message, None)
    }

    pub(crate) fn forbidden(
        group: &str,
        resource: &str,
        name: &str,
        why: &str,
        causes: Vec<Value>,
    ) -> Self {
        let msg = format!(
            "{} {name:?} is forbidden: {why}",
            qualified_resource(group, resource)
        );
        let mut d = details(name, group, resource);
        if !causes.is_empty() {
            d.insert("causes".into(), Value::Array(causes));
        }
        Self::new(403, "Forbidden", msg, Some(Value::Object(d)))
    }

    /// 403 for a create in a namespace that is being deleted (the NamespaceLifecycle admission).
    pub(crate) fn namespace_terminating(
        group: &str,
        resource: &str,
        name: &str,
        namespace: &str,
    ) -> Self {
        let why = format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        );
        let cause = json!({
            "reason": "NamespaceTerminating",
            "message": format!("namespace {namespace} is being terminated"),
            "field": "metadata.namespace",
        });
        Self::forbidden(group, resource, name, &why, vec![cause])
    }

    /// 404 for a write into a namespace that does not exist.
    pub(crate) fn namespace_not_found(namespace: &str) -> Self {
        Self::not_found("", "namespaces", namespace)
    }

    pub(crate) fn method_not_allowed(message: impl Into<String>) -> Self {
        Self::new(405, "MethodNotAllowed", message, None)
    }

    pub(crate) fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized", None)
    }

    pub(crate) fn unsupported_media_type(content_type: &str, accepted: &str) -> Self {
        let msg = format!(
            "the body of the request was in an unknown format - accepted media types include: {accepted}"
        );
        let _ = content_type;
        Self::new(415, "UnsupportedMediaType", msg, None)
    }

    /// 409 for a server-side apply that would change fields owned by other managers.
    pub(crate) fn apply_conflict(message: String, causes: Vec<Value>) -> Self {
        Self::new(409, "Conflict", message, Some(json!({ "causes": causes })))
    }

    /// 410 `Expired`, sent as the object of a watch `ERROR` event.
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message, None)
    }

    /// The storage layer's refusal of a create that carries a resourceVersion: a bare 500.
    pub(crate) fn resource_version_on_create() -> Self {
        Self::new(
            500,
            "",
            "resourceVersion should not be set on objects to be created",
            None,
        )
    }

    /// A 422 with a bare message, e.g. for a JSON patch that does not apply.
    pub(crate) fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, "Invalid", message, None)
    }
}

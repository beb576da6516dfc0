//! Label and field selectors: the `labelSelector` query syntax (`k=v`, `k==v`, `k!=v`, `k`,
//! `!k`, `k in (a,b)`, `k notin (a)`, `k>1`, comma-joined), the `matchLabels`/`matchExpressions`
//! object form used by workload selectors, and the `fieldSelector` fields the server supports.

use serde_json::Value;

use super::status::ApiError;

#[derive(Clone, Debug, PartialEq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

fn bad(sel: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!(
        "unable to parse requirement: {why} (selector {sel:?})"
    ))
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '_' | '-')
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set_values(s: &str, sel: &str) -> Result<Vec<String>, ApiError> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad(sel, "expected (values)"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses the query-string form.
    pub(crate) fn parse(sel: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top(sel)
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            reqs.push(Self::requirement(part, sel)?);
        }
        Ok(LabelSelector(reqs))
    }

    fn requirement(part: &str, sel: &str) -> Result<Requirement, ApiError> {
        if let Some(key) = part.strip_prefix('!') {
            let key = key.trim();
            if key.is_empty() || !key.chars().all(is_key_char) {
                return Err(bad(sel, "invalid key after '!'"));
            }
            return Ok(Requirement::NotExists(key.to_string()));
        }
        let key_end = part.find(|c: char| !is_key_char(c)).unwrap_or(part.len());
        let (key, rest) = (part[..key_end].to_string(), part[key_end..].trim_start());
        if key.is_empty() {
            return Err(bad(sel, "missing key"));
        }
        let value = |s: &str| -> Result<String, ApiError> {
            let v = s.trim();
            if v.chars().all(|c| is_key_char(c) && c != '/') {
                Ok(v.to_string())
            } else {
                Err(bad(sel, "invalid value"))
            }
        };
        let number = |s: &str| {
            s.trim()
                .parse::<i64>()
                .map_err(|_| bad(sel, "expected an integer"))
        };
        if rest.is_empty() {
            Ok(Requirement::Exists(key))
        } else if let Some(v) = rest.strip_prefix("==") {
            Ok(Requirement::Equals(key, value(v)?))
        } else if let Some(v) = rest.strip_prefix("!=") {
            Ok(Requirement::NotEquals(key, value(v)?))
        } else if let Some(v) = rest.strip_prefix('=') {
            Ok(Requirement::Equals(key, value(v)?))
        } else if let Some(v) = rest.strip_prefix('>') {
            Ok(Requirement::GreaterThan(key, number(v)?))
        } else if let Some(v) = rest.strip_prefix('<') {
            Ok(Requirement::LessThan(key, number(v)?))
        } else if let Some(v) = rest.strip_prefix("notin") {
            Ok(Requirement::NotIn(key, set_values(v, sel)?))
        } else if let Some(v) = rest.strip_prefix("in") {
            Ok(Requirement::In(key, set_values(v, sel)?))
        } else {
            Err(bad(sel, "unknown operator"))
        }
    }

    /// Parses the `{matchLabels, matchExpressions}` object form.
    pub(crate) fn from_object(v: &Value) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for (k, val) in v["matchLabels"].as_object().into_iter().flatten() {
            reqs.push(Requirement::Equals(
                k.clone(),
                val.as_str().unwrap_or_default().to_string(),
            ));
        }
        for e in v["matchExpressions"].as_array().into_iter().flatten() {
            let key = e["key"].as_str().unwrap_or_default().to_string();
            let values: Vec<String> = super::string_list(e.get("values"));
            reqs.push(match e["operator"].as_str().unwrap_or_default() {
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::NotExists(key),
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            });
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether a `labels` map (or null) satisfies every requirement.
    pub(crate) fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v),
            Requirement::NotEquals(k, v) => get(k) != Some(v),
            Requirement::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
            Requirement::GreaterThan(k, n) => get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l > *n),
            Requirement::LessThan(k, n) => get(k)
                .and_then(|l| l.parse::<i64>().ok())
                .is_some_and(|l| l < *n),
        })
    }
}

/// A parsed field selector over the fields every type supports (plus a Secret's `type`).
#[derive(Clone, Debug, Default)]
pub(crate) struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub(crate) fn parse(sel: &str, kind: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in sel.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{sel}'; can't understand '{part}'"
                )));
            };
            let field = field.trim();
            let supported = matches!(field, "metadata.name" | "metadata.namespace")
                || (kind == "Secret" && field == "type");
            if !supported {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {field}"
                )));
            }
            reqs.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    pub(crate) fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let pointer = format!("/{}", field.replace('.', "/"));
            let actual = obj
                .pointer(&pointer)
                .and_then(Value::as_str)
                .unwrap_or_default();
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selector_syntax() {
        let labels = json!({"app": "web", "tier": "front", "n": "5"});
        let cases = [
            ("app=web", true),
            ("app==web,tier!=back", true),
            ("app in (web, api),!missing", true),
            ("tier notin (front)", false),
            ("tier", true),
            ("!tier", false),
            ("n>3,n<6", true),
            ("", true),
        ];
        for (sel, want) in cases {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&labels),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("app in web").is_err());
    }
}

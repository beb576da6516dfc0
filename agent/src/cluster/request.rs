//! Every call to the API server goes through here: one request, its error decoded without
//! assuming a JSON body, and retried when the server asks for patience.
//!
//! kube's typed `Api` drops response headers, so `Retry-After` could not be honoured through
//! it; these calls use the raw client (`Client::send`) with requests built by `kube::core`.
//!
//! *Invariant:* 429 and 5xx (and no answer at all) are retried a few times, honouring
//! `Retry-After`; other 4xx answers are final, except a 404 right after a CRD was
//! established (`Retry::AlsoNotFound`), which is the API server catching up.

use std::time::Duration;

use kube::client::Body;
use kube::core::Status;
use serde_json::Value;
use tracing::debug;

use super::Cluster;

/// How many times a request is sent at most.
const ATTEMPTS: u32 = 5;
/// First pause between attempts when the server gives no `Retry-After`; doubles each time.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// A `Retry-After` larger than this is cut down: the caller retries the deployment later anyway.
const LONGEST_PAUSE: Duration = Duration::from_secs(10);

/// A call the API server refused, or that got no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ApiError {
    /// HTTP status; 0 when there was no answer (connection refused, timeout, bad request).
    pub code: u16,
    /// The Status object's `reason` when the body was one, else empty.
    pub reason: String,
    /// The Status object's `message`, else the body as text, else the HTTP status.
    pub message: String,
    /// From the `Retry-After` header or `details.retryAfterSeconds`.
    pub retry_after: Option<Duration>,
}

impl ApiError {
    /// An error that happened on our side of the wire.
    pub fn local(message: impl Into<String>) -> Self {
        Self {
            code: 0,
            reason: String::new(),
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }

    /// 409: an apply conflict, or a delete whose preconditions no longer hold.
    pub fn is_conflict(&self) -> bool {
        self.code == 409
    }

    /// Worth sending again: no answer, throttled, or a server-side failure.
    pub fn is_transient(&self) -> bool {
        self.code == 0 || self.code == 429 || self.code >= 500
    }

    /// Decodes an error response. The body may be a `Status` object, plain text
    /// (`404 page not found` for an unserved resource type, a throttling message) or empty.
    pub(crate) fn from_response(code: u16, retry_after_header: Option<&str>, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let status = serde_json::from_slice::<Value>(body)
            .ok()
            .filter(|v| v.get("kind").and_then(Value::as_str) == Some("Status"))
            .and_then(|v| serde_json::from_value::<Status>(v).ok());
        let header_delay = retry_after_header
            .and_then(|h| h.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let (reason, message, details_delay) = match status {
            Some(s) => {
                let delay = s
                    .details
                    .as_ref()
                    .map(|d| d.retry_after_seconds)
                    .filter(|&s| s > 0);
                (
                    s.reason,
                    s.message,
                    delay.map(|s| Duration::from_secs(s.into())),
                )
            }
            None => (String::new(), text.trim().to_string(), None),
        };
        let message = if message.is_empty() {
            format!("the API server answered HTTP {code}")
        } else {
            message
        };
        Self {
            code,
            reason,
            message,
            retry_after: header_delay.or(details_delay),
        }
    }
}

/// Which refusals are worth another attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Only no answer, 429 and 5xx.
    Transient,
    /// Those, and 404: for custom resources whose CRD was established moments ago.
    AlsoNotFound,
}

impl Retry {
    fn wants(self, e: &ApiError) -> bool {
        e.is_transient() || (self == Retry::AlsoNotFound && e.is_not_found())
    }
}

/// The pause before attempt `attempt + 1`: the server's wish, else 100 ms doubling, with jitter.
pub(crate) fn pause(e: &ApiError, attempt: u32) -> Duration {
    let base = e
        .retry_after
        .unwrap_or_else(|| FIRST_PAUSE * 2u32.pow(attempt.min(10)));
    let jitter = rand::random_range(0..=base.as_millis().min(1000) as u64 / 4);
    (base + Duration::from_millis(jitter)).min(LONGEST_PAUSE)
}

impl Cluster {
    /// Sends the request `build` makes, retrying as `retry` allows; returns the response body.
    pub(crate) async fn call<F>(&self, retry: Retry, build: F) -> Result<Vec<u8>, ApiError>
    where
        F: Fn() -> Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    {
        let mut attempt = 0;
        loop {
            let request = build()
                .map_err(|e| ApiError::local(format!("could not build the request: {e}")))?;
            let (method, uri) = (request.method().clone(), request.uri().clone());
            match self.send_once(request).await {
                Ok(body) => return Ok(body),
                Err(e) if attempt + 1 < ATTEMPTS && retry.wants(&e) => {
                    let delay = pause(&e, attempt);
                    debug!(%method, %uri, code = e.code, error = %e.message, ?delay, "retrying API call");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_once(&self, request: http::Request<Vec<u8>>) -> Result<Vec<u8>, ApiError> {
        let response = self
            .client
            .send(request.map(Body::from))
            .await
            .map_err(|e| ApiError::local(format!("no answer from the API server: {e}")))?;
        let code = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| ApiError::local(format!("the API server's answer broke off: {e}")))?;
        if (200..300).contains(&code) {
            Ok(body.to_vec())
        } else {
            Err(ApiError::from_response(code, retry_after.as_deref(), &body))
        }
    }

    /// Sends and decodes a JSON answer.
    pub(crate) async fn call_json<F>(&self, retry: Retry, build: F) -> Result<Value, ApiError>
    where
        F: Fn() -> Result<http::Request<Vec<u8>>, kube::core::request::Error>,
    {
        let body = self.call(retry, build).await?;
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::local(format!("the API server's answer is not JSON: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bodies_give_reason_and_message() {
        let body = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":422,"reason":"Invalid",
            "message":"Deployment.apps \"Bad_Name\" is invalid: metadata.name: Invalid value"}"#;
        let e = ApiError::from_response(422, None, body);
        assert_eq!(e.code, 422);
        assert_eq!(e.reason, "Invalid");
        assert_eq!(
            e.message,
            "Deployment.apps \"Bad_Name\" is invalid: metadata.name: Invalid value"
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn plain_text_and_empty_bodies_are_kept_as_text() {
        let e = ApiError::from_response(404, None, b"404 page not found\n");
        assert_eq!(
            (e.code, e.message.as_str(), e.reason.as_str()),
            (404, "404 page not found", "")
        );
        assert!(e.is_not_found());
        let e = ApiError::from_response(503, None, b"");
        assert_eq!(e.message, "the API server answered HTTP 503");
        assert!(e.is_transient());
        // JSON that is not a Status is text too.
        let e = ApiError::from_response(500, None, br#"{"error":"x"}"#);
        assert_eq!(e.message, r#"{"error":"x"}"#);
    }

    #[test]
    fn retry_after_comes_from_header_or_details() {
        let e = ApiError::from_response(
            429,
            Some("1"),
            b"Too many requests, please try again later.",
        );
        assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
        assert!(e.is_transient());
        let body =
            br#"{"kind":"Status","code":500,"message":"etcd","details":{"retryAfterSeconds":2}}"#;
        assert_eq!(
            ApiError::from_response(500, None, body).retry_after,
            Some(Duration::from_secs(2))
        );
        // An HTTP-date is not understood: fall back to our own pacing.
        assert_eq!(
            ApiError::from_response(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), b"").retry_after,
            None
        );
    }

    #[test]
    fn pauses_honour_retry_after_and_stay_bounded() {
        let mut e = ApiError::from_response(429, Some("1"), b"");
        let p = pause(&e, 0);
        assert!(
            p >= Duration::from_secs(1) && p <= Duration::from_millis(1250),
            "{p:?}"
        );
        e.retry_after = Some(Duration::from_secs(3600));
        assert_eq!(pause(&e, 0), LONGEST_PAUSE);
        e.retry_after = None;
        for attempt in 0..ATTEMPTS {
            let p = pause(&e, attempt);
            let base = FIRST_PAUSE * 2u32.pow(attempt);
            assert!(
                p >= base && p <= base + base / 4 + Duration::from_millis(1),
                "{attempt}: {p:?}"
            );
        }
    }

    #[test]
    fn only_the_right_refusals_are_retried() {
        let not_found = ApiError::from_response(404, None, b"404 page not found");
        let invalid = ApiError::from_response(422, None, b"");
        let conflict = ApiError::from_response(409, None, b"");
        assert!(!Retry::Transient.wants(&not_found));
        assert!(Retry::AlsoNotFound.wants(&not_found));
        assert!(!Retry::AlsoNotFound.wants(&invalid));
        assert!(!Retry::Transient.wants(&conflict));
        assert!(Retry::Transient.wants(&ApiError::local("connection refused")));
    }
}

//! http:// — smart HTTP, by running `git http-backend` as a CGI program for every request, the
//! way Apache or nginx+fcgiwrap would.
//!
//! The request becomes the CGI environment (`PATH_INFO`, `QUERY_STRING`, `CONTENT_TYPE`, ...) plus
//! stdin; the backend's stdout is a CGI response: header lines (`Status:` among them), a blank
//! line, then the body, which is streamed back as it is produced. Request and response bodies are
//! copied concurrently, since upload-pack may answer before it has read everything.
//!
//! A private repository's requests are answered `401` with a `WWW-Authenticate: Basic`
//! challenge, before any backend runs, unless they carry its credentials.
//!
//! Two headers need translating: `Git-Protocol` (protocol v2, which gix uses) becomes
//! `HTTP_GIT_PROTOCOL`, and `Content-Encoding: gzip` (git gzips large negotiation requests)
//! becomes `HTTP_CONTENT_ENCODING` so the backend inflates the body itself.

use std::convert::Infallible;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{Context as _, ensure};
use axum::body::{Body, Bytes};
use futures::Stream;
use hyper::body::{Body as _, Incoming};
use hyper::http::response::Builder;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, Level, debug, warn};

use super::{SHUTDOWN_GRACE, Shared, accept_loop, log_stderr};

/// Request headers passed to the backend, as (CGI variable, header). `GIT_PROTOCOL` is set
/// directly too, for gits older than 2.34 that do not translate `HTTP_GIT_PROTOCOL` themselves.
const CGI_HEADERS: &[(&str, &str)] = &[
    ("CONTENT_TYPE", "content-type"),
    ("CONTENT_LENGTH", "content-length"),
    ("HTTP_CONTENT_ENCODING", "content-encoding"),
    ("HTTP_GIT_PROTOCOL", "git-protocol"),
    ("GIT_PROTOCOL", "git-protocol"),
];

/// A backend whose headers run past this is broken; http-backend writes a few hundred bytes.
const MAX_CGI_HEAD: usize = 64 * 1024;

/// Serves smart HTTP on `listener` until `shutdown`.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let (conn_shutdown, conn_tasks) = (shutdown.clone(), tasks.clone());
    accept_loop(listener, shutdown, tasks, move |stream, peer| {
        let cgi = Cgi {
            shared: shared.clone(),
            tasks: conn_tasks.clone(),
            peer,
        };
        connection(stream, cgi, conn_shutdown.clone())
    })
    .await;
}

/// One HTTP/1.1 connection; on shutdown it finishes the current response (for a grace period)
/// and closes.
async fn connection(stream: TcpStream, cgi: Cgi, shutdown: CancellationToken) {
    let service = service_fn(move |request| {
        let cgi = cgi.clone();
        async move { Ok::<_, Infallible>(cgi.respond(request).await) }
    });
    let mut connection =
        pin!(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, connection).await {
                Ok(result) => result,
                Err(_elapsed) => return debug!("connection abandoned after the grace period"),
            }
        }
    };
    if let Err(error) = result {
        debug!(%error, "connection failed");
    }
}

/// What a request needs to run the backend.
#[derive(Clone)]
struct Cgi {
    shared: Arc<Shared>,
    tasks: TaskTracker,
    peer: SocketAddr,
}

impl Cgi {
    async fn respond(self, request: Request<Incoming>) -> Response<Body> {
        let (method, path) = (request.method().clone(), request.uri().path().to_owned());
        match self.run(request).await {
            Ok(response) => {
                debug!(%method, path, status = response.status().as_u16(), "request served");
                response
            }
            Err(error) => {
                warn!(%method, path, error = format!("{error:#}"), "http-backend failed");
                let mut response = Response::new(Body::from(format!("{error:#}\n")));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                response
            }
        }
    }

    async fn run(&self, request: Request<Incoming>) -> anyhow::Result<Response<Body>> {
        let (parts, body) = request.into_parts();
        let path_info = percent_decode(parts.uri.path()).context("decoding the request path")?;
        let query = parts.uri.query().unwrap_or_default();
        let authorization = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if !self.shared.authorized(&path_info, authorization) {
            return Ok(Response::builder()
                .status(StatusCode::UNAUTHORIZED)
                .header("www-authenticate", r#"Basic realm="flotilla test git""#)
                .body(Body::from("authentication required\n"))?);
        }
        if is_upload_pack(&parts.method, &path_info, query) {
            self.shared.count_upload_pack();
        }
        let mut command = tokio::process::Command::from(self.shared.git.command());
        command
            .arg("http-backend")
            .env("GIT_PROJECT_ROOT", &self.shared.root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("GATEWAY_INTERFACE", "CGI/1.1")
            .env("SERVER_PROTOCOL", format!("{:?}", parts.version))
            .env("REQUEST_METHOD", parts.method.as_str())
            .env("PATH_INFO", &path_info)
            .env("QUERY_STRING", query)
            .env("REMOTE_ADDR", self.peer.ip().to_string())
            .env("REMOTE_PORT", self.peer.port().to_string());
        for (variable, header) in CGI_HEADERS {
            if let Some(value) = parts.headers.get(*header).and_then(|v| v.to_str().ok()) {
                command.env(variable, value);
            }
        }
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .kill_on_drop(true)
            .spawn()
            .context("spawning git http-backend")?;

        let stdin = child.stdin.take().context("http-backend has no stdin")?;
        self.tasks.spawn(feed_body(body, stdin).in_current_span());
        let stderr = child.stderr.take().context("http-backend has no stderr")?;
        self.tasks
            .spawn(log_stderr(stderr, Level::WARN).in_current_span());
        let mut stdout = child.stdout.take().context("http-backend has no stdout")?;

        let (head, rest) = read_cgi_head(&mut stdout).await?;
        let response = cgi_response(&head)?;
        Ok(response.body(Body::from_stream(body_stream(rest, stdout, child)))?)
    }
}

/// Whether a request is part of a fetch: the ref advertisement or an upload-pack round.
fn is_upload_pack(method: &Method, path: &str, query: &str) -> bool {
    match *method {
        Method::GET => {
            path.ends_with("/info/refs") && query.split('&').any(|p| p == "service=git-upload-pack")
        }
        Method::POST => path.ends_with("/git-upload-pack"),
        _ => false,
    }
}

/// Copies the request body to the backend's stdin, then closes it so the backend sees the end.
async fn feed_body(mut body: Incoming, mut stdin: ChildStdin) {
    while let Some(frame) = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let data = match frame {
            Ok(frame) => frame.into_data().unwrap_or_default(),
            Err(error) => return debug!(%error, "request body failed"),
        };
        if let Err(error) = stdin.write_all(&data).await {
            // The backend may answer (an error, say) without reading everything.
            return debug!(%error, "http-backend stopped reading its stdin");
        }
    }
}

/// Reads the CGI header block; returns it and whatever of the body came with it.
async fn read_cgi_head(stdout: &mut ChildStdout) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0; 4096];
    loop {
        if let Some((end, separator)) = find_blank_line(&buffer) {
            let rest = buffer.split_off(end + separator);
            buffer.truncate(end);
            return Ok((buffer, rest));
        }
        ensure!(
            buffer.len() <= MAX_CGI_HEAD,
            "http-backend's headers exceed {MAX_CGI_HEAD} bytes"
        );
        let read = stdout
            .read(&mut chunk)
            .await
            .context("reading http-backend's output")?;
        ensure!(read > 0, "http-backend exited before ending its headers");
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// Where the first blank line starts and its separator's length; CGI allows `\r\n` or `\n`.
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let find = |needle: &[u8]| buffer.windows(needle.len()).position(|w| w == needle);
    let crlf = find(b"\r\n\r\n").map(|at| (at, 4));
    let lf = find(b"\n\n").map(|at| (at, 2));
    crlf.into_iter().chain(lf).min()
}

/// Turns CGI header lines into a response head: `Status:` sets the status, the rest are copied.
fn cgi_response(head: &[u8]) -> anyhow::Result<Builder> {
    let head = std::str::from_utf8(head).context("http-backend's headers are not UTF-8")?;
    let mut response = Response::builder().status(StatusCode::OK);
    for line in head.lines() {
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("bad CGI header {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or_default();
            response = response.status(code.parse::<u16>().context("bad CGI status")?);
        } else {
            response = response.header(name.trim(), value);
        }
    }
    Ok(response)
}

/// The response body: what came with the headers, then stdout until EOF, then the exit status is
/// collected. Dropping the stream (client gone, shutdown) kills the backend.
fn body_stream(
    first: Vec<u8>,
    stdout: ChildStdout,
    child: Child,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    use futures::StreamExt as _;
    let first = (!first.is_empty()).then(|| Ok(Bytes::from(first)));
    let rest = futures::stream::unfold(Some((stdout, child)), |state| async move {
        let (mut stdout, mut child) = state?;
        let mut chunk = vec![0; 16 * 1024];
        match stdout.read(&mut chunk).await {
            Ok(0) => {
                match child.wait().await {
                    Ok(status) if status.success() => {}
                    Ok(status) => warn!(%status, "http-backend exited with failure"),
                    Err(error) => warn!(%error, "waiting for http-backend failed"),
                }
                None
            }
            Ok(read) => {
                chunk.truncate(read);
                Some((Ok(Bytes::from(chunk)), Some((stdout, child))))
            }
            Err(error) => Some((Err(error), None)),
        }
    });
    futures::stream::iter(first).chain(rest)
}

/// Decodes `%XX` escapes in a request path.
fn percent_decode(path: &str) -> anyhow::Result<String> {
    let bytes = path.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = bytes
                .get(at + 1..at + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
            let hex = std::str::from_utf8(hex.context("bad percent escape")?)?;
            decoded.push(u8::from_str_radix(hex, 16)?);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    Ok(String::from_utf8(decoded)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_head_splits_at_the_first_blank_line() {
        assert_eq!(
            find_blank_line(b"Status: 200\r\nA: b\r\n\r\nbody\n\nmore"),
            Some((17, 4))
        );
        assert_eq!(find_blank_line(b"A: b\n\nbody\r\n\r\n"), Some((4, 2)));
        assert_eq!(find_blank_line(b"A: b\r\n"), None);
    }

    #[test]
    fn cgi_status_and_headers_become_the_response_head() {
        let head =
            b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nExpires: Fri, 01 Jan 1980";
        let response = cgi_response(head).unwrap().body(()).unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()["content-type"], "text/plain");
        assert_eq!(response.headers()["expires"], "Fri, 01 Jan 1980");
    }

    #[test]
    fn paths_are_percent_decoded() {
        assert_eq!(
            percent_decode("/org%2Fapp.git/info/refs").unwrap(),
            "/org/app.git/info/refs"
        );
        assert!(percent_decode("/bad%2").is_err());
        assert!(percent_decode("/bad%+1").is_err());
    }

    #[test]
    fn upload_pack_requests_are_recognised() {
        assert!(is_upload_pack(
            &Method::GET,
            "/a.git/info/refs",
            "service=git-upload-pack"
        ));
        assert!(is_upload_pack(&Method::POST, "/a.git/git-upload-pack", ""));
        assert!(!is_upload_pack(
            &Method::GET,
            "/a.git/info/refs",
            "service=git-receive-pack"
        ));
        assert!(!is_upload_pack(&Method::GET, "/a.git/HEAD", ""));
    }
}

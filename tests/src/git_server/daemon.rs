//! git:// — the Git daemon protocol, by running `git daemon --inetd` for every connection with
//! the socket relayed to its stdin and stdout, the way inetd would hand it the socket itself.
//!
//! In `--inetd` mode git daemon takes no `--listen`/`--port`; it reads one request pkt-line
//! (`git-upload-pack /name.git\0host=...\0` plus `\0version=2\0` for protocol v2) from stdin,
//! maps the path onto `--base-path`, checks it against the directory whitelist and runs
//! upload-pack on the same stdio. `--log-destination=stderr` keeps its log out of syslog (it would
//! otherwise send stderr to /dev/null) so we can trace it.
//!
//! We read that first pkt-line ourselves to count and log the request, then hand it on.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::pin::pin;
use std::process::Stdio;
use std::sync::Arc;

use anyhow::{Context as _, ensure};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, Level, debug};

use super::{SHUTDOWN_GRACE, Shared, accept_loop, log_stderr};

/// The largest pkt-line the protocol allows, length prefix included.
const MAX_PKT_LINE: usize = 65520;

/// Serves git:// on `listener` until `shutdown`.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let (conn_shutdown, conn_tasks) = (shutdown.clone(), tasks.clone());
    accept_loop(listener, shutdown, tasks, move |stream, peer| {
        connection(
            stream,
            peer,
            shared.clone(),
            conn_tasks.clone(),
            conn_shutdown.clone(),
        )
    })
    .await;
}

/// One git:// connection. Waiting for the request ends at once on shutdown; a request being
/// served gets a grace period to finish, then is cut.
async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    let request = tokio::select! {
        () = shutdown.cancelled() => return,
        request = read_pkt_line(&mut stream) => request,
    };
    let request = match request {
        Ok(request) => request,
        Err(error) => return debug!(error = format!("{error:#}"), "no valid request"),
    };
    let mut relay = pin!(relay(stream, request, peer, &shared, &tasks));
    let result = tokio::select! {
        result = relay.as_mut() => result,
        () = shutdown.cancelled() => match tokio::time::timeout(SHUTDOWN_GRACE, relay).await {
            Ok(result) => result,
            Err(_elapsed) => return debug!("connection abandoned after the grace period"),
        },
    };
    match result {
        Ok(()) => debug!("connection closed"),
        Err(error) => debug!(error = format!("{error:#}"), "connection failed"),
    }
}

/// Runs git daemon for the connection's `request` and copies bytes both ways until it exits.
async fn relay(
    mut stream: TcpStream,
    request: Vec<u8>,
    peer: SocketAddr,
    shared: &Shared,
    tasks: &TaskTracker,
) -> anyhow::Result<()> {
    let (service, path) = parse_request(&request);
    if service == "git-upload-pack" {
        shared.count_upload_pack();
    }
    debug!(service, path, "request");

    let mut base_path = OsString::from("--base-path=");
    base_path.push(&shared.root);
    let mut command = tokio::process::Command::from(shared.git.command());
    command
        .args(["daemon", "--inetd", "--export-all", "--informative-errors"])
        .args(["--log-destination=stderr", "--verbose"])
        .arg(base_path)
        .arg(&shared.root) // the whitelist: nothing outside the root is served
        .env("REMOTE_ADDR", peer.ip().to_string())
        .env("REMOTE_PORT", peer.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .kill_on_drop(true)
        .spawn()
        .context("spawning git daemon")?;
    let stderr = child.stderr.take().context("git daemon has no stderr")?;
    tasks.spawn(log_stderr(stderr, Level::DEBUG).in_current_span());
    let mut stdin = child.stdin.take().context("git daemon has no stdin")?;
    let mut stdout = child.stdout.take().context("git daemon has no stdout")?;
    stdin
        .write_all(&request)
        .await
        .context("handing the request to git daemon")?;

    let (mut from_client, mut to_client) = stream.split();
    let mut upstream = pin!(async move {
        let copied = tokio::io::copy(&mut from_client, &mut stdin).await;
        drop(stdin); // EOF, so the daemon sees the client hang up
        copied
    });
    let mut downstream = pin!(async {
        tokio::io::copy(&mut stdout, &mut to_client).await?;
        to_client.shutdown().await
    });
    // Once the daemon's output ends there is nothing left to deliver, whatever the client does.
    tokio::select! {
        result = downstream.as_mut() => result.context("relaying to the client")?,
        result = upstream.as_mut() => {
            if let Err(error) = result {
                debug!(%error, "relaying from the client failed");
            }
            downstream.await.context("relaying to the client")?;
        }
    }
    let status = child.wait().await.context("waiting for git daemon")?;
    debug!(%status, "git daemon exited");
    Ok(())
}

/// Reads one pkt-line, returned whole (length prefix included) so it can be forwarded as is.
async fn read_pkt_line(stream: &mut TcpStream) -> anyhow::Result<Vec<u8>> {
    let mut packet = vec![0; 4];
    stream.read_exact(&mut packet).await?;
    let length = std::str::from_utf8(&packet)
        .ok()
        .filter(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .context("not a pkt-line")?;
    ensure!(
        (4..=MAX_PKT_LINE).contains(&length),
        "bad first pkt-line length {length}"
    );
    packet.resize(length, 0);
    stream.read_exact(&mut packet[4..]).await?;
    Ok(packet)
}

/// `(service, path)` from a daemon request pkt-line: `git-upload-pack /name.git\0host=...\0`.
fn parse_request(packet: &[u8]) -> (String, String) {
    let payload = &packet[4.min(packet.len())..];
    let command = payload.split(|&b| b == 0).next().unwrap_or_default();
    let command = String::from_utf8_lossy(command);
    let (service, path) = command.trim_end().split_once(' ').unwrap_or((&command, ""));
    (service.to_owned(), path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_service_and_path() {
        let v2 = b"003bgit-upload-pack /org/app.git\0host=127.0.0.1:9\0\0version=2\0";
        assert_eq!(
            parse_request(v2),
            ("git-upload-pack".into(), "/org/app.git".into())
        );
        let v0 = b"0020git-upload-pack /app.git\n";
        assert_eq!(
            parse_request(v0),
            ("git-upload-pack".into(), "/app.git".into())
        );
        assert_eq!(parse_request(b"0004"), (String::new(), String::new()));
    }
}

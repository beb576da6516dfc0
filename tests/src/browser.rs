//! Headless Chromium driven over WebDriver, for end-to-end tests of the hub's status page:
//! `chromedriver --port=0` in its own process group, spoken to as plain JSON over HTTP/1.1
//! on loopback, one browser session with a fresh profile in a temporary directory.
//!
//! Debian's `chromium` and `chromium-driver` must be installed (`.ci/run` installs them);
//! without them [`Browser::start`] fails and says so: a browser test never passes silently.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::fleet::wait_for;

/// What to do when the browser is missing.
const INSTALL: &str = "the status page test needs headless Chromium and its WebDriver: install \
    Debian's packages with `apt-get install -y chromium chromium-driver` (as .ci/run does)";

/// Flags that let Chromium run headless as root on a machine without outside network.
const CHROMIUM_FLAGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
];

/// How long one WebDriver command may take (starting Chromium on a busy machine is slow).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// One headless Chromium session. Close it with [`Browser::close`]; dropping it kills
/// chromedriver and Chromium.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: TempDir,
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Browser {
    /// Start chromedriver on an ephemeral port and open a browser session.
    pub async fn start() -> anyhow::Result<Self> {
        let chromium = on_path("chromium").context(INSTALL)?;
        let chromedriver = on_path("chromedriver").context(INSTALL)?;
        let profile = tempfile::tempdir()?;
        let mut driver = Command::new(chromedriver)
            .arg("--port=0")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context(INSTALL)?;
        let mut out = driver.stdout.take().context("chromedriver's stdout")?;
        let port = tokio::time::timeout(COMMAND_TIMEOUT, read_port(&mut out))
            .await
            .context("chromedriver did not say which port it listens on")??;
        // Keep reading what it logs, so that a full pipe never blocks it.
        tokio::spawn(async move { tokio::io::copy(&mut out, &mut tokio::io::sink()).await });
        let mut browser = Self {
            driver,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            session: String::new(),
            _profile: profile,
        };
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!(
            "--user-data-dir={}",
            browser._profile.path().display()
        ));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let created = browser.command("POST", "/session", Some(caps)).await?;
        browser.session = created["sessionId"]
            .as_str()
            .context("WebDriver gave no session id")?
            .to_string();
        Ok(browser)
    }

    /// Navigate to `url` and wait for the page to load.
    pub async fn open(&self, url: &str) -> anyhow::Result<()> {
        self.session_command("POST", "/url", json!({ "url": url }))
            .await
            .map(drop)
    }

    /// The URL the browser shows.
    pub async fn url(&self) -> anyhow::Result<String> {
        let v = self
            .command("GET", &format!("/session/{}/url", self.session), None)
            .await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    /// Run `body` as a JavaScript function body in the page and return what it returns.
    pub async fn script(&self, body: &str) -> anyhow::Result<Value> {
        self.session_command("POST", "/execute/sync", json!({"script": body, "args": []}))
            .await
    }

    /// A PNG picture of what the browser shows.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        use base64::Engine as _;
        let path = format!("/session/{}/screenshot", self.session);
        let v = self.command("GET", &path, None).await?;
        let b64 = v.as_str().context("WebDriver gave no screenshot")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
    }

    /// Click the first element matching the CSS selector `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let found = self
            .session_command(
                "POST",
                "/element",
                json!({"using": "css selector", "value": css}),
            )
            .await
            .with_context(|| format!("no element matches {css}"))?;
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .context("WebDriver gave no element reference")?
            .to_string();
        self.session_command("POST", &format!("/element/{id}/click"), json!({}))
            .await
            .map(drop)
    }

    /// Run `body` until it returns something other than null or false, and return that;
    /// fails after the harness deadline with the page's text.
    pub async fn wait_until(&self, what: &str, body: &str) -> anyhow::Result<Value> {
        let outcome = wait_for(what, || async {
            match self.script(body).await {
                Ok(Value::Null | Value::Bool(false)) | Err(_) => None,
                Ok(v) => Some(v),
            }
        })
        .await;
        match outcome {
            Ok(v) => Ok(v),
            Err(e) => {
                let text = self
                    .script("return document.body ? document.body.innerText : ''")
                    .await
                    .unwrap_or_default();
                Err(e.context(format!(
                    "the page showed:\n{}",
                    text.as_str().unwrap_or_default()
                )))
            }
        }
    }

    /// End the session (Chromium quits) and stop chromedriver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        let path = format!("/session/{}", self.session);
        let ended = self.command("DELETE", &path, None).await;
        self.driver.kill().await?;
        ended.map(drop)
    }

    async fn session_command(
        &self,
        method: &str,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let path = format!("/session/{}{path}", self.session);
        self.command(method, &path, Some(body)).await
    }

    /// One WebDriver command; its `value`, or its error as an error.
    async fn command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (code, text) =
            tokio::time::timeout(COMMAND_TIMEOUT, http(self.addr, method, path, body))
                .await
                .with_context(|| format!("WebDriver {method} {path} timed out"))??;
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("WebDriver {method} {path} answered {code}: {text}"))?;
        if code != 200 {
            bail!(
                "WebDriver {method} {path}: {} ({})",
                v["value"]["message"].as_str().unwrap_or(&text),
                v["value"]["error"].as_str().unwrap_or("error")
            );
        }
        Ok(v["value"].clone())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver leads its own process group, which holds Chromium too.
        if let Some(pid) = self
            .driver
            .id()
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Read chromedriver's output until it names its port.
async fn read_port(out: &mut tokio::process::ChildStdout) -> anyhow::Result<u16> {
    const SAID: &str = "started successfully on port ";
    let mut seen = String::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = out.read(&mut buf).await?;
        if n == 0 {
            bail!("chromedriver exited: {seen}");
        }
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        if let Some(at) = seen.find(SAID) {
            let digits: String = seen[at + SAID.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            // Wait for the character after the number, so that no digit is still in flight.
            if seen.len() > at + SAID.len() + digits.len() {
                return Ok(digits.parse()?);
            }
        }
    }
}

/// One HTTP/1.1 exchange with `Connection: close`; returns the status code and the body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, String)> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await?;
    tcp.write_all(body.as_bytes()).await?;
    // chromedriver answers `Connection: close` but keeps the connection open: read the
    // header, then exactly Content-Length bytes.
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            bail!("WebDriver closed the connection before its answer's header ended");
        }
        raw.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .context("WebDriver's answer has no Content-Length")?;
    let mut body = raw.split_off(end + 4);
    while body.len() < length {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            bail!("WebDriver closed the connection in the middle of its answer");
        }
        body.extend_from_slice(&buf[..n]);
    }
    body.truncate(length);
    let body = String::from_utf8(body).context("WebDriver answered with invalid UTF-8")?;
    Ok((code, body))
}

//! Running an external renderer (helm, kubectl) as safely as a child process allows.
//!
//! Each run: its own process group (killed whole on timeout, on output overflow and when the
//! future is dropped); the environment cleared down to `PATH` and a private `HOME`; no stdin;
//! stdout read up to the limit; the tail of stderr kept for the error message. Unless a run
//! needs the network (remote charts), the proxy variables point at a closed local port, which
//! stops the HTTP clients of helm, kustomize and git. That is best effort, not a sandbox: see
//! docs/rendering.md.

use std::ffi::OsString;
use std::io;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{Checkout, RenderError, Renderers};

/// Keep this much of a renderer's stderr for the error message.
const STDERR_TAIL: usize = 4096;

/// A proxy no one listens on: port 1 of the loopback address.
const CLOSED_PROXY: &str = "http://127.0.0.1:1";

/// Which renderer, for messages and install advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Helm,
    Kubectl,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Helm => "helm",
            Tool::Kubectl => "kubectl",
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Tool::Helm => {
                "install Helm on the hub (https://helm.sh/docs/intro/install/: the get-helm-3 script, or your package manager: apt/dnf/brew install helm) or set the path to it"
            }
            Tool::Kubectl => {
                "install kubectl on the hub (https://kubernetes.io/docs/tasks/tools/: the release binary, or your package manager: apt/dnf/brew install kubectl) or set the path to it"
            }
        }
    }
}

/// One renderer invocation.
pub struct Cmd<'a> {
    pub program: &'a Path,
    pub tool: Tool,
    pub args: Vec<OsString>,
    pub cwd: &'a Path,
    /// The private home directory for the run (helm keeps its cache and config under it).
    pub home: &'a Path,
    /// Whether the run may reach the network (a remote chart). Proxies from the hub's own
    /// environment are passed on then; otherwise every proxy points at a closed port.
    pub network: bool,
}

/// Why a run failed.
#[derive(Debug)]
pub enum RunError {
    NotFound(Tool, OsString),
    Spawn(Tool, io::Error),
    Timeout(Tool, std::time::Duration),
    TooLarge(Tool, usize),
    Failed(Tool, ExitStatus, String),
}

impl Cmd<'_> {
    /// Run to completion under `r`'s limits; stdout on success.
    pub async fn run(self, r: &Renderers) -> Result<Vec<u8>, RunError> {
        let tool = self.tool;
        let mut cmd = tokio::process::Command::new(self.program);
        cmd.args(&self.args)
            .current_dir(self.cwd)
            .env_clear()
            .envs(self.env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = cmd.spawn().map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RunError::NotFound(tool, self.program.as_os_str().into()),
            _ => RunError::Spawn(tool, e),
        })?;
        let group = child.id();
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let work = async {
            let (out, err) = tokio::join!(
                read_limited(&mut stdout, r.max_output_bytes, group),
                read_tail(&mut stderr, STDERR_TAIL)
            );
            let status = child.wait().await;
            (out, err, status)
        };
        let (out, err, status) = match tokio::time::timeout(r.timeout, work).await {
            Ok(done) => done,
            Err(_) => {
                kill_group(group);
                return Err(RunError::Timeout(tool, r.timeout));
            }
        };
        let out = out.map_err(|_| RunError::TooLarge(tool, r.max_output_bytes))?;
        let status = status.map_err(|e| RunError::Spawn(tool, e))?;
        if !status.success() {
            let err = String::from_utf8_lossy(&err).trim().to_string();
            return Err(RunError::Failed(tool, status, err));
        }
        Ok(out)
    }

    fn env(&self) -> Vec<(&'static str, OsString)> {
        let mut env = vec![("HOME", self.home.as_os_str().to_owned())];
        if let Some(path) = std::env::var_os("PATH") {
            env.push(("PATH", path));
        }
        if self.tool == Tool::Helm {
            for (var, dir) in [
                ("HELM_CACHE_HOME", "cache"),
                ("HELM_CONFIG_HOME", "config"),
                ("HELM_DATA_HOME", "data"),
            ] {
                env.push((var, self.home.join(dir).into_os_string()));
            }
        }
        const PROXIES: [&str; 6] = [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "http_proxy",
            "https_proxy",
            "all_proxy",
        ];
        if self.network {
            for var in
                PROXIES
                    .iter()
                    .chain(&["NO_PROXY", "no_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR"])
            {
                if let Some(v) = std::env::var_os(var) {
                    env.push((var, v));
                }
            }
        } else {
            env.extend(PROXIES.iter().map(|v| (*v, CLOSED_PROXY.into())));
            // Go's proxy logic bypasses proxies for loopback addresses on its own; the
            // renderers have nothing to fetch there for an offline render anyway.
            env.push(("NO_PROXY", "".into()));
            env.push(("no_proxy", "".into()));
        }
        env
    }
}

/// Read all of `r`, failing (and killing the process group) past `max` bytes.
async fn read_limited(
    r: &mut (impl AsyncRead + Unpin),
    max: usize,
    group: Option<u32>,
) -> Result<Vec<u8>, ()> {
    let mut out = Vec::new();
    let mut chunk = vec![0; 64 * 1024];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return Ok(out),
            Ok(n) if out.len() + n > max => {
                kill_group(group);
                return Err(());
            }
            Ok(n) => out.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Read all of `r`, keeping only the last `keep` bytes.
async fn read_tail(r: &mut (impl AsyncRead + Unpin), keep: usize) -> Vec<u8> {
    let mut tail = Vec::new();
    let mut chunk = vec![0; 8 * 1024];
    while let Ok(n) = r.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&chunk[..n]);
        if tail.len() > 2 * keep {
            tail.drain(..tail.len() - keep);
        }
    }
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    tail
}

/// SIGKILL the process group a renderer leads (its helpers included).
fn kill_group(group: Option<u32>) {
    let pid = group.and_then(|g| rustix::process::Pid::from_raw(g as i32));
    if let Some(pid) = pid {
        // The group may be gone already; nothing to do then.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
}

/// A private scratch directory for one render, under `r.scratch`.
pub fn scratch(r: &Renderers, bundle: &str) -> Result<tempfile::TempDir, RenderError> {
    tempfile::Builder::new()
        .prefix("flotilla-render-")
        .tempdir_in(&r.scratch)
        .map_err(|e| {
            RenderError::new(
                bundle,
                r.scratch.display().to_string(),
                format!("cannot create a scratch directory: {e}"),
            )
            .hint("check the hub's scratch directory exists and is writable")
        })
}

impl RunError {
    /// The error as the user sees it: `file` is what was being rendered. Paths inside the
    /// private checkout are shown relative to the repository.
    pub fn into_render_error(self, bundle: &str, file: &str, checkout: &Checkout) -> RenderError {
        let e = |m: String| RenderError::new(bundle, file, m);
        match self {
            RunError::NotFound(tool, program) => e(format!(
                "{} not found (looked for {:?} on PATH)",
                tool.name(),
                program
            ))
            .hint(tool.install_hint()),
            RunError::Spawn(tool, err) => {
                e(format!("cannot run {}: {err}", tool.name())).hint(tool.install_hint())
            }
            RunError::Timeout(tool, after) => e(format!(
                "{} did not finish within {} s and was killed",
                tool.name(),
                after.as_secs_f32()
            ))
            .hint("make the chart or kustomization cheaper to render, or raise the render timeout"),
            RunError::TooLarge(tool, max) => e(format!(
                "{} wrote more than {max} bytes and was killed",
                tool.name()
            ))
            .hint("split the bundle, or raise the render output limit"),
            RunError::Failed(tool, status, stderr) => {
                let root = format!("{}/", checkout.root().display());
                let stderr = stderr.replace(&root, "");
                let what = match tool {
                    Tool::Helm => "helm template",
                    Tool::Kubectl => "kubectl kustomize",
                };
                let msg = if stderr.is_empty() {
                    format!("{what} failed ({status})")
                } else {
                    format!("{what} failed: {stderr}")
                };
                e(msg).hint(format!("run `{what}` on it locally to reproduce"))
            }
        }
    }
}

//! A real Git server on loopback for the end-to-end tests: the hub fetches from it over file://,
//! git:// and smart http:// exactly as it would from a forge.
//!
//! [`GitServer::start`] makes a temporary directory holding the bare repositories (`repos/`, the
//! project root), the working clones tests commit from (`work/`) and an isolated `$HOME`, then
//! binds two listeners on `127.0.0.1:0` before spawning anything, so there is no port race:
//! - http:// runs `git http-backend` as a CGI per request (`git_server/http.rs`);
//! - git:// runs `git daemon --inetd` per connection, with the socket relayed to its stdio
//!   (`git_server/daemon.rs`).
//!
//! Every `git` process, client or server side, runs with the same isolated environment
//! (`GitEnv`): no system or global config, a fixed identity, no prompts, default branch `main`.
//!
//! A repository made with [`GitServer::create_private_repo`] asks for HTTP basic auth over
//! http:// as a forge does: `401` with `WWW-Authenticate: Basic realm=...` until a request
//! carries its username and password. git:// and file:// have no authentication and serve it
//! as any other.
//!
//! *Boundary:* [`TestRepo`] methods are blocking (`std::process::Command`) and only ever touch the
//! local filesystem (they push by path), so they are safe on any runtime. Cloning or fetching from
//! the server's http:// or git:// URL with a *blocking* client on a current-thread runtime would
//! deadlock the server that shares the thread: use `tokio::process` (see
//! [`GitServer::git_command`]) or `spawn_blocking`.
//!
//! *Invariant:* every task runs in the server's [`TaskTracker`] and stops when its
//! [`CancellationToken`] is cancelled (on [`GitServer::shutdown`] or drop); every child process is
//! `kill_on_drop`, so dropping a task also ends its `git`.

mod daemon;
mod http;
mod repo;

use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::ChildStderr;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument as _, Level, debug, debug_span, info, info_span, warn};

pub use repo::TestRepo;

/// How long [`GitServer::shutdown`] lets in-flight requests finish before abandoning them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Environment variable naming the `git` binary to use instead of the one on `PATH`.
pub const GIT_PROGRAM_ENV: &str = "FLOTILLA_TEST_GIT";

/// A Git server for one test: bare repositories in a temporary directory, served over
/// http://, git:// and file:// until shut down or dropped.
pub struct GitServer {
    shared: Arc<Shared>,
    http_addr: SocketAddr,
    git_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// What the server tasks and the [`TestRepo`]s share; owns the temporary directory, so it lives
/// as long as any of them.
struct Shared {
    /// The project root served by every transport: `<root>/<name>.git`.
    root: PathBuf,
    /// Where the working clones live: `<work>/<name>`.
    work: PathBuf,
    git: GitEnv,
    upload_packs: AtomicU64,
    /// Private repositories by name, with the `Authorization` header value they accept.
    private: Mutex<HashMap<String, String>>,
    _dir: TempDir,
}

impl GitServer {
    /// Creates the temporary root and starts the http:// and git:// servers on ephemeral
    /// loopback ports. Fails early if `git http-backend` or `git daemon` is missing.
    pub async fn start() -> anyhow::Result<GitServer> {
        let dir = tempfile::Builder::new().prefix("flotilla-git-").tempdir()?;
        // Canonical, because git daemon compares its whitelist against resolved paths.
        let base = dir.path().canonicalize()?;
        let (root, work, home) = (base.join("repos"), base.join("work"), base.join("home"));
        for path in [&root, &work, &home] {
            std::fs::create_dir_all(path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let git = GitEnv::new(home)?;
        git.check_server_commands().await?;

        let http_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let git_listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let (http_addr, git_addr) = (http_listener.local_addr()?, git_listener.local_addr()?);

        let shared = Arc::new(Shared {
            root,
            work,
            git,
            upload_packs: AtomicU64::new(0),
            private: Mutex::new(HashMap::new()),
            _dir: dir,
        });
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let http = http::serve(
            http_listener,
            shared.clone(),
            shutdown.child_token(),
            tasks.clone(),
        );
        tasks.spawn(http.instrument(info_span!("git_http", addr = %http_addr)));
        let daemon = daemon::serve(
            git_listener,
            shared.clone(),
            shutdown.child_token(),
            tasks.clone(),
        );
        tasks.spawn(daemon.instrument(info_span!("git_daemon", addr = %git_addr)));
        info!(root = %shared.root.display(), http = %http_addr, git = %git_addr, "git server started");
        Ok(GitServer {
            shared,
            http_addr,
            git_addr,
            shutdown,
            tasks,
        })
    }

    /// Creates the bare repository `<root>/<name>.git` (default branch `main`, no commits yet)
    /// and a working clone of it to commit from. `name` may contain `/` (`org/app`).
    pub fn create_repo(&self, name: &str) -> anyhow::Result<TestRepo> {
        TestRepo::create(self.shared.clone(), name)
    }

    /// Like [`create_repo`](Self::create_repo), but http:// serves it only to requests with
    /// HTTP basic auth as `user` and `password`.
    pub fn create_private_repo(
        &self,
        name: &str,
        user: &str,
        password: &str,
    ) -> anyhow::Result<TestRepo> {
        let repo = self.create_repo(name)?;
        self.set_password(name, user, password);
        Ok(repo)
    }

    /// Make http:// ask for `user` and `password` for repository `name` from now on (a
    /// rotated password: the old one is refused).
    pub fn set_password(&self, name: &str, user: &str, password: &str) {
        use base64::Engine as _;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.shared
            .private
            .lock()
            .expect("private repos lock")
            .insert(name.to_owned(), format!("Basic {token}"));
    }

    /// `http://127.0.0.1:PORT/<name>.git`, served by `git http-backend` (smart HTTP, v0 and v2).
    pub fn http_url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.http_addr)
    }

    /// `git://127.0.0.1:PORT/<name>.git`, served by `git daemon --inetd` (v0 and v2).
    pub fn git_url(&self, name: &str) -> String {
        format!("git://{}/{name}.git", self.git_addr)
    }

    /// `file:///abs/path/<name>.git`.
    pub fn file_url(&self, name: &str) -> String {
        format!("file://{}", self.shared.bare_path(name).display())
    }

    /// Upload-pack requests served so far over http:// and git://: each HTTP
    /// `info/refs?service=git-upload-pack` advertisement, each HTTP `POST .../git-upload-pack`
    /// (one per protocol-v2 command or negotiation round) and each git:// upload-pack connection.
    /// file:// fetches never reach the server and are not counted.
    pub fn request_count(&self) -> u64 {
        self.shared.upload_packs.load(Ordering::Relaxed)
    }

    /// A `git` command with the server's isolated environment (identity, no global config, no
    /// prompts), for tests that clone or fetch with the CLI. Convert it with
    /// `tokio::process::Command::from` when the server runs on the same runtime.
    pub fn git_command(&self) -> Command {
        self.shared.git.command()
    }

    /// Stops accepting, lets in-flight requests finish for a grace period, then ends everything.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(grace = ?SHUTDOWN_GRACE, "git server tasks outlived the shutdown grace period");
        }
        info!("git server stopped");
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        // The tasks see the cancellation and end, killing their `git` children as they go.
        self.shutdown.cancel();
        self.tasks.close();
    }
}

impl Shared {
    fn bare_path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}.git"))
    }

    fn count_upload_pack(&self) {
        self.upload_packs.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a request for `path` (decoded, `/<name>.git/...`) with this `Authorization`
    /// header may be served: a public repository, or the private one's credentials.
    fn authorized(&self, path: &str, authorization: Option<&str>) -> bool {
        let private = self.private.lock().expect("private repos lock");
        private
            .iter()
            .filter(|(name, _)| {
                path.strip_prefix('/')
                    .and_then(|p| p.strip_prefix(name.as_str()))
                    .is_some_and(|rest| rest.starts_with(".git/"))
            })
            .all(|(_, expected)| authorization == Some(expected.as_str()))
    }
}

/// Accepts until `shutdown`, running each connection as its own tracked task.
async fn accept_loop<F, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    mut connection: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let span = debug_span!("connection", %peer);
                tasks.spawn(connection(stream, peer).instrument(span));
            }
            Err(error) => warn!(%error, "accept failed"),
        }
    }
    debug!("listener closed");
}

/// Logs a server-side git's stderr line by line: at `WARN` for programs that only write there
/// when something is wrong, at `DEBUG` for chatty ones.
async fn log_stderr(stderr: ChildStderr, level: Level) {
    let mut lines = BufReader::new(stderr).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if level == Level::WARN => warn!(line, "git stderr"),
            Ok(Some(line)) => debug!(line, "git stderr"),
            Ok(None) => break,
            Err(error) => break debug!(%error, "reading git stderr failed"),
        }
    }
}

/// The `git` binary and the isolated environment every invocation runs with.
struct GitEnv {
    program: OsString,
    home: PathBuf,
    config: PathBuf,
}

/// The only configuration git sees: `GIT_CONFIG_GLOBAL` points here and system config is off.
const GLOBAL_CONFIG: &str = "\
[user]
\tname = Flotilla Tests
\temail = tests@flotilla.invalid
[init]
\tdefaultBranch = main
[commit]
\tgpgSign = false
[core]
\tautocrlf = false
[advice]
\tdetachedHead = false
[gc]
\tauto = 0
[maintenance]
\tauto = false
";

/// Inherited variables that would point git at some other repository or configuration.
const SCRUBBED_ENV: &[&str] = &[
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_CONFIG_SYSTEM",
    "GIT_PROTOCOL",
];

impl GitEnv {
    fn new(home: PathBuf) -> anyhow::Result<GitEnv> {
        let config = home.join(".gitconfig");
        std::fs::write(&config, GLOBAL_CONFIG).context("writing the isolated git config")?;
        let program = std::env::var_os(GIT_PROGRAM_ENV).unwrap_or_else(|| "git".into());
        Ok(GitEnv {
            program,
            home,
            config,
        })
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        for var in SCRUBBED_ENV {
            command.env_remove(var);
        }
        command
            .env("HOME", &self.home)
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", &self.config)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "Flotilla Tests")
            .env("GIT_AUTHOR_EMAIL", "tests@flotilla.invalid")
            .env("GIT_COMMITTER_NAME", "Flotilla Tests")
            .env("GIT_COMMITTER_EMAIL", "tests@flotilla.invalid");
        command
    }

    fn async_command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::from(self.command());
        command.kill_on_drop(true);
        command
    }

    /// `git http-backend` and `git daemon` are separate programs in git's exec path, and some
    /// installs (or a second git earlier on `PATH`) lack them: say so plainly instead of failing
    /// every request later.
    async fn check_server_commands(&self) -> anyhow::Result<()> {
        let output = self
            .async_command()
            .arg("--exec-path")
            .output()
            .await
            .with_context(|| {
                format!(
                    "running {:?} (set {GIT_PROGRAM_ENV} to choose another git)",
                    self.program
                )
            })?;
        ensure!(
            output.status.success(),
            "`git --exec-path` failed: {}",
            output.status
        );
        let exec_path = PathBuf::from(String::from_utf8(output.stdout)?.trim());
        for command in ["git-http-backend", "git-daemon"] {
            if !Path::new(&exec_path).join(command).is_file() {
                bail!(
                    "{command} is missing from {} (the exec path of {:?}); install it or set \
                     {GIT_PROGRAM_ENV} to a git that has it",
                    exec_path.display(),
                    self.program
                );
            }
        }
        Ok(())
    }
}

//! The loopback Git server against the real `git` CLI: clones and fetches over http://, git://
//! and file://, protocol v2, gzipped negotiation, branches and merges, errors and shutdown.
//!
//! Client-side git runs through `tokio::process`, so the server tasks on the same runtime keep
//! running while a clone waits on them.

use std::path::Path;
use std::process::Output;

use anyhow::{Context as _, ensure};
use flotilla_tests::git_server::{GitServer, TestRepo};
use tempfile::TempDir;

/// A URL scheme under test, as the [`GitServer`] method that builds its URLs.
type UrlFor = fn(&GitServer, &str) -> String;

const TRANSPORTS: [(&str, UrlFor); 3] = [
    ("http", GitServer::http_url),
    ("git", GitServer::git_url),
    ("file", GitServer::file_url),
];

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::from_default_env();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Runs client-side git in `dir` with the server's isolated environment plus `env`.
async fn git_output(server: &GitServer, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::from(server.git_command());
    command
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    command.output().await.expect("git runs")
}

/// Runs client-side git in `dir`; its trimmed stdout, or an error with its stderr.
async fn git(server: &GitServer, dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = git_output(server, dir, args, &[]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        output.status.success(),
        "git {args:?} failed: {}",
        stderr.trim()
    );
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

/// Clones `url` into `<scratch>/<dir>` and returns the clone's path.
async fn clone(
    server: &GitServer,
    scratch: &TempDir,
    url: &str,
    dir: &str,
) -> anyhow::Result<std::path::PathBuf> {
    git(server, scratch.path(), &["clone", "--quiet", url, dir])
        .await
        .context("clone")?;
    Ok(scratch.path().join(dir))
}

async fn server_with_repo(name: &str) -> (GitServer, TestRepo, String) {
    init_tracing();
    let server = GitServer::start().await.expect("git server starts");
    let repo = server.create_repo(name).expect("repo created");
    repo.write("fleet.yaml", "namespace: app\n").unwrap();
    repo.write("manifests/deploy.yaml", "kind: Deployment\n")
        .unwrap();
    let first = repo.commit("initial").unwrap();
    (server, repo, first)
}

#[tokio::test]
async fn clones_over_every_transport() {
    let (server, repo, first) = server_with_repo("app").await;
    assert_eq!(repo.head("main").unwrap(), first);
    let scratch = tempfile::tempdir().unwrap();
    for (scheme, url_for) in TRANSPORTS {
        let before = server.request_count();
        let clone = clone(&server, &scratch, &url_for(&server, "app"), scheme)
            .await
            .unwrap();
        assert_eq!(
            git(&server, &clone, &["rev-parse", "HEAD"]).await.unwrap(),
            first,
            "{scheme}"
        );
        let manifest = std::fs::read_to_string(clone.join("manifests/deploy.yaml")).unwrap();
        assert_eq!(manifest, "kind: Deployment\n", "{scheme}");
        let served = server.request_count() - before;
        match scheme {
            "file" => assert_eq!(served, 0, "file:// never reaches the server"),
            _ => assert!(served > 0, "{scheme} clone counted no upload-pack request"),
        }
    }
    server.shutdown().await;
}

/// Clone, commit twice more on the server side (one of them removing a file), and check that
/// `git fetch` over the transport sees each new commit.
async fn fetch_sees_new_commits(scheme: &str, url_for: UrlFor) {
    let (server, repo, _) = server_with_repo("app").await;
    let scratch = tempfile::tempdir().unwrap();
    let clone = clone(&server, &scratch, &url_for(&server, "app"), "clone")
        .await
        .unwrap();

    repo.write("manifests/service.yaml", "kind: Service\n")
        .unwrap();
    let second = repo.commit("add a service").unwrap();
    repo.remove("manifests/deploy.yaml").unwrap();
    let third = repo.commit("drop the deployment").unwrap();
    assert_eq!(repo.head("main").unwrap(), third);

    git(&server, &clone, &["fetch", "--quiet", "origin"])
        .await
        .unwrap();
    assert_eq!(
        git(&server, &clone, &["rev-parse", "origin/main"])
            .await
            .unwrap(),
        third,
        "{scheme}"
    );
    let parent = git(&server, &clone, &["rev-parse", "origin/main^"])
        .await
        .unwrap();
    assert_eq!(parent, second, "{scheme}");
    git(
        &server,
        &clone,
        &["merge", "--quiet", "--ff-only", "origin/main"],
    )
    .await
    .unwrap();
    assert!(clone.join("manifests/service.yaml").is_file(), "{scheme}");
    assert!(!clone.join("manifests/deploy.yaml").exists(), "{scheme}");

    let before = server.request_count();
    git(&server, &clone, &["fetch", "--quiet", "origin"])
        .await
        .unwrap();
    let served = server.request_count() - before;
    if scheme != "file" {
        assert!(
            served > 0,
            "{scheme}: an up-to-date fetch still asks for refs"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn fetch_over_http_sees_new_commits() {
    fetch_sees_new_commits("http", GitServer::http_url).await;
}

#[tokio::test]
async fn fetch_over_git_sees_new_commits() {
    fetch_sees_new_commits("git", GitServer::git_url).await;
}

#[tokio::test]
async fn fetch_over_file_sees_new_commits() {
    fetch_sees_new_commits("file", GitServer::file_url).await;
}

/// gix speaks protocol v2; the `Git-Protocol` header (http) and the extra request parameter
/// (git://) must reach upload-pack. v0 must keep working too.
#[tokio::test]
async fn protocol_v2_and_v0_are_served() {
    let (server, _repo, first) = server_with_repo("app").await;
    let scratch = tempfile::tempdir().unwrap();
    for url in [server.http_url("app"), server.git_url("app")] {
        for version in ["2", "0"] {
            let protocol = format!("protocol.version={version}");
            let args = ["-c", &protocol, "ls-remote", &url, "refs/heads/main"];
            let output =
                git_output(&server, scratch.path(), &args, &[("GIT_TRACE_PACKET", "1")]).await;
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(output.status.success(), "{url} v{version}: {stderr}");
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert_eq!(
                stdout.trim(),
                format!("{first}\trefs/heads/main"),
                "{url} v{version}"
            );
            let spoke_v2 = stderr.contains("< version 2");
            assert_eq!(spoke_v2, version == "2", "{url} v{version}: {stderr}");
        }
    }
    server.shutdown().await;
}

/// git gzips upload-pack requests over 1 KiB, which a negotiation with many unknown `have`s
/// produces; the backend must be told to inflate them.
#[tokio::test]
async fn gzipped_negotiation_over_http() {
    let (server, repo, _) = server_with_repo("app").await;
    let scratch = tempfile::tempdir().unwrap();
    let clone = clone(&server, &scratch, &server.http_url("app"), "clone")
        .await
        .unwrap();
    // Unknown local commits, strictly newer than the common one so they are offered first.
    for n in 0..100 {
        let (message, date) = (format!("local {n}"), format!("{} +0000", 2_000_000_000 + n));
        let args = ["commit", "--quiet", "--allow-empty", "-m", &message];
        let output = git_output(&server, &clone, &args, &[("GIT_COMMITTER_DATE", &date)]).await;
        assert!(output.status.success());
    }
    repo.write("manifests/service.yaml", "kind: Service\n")
        .unwrap();
    let second = repo.commit("add a service").unwrap();

    let trace = [("GIT_TRACE_CURL", "1"), ("GIT_TRACE_CURL_NO_DATA", "1")];
    let output = git_output(&server, &clone, &["fetch", "origin"], &trace).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr
            .to_ascii_lowercase()
            .contains("content-encoding: gzip"),
        "{stderr}"
    );
    assert_eq!(
        git(&server, &clone, &["rev-parse", "origin/main"])
            .await
            .unwrap(),
        second
    );
    server.shutdown().await;
}

#[tokio::test]
async fn branches_and_merges_round_trip() {
    let (server, repo, first) = server_with_repo("app").await;
    repo.checkout_branch("staging", true).unwrap();
    assert_eq!(
        repo.head("staging").unwrap(),
        first,
        "a new branch is pushed at once"
    );
    repo.write("staging.yaml", "replicas: 2\n").unwrap();
    let staging = repo.commit("staging only").unwrap();
    repo.checkout_branch("main", false).unwrap();
    repo.write("main.yaml", "replicas: 3\n").unwrap();
    let main = repo.commit("main only").unwrap();
    assert_eq!(repo.head("main").unwrap(), main);
    assert_eq!(repo.head("staging").unwrap(), staging);

    let merged = repo.merge("staging", "promote staging").unwrap();
    assert_eq!(repo.head("main").unwrap(), merged);

    let scratch = tempfile::tempdir().unwrap();
    let clone = clone(&server, &scratch, &server.git_url("app"), "clone")
        .await
        .unwrap();
    let parents = git(
        &server,
        &clone,
        &["rev-list", "--parents", "-n", "1", "HEAD"],
    )
    .await
    .unwrap();
    assert_eq!(parents, format!("{merged} {main} {staging}"));
    assert_eq!(
        git(&server, &clone, &["log", "-1", "--format=%s"])
            .await
            .unwrap(),
        "promote staging"
    );
    assert!(clone.join("staging.yaml").is_file() && clone.join("main.yaml").is_file());
    let heads = git(
        &server,
        &clone,
        &["ls-remote", "--heads", &server.http_url("app")],
    )
    .await
    .unwrap();
    assert_eq!(
        heads,
        format!("{merged}\trefs/heads/main\n{staging}\trefs/heads/staging")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn nested_names_and_parallel_clones() {
    let (server, _repo, first) = server_with_repo("org/app").await;
    assert!(server.http_url("org/app").ends_with("/org/app.git"));
    let scratch = tempfile::tempdir().unwrap();
    let urls = [0, 1, 2].map(|n| {
        if n % 2 == 0 {
            server.http_url("org/app")
        } else {
            server.git_url("org/app")
        }
    });
    let clones = urls
        .iter()
        .enumerate()
        .map(|(n, url)| clone(&server, &scratch, url, ["a", "b", "c"][n]));
    for clone in futures::future::try_join_all(clones).await.unwrap() {
        assert_eq!(
            git(&server, &clone, &["rev-parse", "HEAD"]).await.unwrap(),
            first
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn missing_repositories_fail_cleanly() {
    let (server, _repo, _) = server_with_repo("app").await;
    let scratch = tempfile::tempdir().unwrap();
    // `../work/app/.git` is the working clone's repository, just outside the served root.
    let outside = "../work/app/";
    for url in [
        server.http_url("missing"),
        server.git_url("missing"),
        server.git_url(outside),
        server.http_url(outside),
    ] {
        let output = git_output(&server, scratch.path(), &["ls-remote", &url], &[]).await;
        assert!(!output.status.success(), "{url} should fail");
    }
    let http = git_output(
        &server,
        scratch.path(),
        &["ls-remote", &server.http_url("missing")],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&http.stderr);
    assert!(
        stderr.contains("not found") || stderr.contains("404"),
        "{stderr}"
    );
    assert!(
        git(
            &server,
            scratch.path(),
            &["ls-remote", &server.http_url("app")]
        )
        .await
        .is_ok()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn create_repo_rejects_bad_names_and_paths() {
    init_tracing();
    let server = GitServer::start().await.unwrap();
    assert!(server.create_repo("../escape").is_err());
    assert!(server.create_repo("").is_err());
    let repo = server.create_repo("app").unwrap();
    assert!(server.create_repo("app").is_err(), "duplicate");
    assert!(repo.write("../outside", "x").is_err());
    assert!(repo.write("/etc/outside", "x").is_err());
    assert!(repo.head("main").is_err(), "no commit yet");
}

#[tokio::test]
async fn shutdown_closes_both_listeners() {
    init_tracing();
    let server = GitServer::start().await.unwrap();
    let addrs = [server.http_url("a"), server.git_url("a")].map(|url| {
        let authority = url.split_once("://").unwrap().1.split_once('/').unwrap().0;
        authority.parse::<std::net::SocketAddr>().unwrap()
    });
    for addr in addrs {
        tokio::net::TcpStream::connect(addr)
            .await
            .expect("listening before shutdown");
    }
    server.shutdown().await;
    for addr in addrs {
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "{addr} still accepts"
        );
    }
}

//! Git access with gix: incremental fetch of one branch into a bare mirror, and reading the
//! files of bundle directories at a commit.
//!
//! gix's network client is blocking: callers run these functions on `spawn_blocking`.
//! Each GitRepo has its own bare repository under `<data-dir>/git/<name>.git`, so a fetch
//! after the first only transfers new objects.
//!
//! A GitRepo that names a credential (`clientSecretName`) is fetched with the username and
//! password read from `<credentials-dir>/<name>/` just before the fetch ([`Credentials`]),
//! handed to gix through its credential callback, never through the URL. Every fetch answers
//! gix's credential requests itself, so no `git credential` helper or prompt is ever run.
//! *Invariant:* a password (of a credential or in a URL) is never in an error, a log line or
//! a status: `Credentials` does not print it, and fetch errors are scrubbed of it.

mod credentials;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use gix::remote::Direction;

pub use credentials::Credentials;
use credentials::{AuthLog, answer, scrub, url_secrets};

use crate::bundle::BundleFile;
use crate::model::redact_url;

/// Why Git could not give us what we asked for.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("cannot open the local mirror at {path}: {message}; delete it to re-clone")]
    Mirror { path: String, message: String },
    #[error("fetching {url} failed: {message}; check the URL and that the hub can reach it")]
    Fetch { url: String, message: String },
    #[error(
        "fetching {url} took longer than {after:?} and was abandoned; check that the server answers"
    )]
    Timeout {
        url: String,
        after: std::time::Duration,
    },
    #[error("branch `{branch}` does not exist in {url}; check the GitRepo's branch")]
    NoBranch { url: String, branch: String },
    #[error("reading commit {commit} failed: {message}")]
    Read { commit: String, message: String },
    #[error("revision `{revision}` cannot be found: {message}; check the GitRepo's revision")]
    NoRevision { revision: String, message: String },
    #[error("path `{path}` does not exist at commit {commit}; check the GitRepo's paths")]
    NoPath { path: String, commit: String },
    #[error(
        "credential `{name}` is not on the hub: expected the directory {path} holding the files \
         `username` and `password`; create it (a Kubernetes Secret of type kubernetes.io/basic-auth \
         mounted there works) or remove the GitRepo's clientSecretName"
    )]
    CredentialMissing { name: String, path: String },
    #[error(
        "credential `{name}` is incomplete: expected the file {path}; add it (as key `{key}` of the \
         Secret mounted at {dir})"
    )]
    CredentialFileMissing {
        name: String,
        key: &'static str,
        path: String,
        dir: String,
    },
    #[error(
        "credential `{name}` cannot be read from {path}: {message}; check it is readable UTF-8 text"
    )]
    CredentialUnreadable {
        name: String,
        path: String,
        message: String,
    },
    #[error(
        "credential `{name}` has an empty password in {path}; write the password or token there"
    )]
    CredentialEmpty { name: String, path: String },
    #[error(
        "{url} asks for credentials; set the GitRepo's clientSecretName to a credential on the hub \
         (files `username` and `password` in the hub's credentials directory)"
    )]
    AuthRequired { url: String },
    #[error(
        "{url} did not accept credential `{name}`; check the credential: the username and password \
         (or token) in {dir}, and that they may read this repository"
    )]
    AuthRejected {
        url: String,
        name: String,
        dir: String,
    },
}

/// A bundle directory read at a commit.
#[derive(Debug)]
pub struct BundleTree {
    /// The path as configured (empty for the repository root).
    pub path: String,
    /// The directory's tree id: unchanged content has an unchanged id.
    pub tree_id: String,
    pub files: Vec<BundleFile>,
}

/// Fetch `branches` (and every tag, when `tags`) from `url` into the bare mirror at
/// `mirror`, authenticating with `credentials` if the server asks; returns each branch's head
/// commit. Setting `interrupt` makes a transfer in progress give up.
pub fn fetch(
    mirror: &Path,
    url: &str,
    credentials: Option<&Credentials>,
    branches: &[String],
    tags: bool,
    interrupt: &AtomicBool,
) -> Result<BTreeMap<String, String>, GitError> {
    let mirror_err = |e: &dyn std::fmt::Display| GitError::Mirror {
        path: mirror.display().to_string(),
        message: e.to_string(),
    };
    let repo = if mirror.join("HEAD").exists() {
        gix::open(mirror).map_err(|e| mirror_err(&e))?
    } else {
        std::fs::create_dir_all(mirror).map_err(|e| mirror_err(&e))?;
        gix::init_bare(mirror).map_err(|e| mirror_err(&e))?
    };
    let mut refspecs: Vec<String> = branches
        .iter()
        .map(|b| format!("+refs/heads/{b}:refs/remotes/origin/{b}"))
        .collect();
    if tags {
        refspecs.push("+refs/tags/*:refs/tags/*".to_string());
    }
    let log = AuthLog::default();
    let mut secrets = url_secrets(url);
    secrets.extend(credentials.map(|c| c.password.clone()));
    let fetch_err = |e: &dyn std::fmt::Display| match credentials {
        Some(c) if log.rejected.get() => GitError::AuthRejected {
            url: redact_url(url),
            name: c.name.clone(),
            dir: c.dir.display().to_string(),
        },
        None if log.asked.get() => GitError::AuthRequired {
            url: redact_url(url),
        },
        _ => GitError::Fetch {
            url: redact_url(url),
            message: scrub(&e.to_string(), &secrets),
        },
    };
    let remote = repo
        .remote_at(url)
        .map_err(|e| fetch_err(&e))?
        .with_refspecs(refspecs.iter().map(String::as_str), Direction::Fetch)
        .map_err(|e| fetch_err(&e))?;
    remote
        .connect(Direction::Fetch)
        .map_err(|e| fetch_err(&e))?
        .with_credentials(answer(credentials, &log))
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| fetch_err(&e))?
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| fetch_err(&e))?;
    let mut heads = BTreeMap::new();
    for branch in branches {
        let tracking = format!("refs/remotes/origin/{branch}");
        let mut reference = match repo.try_find_reference(tracking.as_str()) {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Err(GitError::NoBranch {
                    url: redact_url(url),
                    branch: branch.to_string(),
                });
            }
            Err(e) => return Err(mirror_err(&e)),
        };
        let id = reference.peel_to_id().map_err(|e| mirror_err(&e))?;
        heads.insert(branch.clone(), id.to_string());
    }
    Ok(heads)
}

/// The commit `revision` (a commit id, possibly abbreviated, or a tag) names in the mirror.
pub fn resolve(mirror: &Path, revision: &str) -> Result<String, GitError> {
    let err = |message: String| GitError::NoRevision {
        revision: revision.to_string(),
        message,
    };
    let repo = gix::open(mirror).map_err(|e| err(e.to_string()))?;
    for candidate in [format!("refs/tags/{revision}"), revision.to_string()] {
        if let Ok(id) = repo.rev_parse_single(candidate.as_str())
            && let Ok(object) = id.object()
            && let Ok(commit) = object.peel_to_commit()
        {
            return Ok(commit.id.to_string());
        }
    }
    Err(err("no such commit or tag".to_string()))
}

/// Every regular file of the repository at `commit` (symlinks and submodules are left out:
/// renderers never see a path that leads outside the checkout), and the root tree id.
pub fn read_all(mirror: &Path, commit: &str) -> Result<(String, Vec<BundleFile>), GitError> {
    let read_err = |e: &dyn std::fmt::Display| GitError::Read {
        commit: commit.to_string(),
        message: e.to_string(),
    };
    let repo = gix::open(mirror).map_err(|e| read_err(&e))?;
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| read_err(&e))?;
    let root = repo
        .find_commit(id)
        .map_err(|e| read_err(&e))?
        .tree()
        .map_err(|e| read_err(&e))?;
    let mut files = Vec::new();
    let mut total = 0usize;
    collect_all(&root, "", &mut files, &mut total).map_err(|e| read_err(&e))?;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok((root.id.to_string(), files))
}

/// Largest repository content the hub reads at one commit.
const MAX_REPO_BYTES: usize = 512 << 20;

fn collect_all(
    tree: &gix::Tree<'_>,
    prefix: &str,
    out: &mut Vec<BundleFile>,
    total: &mut usize,
) -> Result<(), String> {
    for entry in tree.iter() {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.filename().to_string();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let mode = entry.mode();
        if mode.is_tree() {
            let sub = entry.object().map_err(|e| e.to_string())?.into_tree();
            collect_all(&sub, &path, out, total)?;
        } else if mode.is_blob() {
            let data = entry.object().map_err(|e| e.to_string())?.detach().data;
            *total += data.len();
            if *total > MAX_REPO_BYTES {
                return Err(format!(
                    "the repository holds more than {} MiB of files at this commit; narrow the GitRepo's paths",
                    MAX_REPO_BYTES >> 20
                ));
            }
            out.push(BundleFile { path, data });
        }
    }
    Ok(())
}

/// Read the files under each of `paths` at `commit` (recursively, in path order).
pub fn read_bundles(
    mirror: &Path,
    commit: &str,
    paths: &[String],
) -> Result<Vec<BundleTree>, GitError> {
    let read_err = |e: &dyn std::fmt::Display| GitError::Read {
        commit: commit.to_string(),
        message: e.to_string(),
    };
    let repo = gix::open(mirror).map_err(|e| read_err(&e))?;
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| read_err(&e))?;
    let root = repo
        .find_commit(id)
        .map_err(|e| read_err(&e))?
        .tree()
        .map_err(|e| read_err(&e))?;
    let mut out = Vec::new();
    let root_only = [String::new()];
    let paths = if paths.is_empty() {
        &root_only[..]
    } else {
        paths
    };
    for path in paths {
        let tree = if path.is_empty() {
            root.clone()
        } else {
            let entry = root
                .lookup_entry_by_path(path)
                .map_err(|e| read_err(&e))?
                .ok_or_else(|| GitError::NoPath {
                    path: path.clone(),
                    commit: commit.to_string(),
                })?;
            if !entry.mode().is_tree() {
                return Err(GitError::NoPath {
                    path: path.clone(),
                    commit: commit.to_string(),
                });
            }
            entry.object().map_err(|e| read_err(&e))?.into_tree()
        };
        let mut files = Vec::new();
        collect_files(&tree, path, &mut files).map_err(|e| read_err(&e))?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        out.push(BundleTree {
            path: path.clone(),
            tree_id: tree.id.to_string(),
            files,
        });
    }
    Ok(out)
}

fn collect_files(
    tree: &gix::Tree<'_>,
    prefix: &str,
    out: &mut Vec<BundleFile>,
) -> Result<(), gix::Error> {
    for entry in tree.iter() {
        let entry = entry?;
        let name = entry.filename().to_string();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let mode = entry.mode();
        if mode.is_tree() {
            let sub = entry.object()?.into_tree();
            collect_files(&sub, &path, out)?;
        } else if mode.is_blob() && crate::bundle::is_manifest_file(&path) {
            let data = entry.object()?.detach().data;
            out.push(BundleFile { path, data });
        }
    }
    Ok(())
}

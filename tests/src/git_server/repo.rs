//! [`TestRepo`]: one bare repository on the server plus a working clone that tests edit, commit
//! in and push from.
//!
//! Everything here is blocking `git` over the local filesystem (the clone's `origin` is the bare
//! repository's path), so it never waits on the server's own tasks.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail, ensure};
use tracing::debug;

use super::Shared;

/// A bare repository served by a [`GitServer`](super::GitServer) and the working clone that
/// writes to it. Keeps the server's temporary directory alive while it exists.
pub struct TestRepo {
    name: String,
    bare: PathBuf,
    work: PathBuf,
    shared: Arc<Shared>,
}

impl TestRepo {
    pub(super) fn create(shared: Arc<Shared>, name: &str) -> anyhow::Result<TestRepo> {
        check_relative(name).with_context(|| format!("bad repository name {name:?}"))?;
        let (bare, work) = (shared.bare_path(name), shared.work.join(name));
        ensure!(!bare.exists(), "repository {name:?} already exists");
        let repo = TestRepo {
            name: name.to_owned(),
            bare,
            work,
            shared,
        };
        let root = &repo.shared.root;
        repo.git_in(
            root,
            &["init", "--quiet", "--bare", "--initial-branch=main"],
            &repo.bare,
        )?;
        repo.git_in(
            root,
            &["init", "--quiet", "--initial-branch=main"],
            &repo.work,
        )?;
        repo.git(&["remote", "add", "origin"], &repo.bare)?;
        debug!(name, bare = %repo.bare.display(), "repository created");
        Ok(repo)
    }

    /// The name given to [`GitServer::create_repo`](super::GitServer::create_repo).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Writes `contents` to `path` (relative, `/`-separated) in the working clone, creating
    /// directories as needed. Nothing is committed until [`commit`](Self::commit).
    pub fn write(&self, path: &str, contents: &str) -> anyhow::Result<()> {
        let file = self.work_path(path)?;
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, contents).with_context(|| format!("writing {}", file.display()))
    }

    /// Removes a file or a whole directory from the working clone.
    pub fn remove(&self, path: &str) -> anyhow::Result<()> {
        let target = self.work_path(path)?;
        let removed = if target.is_dir() {
            std::fs::remove_dir_all(&target)
        } else {
            std::fs::remove_file(&target)
        };
        removed.with_context(|| format!("removing {}", target.display()))
    }

    /// Stages everything (`git add -A`), commits (an empty commit if nothing changed) and pushes
    /// the current branch to the same branch of the bare repository. Returns the commit id.
    pub fn commit(&self, message: &str) -> anyhow::Result<String> {
        self.git(&["add", "--all"], "")?;
        self.git(
            &["commit", "--quiet", "--allow-empty", "--no-verify", "-m"],
            message,
        )?;
        self.push()
    }

    /// Switches the working clone to `branch`, creating it from the current commit if `create`.
    /// A created branch is pushed at once (when there is a commit to point it at), so the server
    /// has it before anything is committed on it.
    pub fn checkout_branch(&self, branch: &str, create: bool) -> anyhow::Result<()> {
        if !create {
            return self.git(&["checkout", "--quiet"], branch).map(drop);
        }
        self.git(&["checkout", "--quiet", "-b"], branch)?;
        if self
            .git(&["rev-parse", "--verify", "--quiet"], "HEAD")
            .is_ok()
        {
            self.push()?;
        }
        Ok(())
    }

    /// Merges `from` into the current branch with a merge commit (`--no-ff`) and pushes.
    /// Returns the new head of the current branch.
    pub fn merge(&self, from: &str, message: &str) -> anyhow::Result<String> {
        let args = ["merge", "--quiet", "--no-ff", "--no-edit", "-m", message];
        self.git(&args, from)?;
        self.push()
    }

    /// The commit `branch` points at in the bare repository, i.e. what a fetch would see.
    pub fn head(&self, branch: &str) -> anyhow::Result<String> {
        let rev = format!("refs/heads/{branch}^{{commit}}");
        self.git_in(&self.bare, &["rev-parse", "--verify"], &rev)
    }

    fn push(&self) -> anyhow::Result<String> {
        let branch = self.git(&["symbolic-ref", "--short"], "HEAD")?;
        let refspec = format!("HEAD:refs/heads/{branch}");
        self.git(&["push", "--quiet", "origin"], refspec)?;
        let commit = self.git(&["rev-parse"], "HEAD")?;
        debug!(repo = self.name, branch, commit, "pushed");
        Ok(commit)
    }

    /// Runs `git <args> <last>` in the working clone (`last` skipped when empty).
    fn git(&self, args: &[&str], last: impl AsRef<Path>) -> anyhow::Result<String> {
        self.git_in(&self.work, args, last)
    }

    /// Runs git in `dir` and returns its trimmed stdout, or an error carrying its stderr.
    fn git_in(&self, dir: &Path, args: &[&str], last: impl AsRef<Path>) -> anyhow::Result<String> {
        let mut command = self.shared.git.command();
        command.current_dir(dir).args(args);
        let last = last.as_ref();
        if !last.as_os_str().is_empty() {
            command.arg(last);
        }
        let output = command
            .output()
            .with_context(|| format!("running git {args:?}"))?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            bail!(
                "git {args:?} {last:?} failed ({}): {}",
                output.status,
                stderr.trim()
            );
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    /// `path` inside the working clone; refuses anything that could escape it.
    fn work_path(&self, path: &str) -> anyhow::Result<PathBuf> {
        check_relative(path).with_context(|| format!("bad path {path:?}"))?;
        Ok(self.work.join(path))
    }
}

/// Accepts non-empty relative paths made only of normal components (no `..`, no root).
fn check_relative(path: &str) -> anyhow::Result<()> {
    let path = Path::new(path);
    let normal = path.components().all(|c| matches!(c, Component::Normal(_)));
    ensure!(
        !path.as_os_str().is_empty() && normal,
        "must be a relative path without `..`"
    );
    Ok(())
}

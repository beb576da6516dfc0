//! The private checkout renderers run in: the repository's files at one commit, written to a
//! fresh temporary directory (mode 0700) that is deleted when the `Checkout` is dropped.
//!
//! Only regular files are written, at paths checked to stay inside the directory, so nothing
//! in the checkout points outside it.

use std::path::Path;

use super::{RenderError, paths};
use crate::bundle::BundleFile;

/// A temporary copy of a repository's files; deleted on drop.
#[derive(Debug)]
pub struct Checkout {
    dir: tempfile::TempDir,
}

impl Checkout {
    /// Write `files` (paths relative to the repository root) into a new directory under
    /// `parent`. Blocking file I/O: call it from `spawn_blocking` in async code.
    pub fn write(files: &[BundleFile], parent: &Path) -> Result<Checkout, RenderError> {
        let io_err = |file: &str, e: std::io::Error| {
            RenderError::new("", file, format!("cannot write the checkout: {e}"))
                .hint("check the hub's scratch directory exists, is writable and has space")
        };
        let dir = tempfile::Builder::new()
            .prefix("flotilla-checkout-")
            .tempdir_in(parent)
            .map_err(|e| io_err(&parent.display().to_string(), e))?;
        for f in files {
            let clean = paths::resolve("", &f.path)
                .ok()
                .filter(|p| *p == f.path && !p.is_empty());
            let Some(clean) = clean else {
                return Err(RenderError::new(
                    "",
                    &f.path,
                    "not a plain relative path inside the repository",
                ));
            };
            let target = dir.path().join(&clean);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_err(&f.path, e))?;
            }
            std::fs::write(&target, &f.data).map_err(|e| io_err(&f.path, e))?;
        }
        Ok(Checkout { dir })
    }

    /// The directory holding the repository's files.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

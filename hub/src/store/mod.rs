//! The hub's durable state, in an embedded sled database under the data directory.
//!
//! Only this module touches the database. Everything is stored as JSON values of the `model`
//! types, one sled tree per kind, so the on-disk format is readable and can move to another
//! engine (sled 0.34 has had no release since 2021) by rewriting this file alone.
//!
//! Boundary: callers see typed methods; no sled type leaves this module.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::{
    Bundle, BundleId, Cluster, ClusterId, ContentHash, GitRepo, RegistrationToken, ReportedStatus,
};
use crate::target::ClusterGroup;

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {source}; is another hub using this data directory?")]
    Open { path: String, source: sled::Error },
    #[error("store I/O failed: {0}; check the data directory's disk and permissions")]
    Io(#[from] sled::Error),
    #[error("corrupt record in {tree}/{key}: {source}")]
    Corrupt {
        tree: &'static str,
        key: String,
        source: serde_json::Error,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

/// How long `open` waits for a lock held by a store of this process that is closing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

const CLUSTERS: &str = "clusters";
const TOKENS: &str = "tokens";
const REPOS: &str = "gitrepos";
const BUNDLES: &str = "bundles";
const MANIFESTS: &str = "manifests";
const STATUS: &str = "status";
const GROUPS: &str = "clustergroups";

/// The hub's database handle. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    clusters: sled::Tree,
    tokens: sled::Tree,
    repos: sled::Tree,
    bundles: sled::Tree,
    manifests: sled::Tree,
    status: sled::Tree,
    groups: sled::Tree,
}

impl Store {
    /// Open (or create) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let config = sled::Config::new().path(dir).flush_every_ms(Some(200));
        // A store closed a moment ago in this process (a restarted hub) releases its file
        // lock only when sled's flusher thread lets go of it: wait briefly for that.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled reports a held lock only in words (io::ErrorKind::Other).
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(source) => {
                    return Err(StoreError::Open {
                        path: dir.display().to_string(),
                        source,
                    });
                }
            }
        };
        Ok(Self {
            clusters: db.open_tree(CLUSTERS)?,
            tokens: db.open_tree(TOKENS)?,
            repos: db.open_tree(REPOS)?,
            bundles: db.open_tree(BUNDLES)?,
            manifests: db.open_tree(MANIFESTS)?,
            status: db.open_tree(STATUS)?,
            groups: db.open_tree(GROUPS)?,
            db,
        })
    }

    /// Write everything buffered to disk; called on shutdown.
    pub async fn flush(&self) -> Result<()> {
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn put_cluster(&self, c: &Cluster) -> Result<()> {
        put(&self.clusters, c.id.to_string().as_bytes(), c)
    }
    pub fn delete_cluster(&self, id: ClusterId) -> Result<()> {
        self.clusters.remove(id.to_string().as_bytes())?;
        Ok(())
    }
    pub fn clusters(&self) -> Result<Vec<Cluster>> {
        all(&self.clusters, CLUSTERS)
    }

    pub fn put_token(&self, t: &RegistrationToken) -> Result<()> {
        put(&self.tokens, t.id.as_bytes(), t)
    }
    pub fn token(&self, id: &str) -> Result<Option<RegistrationToken>> {
        get(&self.tokens, TOKENS, id.as_bytes())
    }
    pub fn tokens(&self) -> Result<Vec<RegistrationToken>> {
        all(&self.tokens, TOKENS)
    }
    /// Mark token `id` revoked at `now`; returns it, or `None` if there is no such token.
    pub fn revoke_token(&self, id: &str, now: i64) -> Result<Option<RegistrationToken>> {
        let updated = self.tokens.update_and_fetch(id.as_bytes(), |old| {
            let old = old?;
            // A record this code cannot read is left exactly as it is.
            let Ok(mut t) = serde_json::from_slice::<RegistrationToken>(old) else {
                return Some(old.to_vec());
            };
            t.revoked_at.get_or_insert(now);
            Some(serde_json::to_vec(&t).expect("model types serialize"))
        })?;
        updated
            .map(|v| decode(TOKENS, id.as_bytes(), &v))
            .transpose()
    }
    /// Count one use of token `id` atomically, unless `check` refuses it. Returns `None` for
    /// an unknown token, else the token as it was before this use, or `check`'s refusal.
    pub fn use_token<E>(
        &self,
        id: &str,
        check: impl Fn(&RegistrationToken) -> std::result::Result<(), E>,
    ) -> Result<Option<std::result::Result<RegistrationToken, E>>> {
        loop {
            let Some(old_bytes) = self.tokens.get(id.as_bytes())? else {
                return Ok(None);
            };
            let token: RegistrationToken = decode(TOKENS, id.as_bytes(), &old_bytes)?;
            if let Err(e) = check(&token) {
                return Ok(Some(Err(e)));
            }
            let mut used = token.clone();
            used.uses += 1;
            let new_bytes = serde_json::to_vec(&used).expect("model types serialize");
            let swapped =
                self.tokens
                    .compare_and_swap(id.as_bytes(), Some(old_bytes), Some(new_bytes))?;
            if swapped.is_ok() {
                return Ok(Some(Ok(token)));
            }
        }
    }

    pub fn put_repo(&self, r: &GitRepo) -> Result<()> {
        put(&self.repos, r.spec.name.as_bytes(), r)
    }
    pub fn repo(&self, name: &str) -> Result<Option<GitRepo>> {
        get(&self.repos, REPOS, name.as_bytes())
    }
    pub fn repos(&self) -> Result<Vec<GitRepo>> {
        all(&self.repos, REPOS)
    }

    pub fn put_bundle(&self, b: &Bundle) -> Result<()> {
        put(&self.bundles, &bundle_key(b), b)
    }
    pub fn delete_bundle(&self, b: &Bundle) -> Result<()> {
        self.bundles.remove(bundle_key(b))?;
        Ok(())
    }

    pub fn put_group(&self, g: &ClusterGroup) -> Result<()> {
        put(&self.groups, g.name.as_bytes(), g)
    }
    pub fn delete_group(&self, name: &str) -> Result<()> {
        self.groups.remove(name.as_bytes())?;
        Ok(())
    }
    pub fn groups(&self) -> Result<Vec<ClusterGroup>> {
        all(&self.groups, GROUPS)
    }

    pub fn delete_repo(&self, name: &str) -> Result<()> {
        self.repos.remove(name.as_bytes())?;
        Ok(())
    }
    pub fn bundles(&self) -> Result<Vec<Bundle>> {
        all(&self.bundles, BUNDLES)
    }

    /// Store a manifest under its content hash; storing the same content again is free.
    pub fn put_manifest(&self, hash: &ContentHash, json: &[u8]) -> Result<()> {
        if !self.manifests.contains_key(hash.0.as_bytes())? {
            self.manifests.insert(hash.0.as_bytes(), json)?;
        }
        Ok(())
    }
    pub fn manifest(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.manifests.get(hash.as_bytes())?.map(|v| v.to_vec()))
    }

    pub fn put_status(
        &self,
        cluster: ClusterId,
        bundle: &BundleId,
        s: &ReportedStatus,
    ) -> Result<()> {
        put(&self.status, &status_key(cluster, bundle), s)
    }
    pub fn delete_status(&self, cluster: ClusterId, bundle: &BundleId) -> Result<()> {
        self.status.remove(status_key(cluster, bundle))?;
        Ok(())
    }
    /// Every stored status, with the deployment it belongs to.
    pub fn statuses(&self) -> Result<Vec<(ClusterId, BundleId, ReportedStatus)>> {
        per_deployment(&self.status, STATUS)
    }
}

/// Every value of a tree keyed by [`status_key`], with the deployment it belongs to; keys of
/// another shape are skipped.
fn per_deployment<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
) -> Result<Vec<(ClusterId, BundleId, T)>> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (k, v) = item?;
        let key = String::from_utf8_lossy(&k).into_owned();
        let Some((c, b)) = key.split_once('\0') else {
            continue;
        };
        let Ok(cluster) = c.parse() else { continue };
        out.push((
            ClusterId(cluster),
            BundleId(b.to_string()),
            decode(name, &k, &v)?,
        ));
    }
    Ok(out)
}

/// Bundles of a GitRepo without environments keep the key they always had.
fn bundle_key(b: &Bundle) -> Vec<u8> {
    if b.env.is_empty() {
        b.id.0.clone().into_bytes()
    } else {
        format!("{}\0{}", b.id, b.env).into_bytes()
    }
}

fn status_key(cluster: ClusterId, bundle: &BundleId) -> Vec<u8> {
    format!("{cluster}\0{bundle}").into_bytes()
}

fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], value: &T) -> Result<()> {
    tree.insert(
        key,
        serde_json::to_vec(value).expect("model types serialize"),
    )?;
    Ok(())
}

fn get<T: DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    key: &[u8],
) -> Result<Option<T>> {
    tree.get(key)?.map(|v| decode(name, key, &v)).transpose()
}

fn all<T: DeserializeOwned>(tree: &sled::Tree, name: &'static str) -> Result<Vec<T>> {
    tree.iter()
        .map(|item| {
            let (k, v) = item?;
            decode(name, &k, &v)
        })
        .collect()
}

fn decode<T: DeserializeOwned>(tree: &'static str, key: &[u8], bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;

//! Git credentials: reading a named credential from the hub's credentials directory (the
//! layout of a mounted `kubernetes.io/basic-auth` Secret), answering gix's credential callback
//! with it, and scrubbing passwords (a credential's, or one written in a URL) from the text of
//! fetch errors.

use std::cell::Cell;
use std::path::{Component, Path, PathBuf};

use gix::credentials::helper::Action;
use gix::credentials::protocol::{Context, Outcome};

use super::GitError;

/// A username and password (or token) to fetch over HTTP(S) with, read from
/// `<credentials-dir>/<name>/username` and `.../password`: the layout of a mounted
/// `kubernetes.io/basic-auth` Secret. Read again for every fetch, so a rotated Secret is used
/// from the next fetch on. `Debug` shows neither the username nor the password.
pub struct Credentials {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    username: String,
    pub(super) password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// The credential a GitRepo names (`clientSecretName`), as the files hold it now; `None`
    /// for a GitRepo that names none.
    pub fn for_repo(credentials_dir: &Path, name: Option<&str>) -> Result<Option<Self>, GitError> {
        name.map(|n| Self::read(credentials_dir, n)).transpose()
    }

    /// Read credential `name` from `credentials_dir`, each file without its trailing newline.
    pub fn read(credentials_dir: &Path, name: &str) -> Result<Self, GitError> {
        let dir = credentials_dir.join(name);
        // GitRepo validation allows only DNS labels; this keeps the boundary on its own.
        let plain = matches!(
            Path::new(name).components().collect::<Vec<_>>()[..],
            [Component::Normal(_)]
        );
        if !plain {
            return Err(GitError::CredentialUnreadable {
                name: name.to_string(),
                path: dir.display().to_string(),
                message: "a credential name must be a plain directory name".to_string(),
            });
        }
        if !dir.is_dir() {
            return Err(GitError::CredentialMissing {
                name: name.to_string(),
                path: dir.display().to_string(),
            });
        }
        let file = |key: &'static str| {
            let path = dir.join(key);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok(text.trim_end_matches(['\n', '\r']).to_string()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(GitError::CredentialFileMissing {
                        name: name.to_string(),
                        key,
                        path: path.display().to_string(),
                        dir: dir.display().to_string(),
                    })
                }
                // The io error says what went wrong (permissions, not UTF-8), never the content.
                Err(e) => Err(GitError::CredentialUnreadable {
                    name: name.to_string(),
                    path: path.display().to_string(),
                    message: e.to_string(),
                }),
            }
        };
        let (username, password) = (file("username")?, file("password")?);
        if password.is_empty() {
            return Err(GitError::CredentialEmpty {
                name: name.to_string(),
                path: dir.join("password").display().to_string(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            dir,
            username,
            password,
        })
    }
}

/// What the server asked of the credential callback during one fetch.
#[derive(Default)]
pub(super) struct AuthLog {
    /// The server wanted credentials (gix asked for them).
    pub(super) asked: Cell<bool>,
    /// The server refused the credentials it was given (gix asked to erase them).
    pub(super) rejected: Cell<bool>,
}

/// gix's credential callback: answers `Get` with `credentials` (or with nothing, which fails
/// the fetch, instead of running a helper or prompting), and ignores `Store` and `Erase`
/// except to note a refusal.
pub(super) fn answer<'a>(
    credentials: Option<&'a Credentials>,
    log: &'a AuthLog,
) -> impl FnMut(Action) -> gix::Result<Option<Outcome>> + 'a {
    move |action| match action {
        Action::Get(ctx) => {
            log.asked.set(true);
            Ok(credentials.map(|c| Outcome {
                identity: gix::sec::identity::Account {
                    username: c.username.clone(),
                    password: c.password.clone(),
                    oauth_refresh_token: None,
                },
                // What a later Store or Erase would be handed: the URL only, not the secret.
                next: Context {
                    url: ctx.url,
                    ..Default::default()
                }
                .into(),
            }))
        }
        Action::Erase(_) => {
            log.rejected.set(true);
            Ok(None)
        }
        Action::Store(_) => Ok(None),
    }
}

/// The secrets a URL carries in its user-info: the whole user-info and the password (as
/// written and percent-decoded), or for http(s) a lone user name (a token used as the user).
/// An ssh user name (`git@`) is no secret.
pub(super) fn url_secrets(url: &str) -> Vec<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Vec::new();
    };
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let Some((userinfo, _host)) = authority.rsplit_once('@') else {
        return Vec::new();
    };
    let mut secrets = match userinfo.split_once(':') {
        Some((_user, password)) => vec![
            userinfo.to_string(),
            password.to_string(),
            percent_decode(password),
        ],
        None if scheme.starts_with("http") => vec![userinfo.to_string(), percent_decode(userinfo)],
        None => Vec::new(),
    };
    secrets.retain(|s| !s.is_empty());
    secrets.dedup();
    secrets
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `text` with every secret replaced by `***`, longest first so a secret that contains
/// another is replaced whole.
pub(super) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&String> = secrets.iter().filter(|s| !s.is_empty()).collect();
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets
        .into_iter()
        .fold(text.to_string(), |t, s| t.replace(s.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    #[test]
    fn credentials_are_read_without_the_trailing_newline_and_never_printed() {
        let root = tempfile::tempdir().unwrap();
        write(
            &root.path().join("git-creds"),
            &[("username", "deployer\n"), ("password", "s3cr3t-token\r\n")],
        );
        let c = Credentials::read(root.path(), "git-creds").unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("deployer", "s3cr3t-token")
        );
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cr3t") && !shown.contains("deployer"),
            "{shown}"
        );
        assert!(Credentials::for_repo(root.path(), None).unwrap().is_none());
    }

    #[test]
    fn a_missing_or_incomplete_credential_says_where_it_is_expected() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("git-creds");
        let err = Credentials::read(root.path(), "git-creds").unwrap_err();
        assert!(matches!(err, GitError::CredentialMissing { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("`git-creds`") && text.contains(&dir.display().to_string()));
        assert!(text.contains("kubernetes.io/basic-auth"), "{text}");

        write(&dir, &[("username", "deployer")]);
        let text = Credentials::read(root.path(), "git-creds")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains(&dir.join("password").display().to_string()),
            "{text}"
        );

        write(&dir, &[("password", "\n")]);
        let err = Credentials::read(root.path(), "git-creds").unwrap_err();
        assert!(matches!(err, GitError::CredentialEmpty { .. }), "{err}");

        let err = Credentials::read(root.path(), "../etc").unwrap_err();
        assert!(
            matches!(err, GitError::CredentialUnreadable { .. }),
            "{err}"
        );
    }

    #[test]
    fn secrets_of_a_url_are_scrubbed_from_messages() {
        let url = "https://bob:p%40ss@git.example/a.git";
        let message = format!(
            "Credentials provided for \"{url}\" were not accepted; tried bob:p@ss and p%40ss"
        );
        let scrubbed = scrub(&message, &url_secrets(url));
        assert!(
            !scrubbed.contains("p%40ss") && !scrubbed.contains("p@ss"),
            "{scrubbed}"
        );
        assert!(scrubbed.contains("git.example/a.git"), "{scrubbed}");

        assert_eq!(
            url_secrets("https://ghp_token@github.com/o/r.git"),
            ["ghp_token"]
        );
        // An ssh user is not a secret; a path with an @ holds none.
        assert!(url_secrets("ssh://git@github.com/o/r.git").is_empty());
        assert!(url_secrets("https://git.example/a@b.git").is_empty());
        assert!(url_secrets("file:///srv/a.git").is_empty());
    }
}

//! Whether two Git URLs name the same repository: a webhook payload spells its repository in
//! several forms (https, ssh, scp-like, git://), and a GitRepo names it in one of them.
//!
//! Both sides are reduced to a key of host, port and path. The scheme is not part of the key:
//! `https://host/o/r` and `git@host:o/r.git` are one repository. Credentials, a port that is
//! the scheme's default, a trailing `.git` and slashes are dropped.
//!
//! Decision: the path compares case-insensitively on every host, not only on github.com and
//! gitlab.com (where owner and project names are case-insensitive anyway). A match only asks
//! for an early fetch and the fetch is authoritative, so a spurious match costs one fetch;
//! a missed match silently defeats the webhook.

/// See the module comment.
pub fn same_repository(a: &str, b: &str) -> bool {
    match (RepoKey::parse(a), RepoKey::parse(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// What identifies a repository across URL spellings.
#[derive(Debug, PartialEq, Eq)]
struct RepoKey {
    host: String,
    /// Only a port that differs from the scheme's default.
    port: Option<u16>,
    /// Lower case, without leading or trailing slashes or `.git`.
    path: String,
}

impl RepoKey {
    fn parse(url: &str) -> Option<Self> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Self::parse_scp_like(url);
        };
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = split_port(without_userinfo(authority))?;
        if host.is_empty() && scheme != "file" {
            return None;
        }
        let port = port.filter(|&p| Some(p) != default_port(&scheme));
        Self::new(host, port, path)
    }

    /// `[user@]host:path`, as git reads it: only when no slash comes before the first colon.
    fn parse_scp_like(url: &str) -> Option<Self> {
        let (authority, path) = url.split_once(':')?;
        if authority.contains('/') {
            return None;
        }
        let host = without_userinfo(authority);
        if host.is_empty() {
            return None;
        }
        Self::new(host, None, path)
    }

    fn new(host: &str, port: Option<u16>, path: &str) -> Option<Self> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let mut path = path
            .split('/')
            .filter(|segment| !segment.is_empty())
            .collect::<Vec<_>>()
            .join("/")
            .to_lowercase();
        if let Some(stripped) = path.strip_suffix(".git") {
            path.truncate(stripped.trim_end_matches('/').len());
        }
        if path.is_empty() {
            return None;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        Some(Self { host, port, path })
    }
}

fn without_userinfo(authority: &str) -> &str {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
}

/// Host and port of an authority, `[::1]:8080` included; `None` when the port is not a number.
fn split_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    match port {
        None | Some("") => Some((host, None)),
        Some(port) => Some((host, Some(port.parse().ok()?))),
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        "ssh" | "git+ssh" | "ssh+git" => Some(22),
        "git" => Some(9418),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (a, b, same?) — every row is also checked the other way round.
    const CASES: &[(&str, &str, bool)] = &[
        // Scheme and the forms a GitHub payload gives.
        (
            "https://github.com/octo-org/fleet",
            "https://github.com/octo-org/fleet.git",
            true,
        ),
        (
            "https://github.com/octo-org/fleet",
            "git@github.com:octo-org/fleet.git",
            true,
        ),
        (
            "https://github.com/octo-org/fleet",
            "ssh://git@github.com/octo-org/fleet.git",
            true,
        ),
        (
            "https://github.com/octo-org/fleet",
            "git://github.com/octo-org/fleet.git",
            true,
        ),
        (
            "https://github.com/octo-org/fleet",
            "http://github.com/octo-org/fleet/",
            true,
        ),
        (
            "https://github.com/octo-org/fleet",
            "github.com:octo-org/fleet",
            true,
        ),
        // Credentials and default ports go; other ports stay.
        (
            "https://github.com/o/r",
            "https://x-access-token:s3cr3t@github.com/o/r.git",
            true,
        ),
        (
            "https://github.com/o/r",
            "https://user@github.com:443/o/r",
            true,
        ),
        ("ssh://git@host/o/r", "ssh://git@host:22/o/r", true),
        ("git://host/o/r", "git://host:9418/o/r", true),
        (
            "https://git.example.com:8443/o/r",
            "https://git.example.com:8443/o/r.git",
            true,
        ),
        (
            "https://git.example.com:8443/o/r",
            "https://git.example.com/o/r",
            false,
        ),
        (
            "ssh://git@gitlab.example.com:2222/g/p.git",
            "git@gitlab.example.com:g/p.git",
            false,
        ),
        // Case: hosts always, paths too (see the module comment).
        (
            "https://GitHub.com/Octo-Org/Fleet",
            "git@github.com:octo-org/fleet.git",
            true,
        ),
        (
            "https://git.example.com/Team/App",
            "https://git.example.com/team/app",
            true,
        ),
        // Nested GitLab groups, a relative URL root, trailing slashes and dots.
        ("https://gitlab.com/a/b/c", "git@gitlab.com:a/b/c.git", true),
        (
            "https://example.com/gitlab/g/p",
            "https://example.com/gitlab/g/p.git/",
            true,
        ),
        (
            "https://gitlab.example.com./g/p",
            "https://gitlab.example.com/g/p",
            true,
        ),
        ("https://h/o/r?ref=main#x", "https://h/o/r", true),
        ("https://[::1]:8080/o/r", "http://[::1]:8080/o/r.git", true),
        // Different repositories.
        ("https://github.com/o/r", "https://github.com/o/r2", false),
        ("https://github.com/o/r", "https://github.com/o2/r", false),
        ("https://github.com/o/r", "https://gitlab.com/o/r", false),
        (
            "https://github.com/o/r",
            "https://github.com/o/r/sub",
            false,
        ),
        (
            "https://github.com/o/repo.github",
            "https://github.com/o/repo",
            false,
        ),
        // Not repository URLs at all never match, not even themselves.
        ("https://github.com/", "https://github.com", false),
        ("/srv/git/r.git", "/srv/git/r.git", false),
        ("", "", false),
        ("https://h:notaport/o/r", "https://h/o/r", false),
    ];

    #[test]
    fn url_normalisation_table() {
        for &(a, b, same) in CASES {
            assert_eq!(same_repository(a, b), same, "{a} vs {b}");
            assert_eq!(same_repository(b, a), same, "{b} vs {a}");
        }
    }

    #[test]
    fn key_of_an_scp_like_url() {
        assert_eq!(
            RepoKey::parse("git@gitlab.example.com:group/sub/project.git"),
            Some(RepoKey {
                host: "gitlab.example.com".into(),
                port: None,
                path: "group/sub/project".into(),
            })
        );
    }
}

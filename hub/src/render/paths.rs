//! Repository paths named in fleet.yaml, resolved without touching the file system.
//!
//! *Invariant:* every path a renderer is given was resolved here and stays inside the
//! checkout. The checkout holds regular files only (the Git layer never hands over symlinks),
//! so resolving `.` and `..` lexically is enough: no component can lead elsewhere.

/// Check a path from fleet.yaml is relative; the message says what is wrong.
pub fn check_relative(path: &str) -> Result<(), String> {
    if path.starts_with('/') || path.starts_with('\\') || path.contains(":\\") {
        return Err(format!(
            "{path:?} is an absolute path; paths in fleet.yaml are relative to the bundle directory"
        ));
    }
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    Ok(())
}

/// `rel` (from fleet.yaml) resolved against `base` (a repository directory, "" = root), as
/// a normalized repository path ("" = root). Refuses absolute paths and any path that leaves
/// the repository.
pub fn resolve(base: &str, rel: &str) -> Result<String, String> {
    check_relative(rel)?;
    let mut parts: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    for c in rel.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!(
                        "{rel:?} leads outside the repository (from {})",
                        display_dir(base)
                    ));
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join("/"))
}

/// `dir/name`, or `name` at the root.
pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Whether repository path `path` is `dir` itself or inside it ("" contains everything).
pub fn is_within(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

/// `path` relative to `dir`, when it is inside it.
pub fn relative_to<'a>(path: &'a str, dir: &str) -> Option<&'a str> {
    if dir.is_empty() {
        Some(path)
    } else {
        path.strip_prefix(dir)?.strip_prefix('/')
    }
}

/// A directory for messages: the repository root is `.`.
pub fn display_dir(dir: &str) -> &str {
    if dir.is_empty() { "." } else { dir }
}

/// Shell-style match of one path component: `*` any run, `?` one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[char], n: &[char]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| rec(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && rec(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && rec(rest, &n[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    rec(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_inside_the_repository_only() {
        assert_eq!(
            resolve("apps/web", "overlays/dev").unwrap(),
            "apps/web/overlays/dev"
        );
        assert_eq!(resolve("apps/web", "../base/./x").unwrap(), "apps/base/x");
        assert_eq!(resolve("apps/web", "../..").unwrap(), "");
        assert_eq!(resolve("", "chart/").unwrap(), "chart");
        assert!(
            resolve("apps/web", "../../..")
                .unwrap_err()
                .contains("outside the repository")
        );
        assert!(resolve("apps", "/etc").unwrap_err().contains("absolute"));
        assert!(is_within("apps/web/x.yaml", "apps/web"));
        assert!(!is_within("apps/website/x.yaml", "apps/web"));
        assert!(is_within("x", ""));
        assert_eq!(relative_to("apps/web/x.yaml", "apps/web"), Some("x.yaml"));
        assert!(glob_match("*.yaml", "a.yaml") && !glob_match("*.yaml", "a.yml"));
        assert!(glob_match("app?", "app1") && glob_match("*", ""));
    }
}

//! HTML building blocks of the status pages: escaping, state badges, the page shell, times,
//! links and the table of deployments that are not Ready (shared by the fleet and GitRepo
//! pages). Pure string functions over the JSON views.
//!
//! *Invariant:* every text that comes from Git, a cluster or a URL goes through [`esc`]
//! (element text and attribute values alike) or, in a URL path, through [`seg`].

use std::fmt::Write as _;

use serde_json::Value;

/// `s` with the five characters that matter in HTML text and quoted attributes escaped.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` percent-encoded as one URL path segment (everything but RFC 3986 unreserved bytes).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A JSON value as display text: strings as they are, null as empty, the rest as JSON.
pub fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A number in a view, 0 when absent.
pub fn num(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The CSS class of a deployment or object state; `s-unknown` for anything else. The state's
/// name is always shown as text too: colour is never the only signal.
pub fn state_class(state: &str) -> &'static str {
    match state {
        "Ready" => "s-ready",
        "NotReady" => "s-notready",
        "WaitApplied" => "s-waitapplied",
        "Pending" => "s-pending",
        "OutOfSync" => "s-outofsync",
        "Modified" => "s-modified",
        "Missing" => "s-missing",
        "ErrApplied" => "s-errapplied",
        // Object states.
        "Applied" => "s-applied",
        "Waiting" => "s-waiting",
        "Failed" => "s-failed",
        _ => "s-unknown",
    }
}

/// A state as a coloured badge that says its name.
pub fn badge(state: &str) -> String {
    format!(
        r#"<span class="badge {}">{}</span>"#,
        state_class(state),
        esc(state)
    )
}

/// An environment's name for display: GitRepos without environments have the empty one.
pub fn env_name(env: &str) -> String {
    if env.is_empty() {
        r#"<span class="muted" title="GitRepos without environments">(none)</span>"#.into()
    } else {
        esc(env)
    }
}

/// A link to a cluster's page.
pub fn cluster_link(name: &str) -> String {
    format!(r#"<a href="/clusters/{}">{}</a>"#, seg(name), esc(name))
}

/// A link to a GitRepo's page.
pub fn gitrepo_link(name: &str) -> String {
    format!(r#"<a href="/gitrepos/{}">{}</a>"#, seg(name), esc(name))
}

/// Unix seconds as a UTC time element; "never" for 0.
pub fn time(unix: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(unix) else {
        return String::new();
    };
    if unix == 0 {
        return r#"<span class="muted">never</span>"#.into();
    }
    let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
    let (hh, mm, ss) = (t.hour(), t.minute(), t.second());
    format!(
        r#"<time datetime="{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z">{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC</time>"#
    )
}

/// A commit id shortened for display, the full id in the tooltip.
pub fn revision(rev: &str) -> String {
    if rev.is_empty() {
        return r#"<span class="muted">none</span>"#.into();
    }
    let short: String = rev.chars().take(12).collect();
    format!(r#"<code title="{}">{}</code>"#, esc(rev), esc(&short))
}

/// "r/t Ready" of a rollup (`counts` or `states` by state name, and `total`).
pub fn ready_of(v: &Value) -> String {
    let counts = if v["counts"].is_object() {
        &v["counts"]
    } else {
        &v["states"]
    };
    format!("{}/{} Ready", num(&counts["Ready"]), num(&v["total"]))
}

/// Badges with the count of each state present, best state first.
pub fn state_totals(states: &Value) -> String {
    let mut out = String::from(r#"<ul class="totals">"#);
    for s in crate::rollup::STATES {
        let n = num(&states[s.as_str()]);
        if n > 0 {
            let _ = write!(
                out,
                r#"<li data-state="{0}"><span class="badge {1}">{0}</span> <span class="n">{n}</span></li>"#,
                s.as_str(),
                state_class(s.as_str())
            );
        }
    }
    out.push_str("</ul>");
    out
}

/// The table of deployments that are not Ready (`notReady`, `notReadyTotal` of a view).
pub fn not_ready_table(view: &Value) -> String {
    let list = view["notReady"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let total = view["notReadyTotal"].as_u64().unwrap_or(list.len() as u64);
    let mut out = format!(r#"<section id="not-ready"><h2>Not Ready ({total})</h2>"#);
    if list.is_empty() {
        out.push_str(r#"<p class="ok">Every deployment is Ready.</p></section>"#);
        return out;
    }
    out.push_str(
        "<table><thead><tr><th>Cluster</th><th>Environment</th><th>Bundle</th>\
         <th>State</th><th>Message</th></tr></thead><tbody>",
    );
    for d in list {
        let (cluster, bundle, state) = (text(&d["cluster"]), text(&d["bundle"]), text(&d["state"]));
        let _ = write!(
            out,
            r#"<tr data-cluster="{}" data-bundle="{}" data-state="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class="message">{}</td></tr>"#,
            esc(&cluster),
            esc(&bundle),
            esc(&state),
            cluster_link(&cluster),
            env_name(&text(&d["environment"])),
            esc(&bundle),
            badge(&state),
            esc(&text(&d["message"])),
        );
    }
    out.push_str("</tbody></table>");
    if total > list.len() as u64 {
        let _ = write!(
            out,
            r#"<p class="muted">… and {} more: see each GitRepo's or cluster's page, or <code>flotilla status -o json</code>.</p>"#,
            total - list.len() as u64
        );
    }
    out.push_str("</section>");
    out
}

/// A whole page: `title`, the navigation, and `main` inside the element the live script
/// refreshes from `fragment` (the same page's `?fragment=1`). `version` is the status
/// version `main` was rendered at.
pub fn page(title: &str, fragment: &str, version: u64, main: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Flotilla</title>
<link rel="stylesheet" href="/ui/flotilla.css">
<script src="/ui/live.js" defer></script>
</head>
<body>
<header><nav><a href="/" class="brand">Flotilla</a> <a href="/">Fleet</a> <a href="/clusters">Clusters</a></nav>
<span id="live-state" class="live" role="status" aria-live="polite">static</span></header>
<main id="live" data-fragment="{fragment}" data-version="{version}">
{main}
</main>
</body>
</html>
"#,
        title = esc(title),
        fragment = esc(fragment),
    )
}

/// The fragment shown for a cluster this hub does not know.
pub fn unknown_cluster(name: &str) -> String {
    format!(
        r#"<section class="not-found"><h1>No cluster named “{}”</h1>
<p>This hub has no registered cluster by that name. It may have been deleted, or its agent
has not registered yet.</p>
<p>See <a href="/clusters">the registered clusters</a> (or <code>flotilla cluster list</code>); a new cluster appears
once its agent registers with a token from <code>flotilla token create</code>.
<a href="/">Back to the fleet</a>.</p></section>"#,
        esc(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_text_and_attributes() {
        assert_eq!(
            esc(r#"<script>alert("x") & 'y'</script>"#),
            "&lt;script&gt;alert(&quot;x&quot;) &amp; &#39;y&#39;&lt;/script&gt;"
        );
        assert_eq!(seg("a b/c?d#é"), "a%20b%2Fc%3Fd%23%C3%A9");
        assert_eq!(seg("east-1.prod_x~"), "east-1.prod_x~");
        let link = cluster_link(r#""><img src=x onerror=alert(1)>"#);
        assert!(!link.contains("<img"), "{link}");
        assert!(
            link.starts_with(r#"<a href="/clusters/%22%3E%3Cimg%20"#),
            "{link}"
        );
    }

    #[test]
    fn every_state_has_a_colour_and_says_its_name() {
        for s in crate::rollup::STATES {
            assert_ne!(state_class(s.as_str()), "s-unknown", "{s:?}");
            assert!(badge(s.as_str()).contains(&format!(">{}<", s.as_str())));
        }
        assert_eq!(state_class("ErrApplied"), "s-errapplied");
        assert_eq!(state_class("<b>"), "s-unknown");
        assert_eq!(
            badge("<b>"),
            r#"<span class="badge s-unknown">&lt;b&gt;</span>"#
        );
    }

    #[test]
    fn not_ready_rows_escape_what_agents_send() {
        let view = json!({"notReadyTotal": 3, "notReady": [{
            "cluster": "east", "environment": "", "bundle": "apps/web", "state": "ErrApplied",
            "message": "ConfigMap \"Bad_Name\" is invalid: <metadata.name>"}]});
        let html = not_ready_table(&view);
        assert!(html.contains("Not Ready (3)"));
        assert!(html.contains(r#"<a href="/clusters/east">east</a>"#));
        assert!(html.contains("ConfigMap &quot;Bad_Name&quot; is invalid: &lt;metadata.name&gt;"));
        assert!(html.contains("(none)"), "the empty environment is named");
        assert!(html.contains("… and 2 more"));
        assert!(not_ready_table(&json!({})).contains("Every deployment is Ready"));
    }

    #[test]
    fn times_totals_and_pages() {
        assert_eq!(
            time(1_700_000_000),
            r#"<time datetime="2023-11-14T22:13:20Z">2023-11-14 22:13:20 UTC</time>"#
        );
        assert!(time(0).contains("never"));
        let totals = state_totals(&json!({"ErrApplied": 1, "Ready": 3}));
        let ready = totals.find("Ready</span>").unwrap();
        assert!(
            ready < totals.find("ErrApplied").unwrap(),
            "best first: {totals}"
        );
        assert_eq!(
            ready_of(&json!({"total": 4, "counts": {"Ready": 3}})),
            "3/4 Ready"
        );
        let page = page("a<b", "/?fragment=1", 7, "<p>x</p>");
        assert!(page.contains("<title>a&lt;b · Flotilla</title>"));
        assert!(page.contains(r#"data-version="7""#) && page.contains("<p>x</p>"));
    }
}

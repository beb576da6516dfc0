//! The cluster page (from `Fleet::cluster_view(name, true)`: each deployment with its
//! objects' states, error messages and modified fields, and its recent transitions) and the
//! GitRepo page (from `Fleet::gitrepo_view(name)`: bundles, environments, what is not Ready).

use std::fmt::Write as _;

use serde_json::Value;

use super::html::{
    badge, env_name, esc, gitrepo_link, not_ready_table, num, ready_of, revision, state_totals,
    text, time,
};

/// The body of a cluster's page.
pub fn cluster(v: &Value) -> String {
    let name = text(&v["name"]);
    let connected = v["connected"].as_bool().unwrap_or(false);
    let mut out = format!(
        r#"<h1>Cluster {}</h1><section id="cluster"><p>{} · last seen {} · {}</p>"#,
        esc(&name),
        if connected {
            r#"<span class="badge s-ready">connected</span>"#
        } else {
            r#"<span class="badge s-pending">disconnected</span>"#
        },
        time(v["lastSeen"].as_i64().unwrap_or(0)),
        ready_of(v),
    );
    let labels: Vec<String> = v["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, l)| format!("<code>{}={}</code>", esc(k), esc(&text(l))))
        .collect();
    let groups: Vec<String> = v["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| esc(&text(g)))
        .collect();
    let _ = write!(
        out,
        "<p>Labels: {} · Groups: {}</p>{}</section>",
        or_none(labels),
        or_none(groups),
        state_totals(&v["states"])
    );
    let deployments = v["deployments"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if deployments.is_empty() {
        out.push_str(r#"<p class="muted">No bundle targets this cluster.</p>"#);
    }
    for d in deployments {
        out.push_str(&deployment(d));
    }
    out
}

fn or_none(items: Vec<String>) -> String {
    if items.is_empty() {
        r#"<span class="muted">none</span>"#.into()
    } else {
        items.join(" ")
    }
}

/// One deployment: state and message, revisions, objects, history.
fn deployment(d: &Value) -> String {
    let bundle = text(&d["bundle"]);
    let state = text(&d["state"]);
    let mut out = format!(
        r#"<section class="deployment" data-bundle="{}" data-state="{}"><h2>{} {}</h2>"#,
        esc(&bundle),
        esc(&state),
        esc(&bundle),
        badge(&state),
    );
    let message = text(&d["message"]);
    if !message.is_empty() {
        let _ = write!(out, r#"<p class="message">{}</p>"#, esc(&message));
    }
    let _ = write!(
        out,
        "<p>GitRepo {} · environment {} · wanted {} · applied {} · reported {}</p>",
        gitrepo_link(&text(&d["gitrepo"])),
        env_name(&text(&d["environment"])),
        revision(&text(&d["desiredRevision"])),
        revision(&text(&d["reportedRevision"])),
        time(d["updatedAt"].as_i64().unwrap_or(0)),
    );
    out.push_str(&objects(d));
    out.push_str(&history(d, state != "Ready"));
    out.push_str("</section>");
    out
}

fn objects(d: &Value) -> String {
    let list = d["objects"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return r#"<p class="muted">No objects reported yet.</p>"#.into();
    }
    let mut out = String::from(
        "<table class=\"objects\"><thead><tr><th>Object</th><th>State</th><th>Message</th>\
         <th>Modified fields</th><th>Source</th></tr></thead><tbody>",
    );
    for o in list {
        let state = text(&o["state"]);
        let ns = text(&o["namespace"]);
        let object = format!(
            "{} {}{}",
            text(&o["kind"]),
            if ns.is_empty() {
                String::new()
            } else {
                format!("{ns}/")
            },
            text(&o["name"])
        );
        let fields: Vec<String> = o["modifiedFields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| format!("<code>{}</code>", esc(&text(f))))
            .collect();
        let _ = write!(
            out,
            r#"<tr data-object="{}" data-state="{}"><td>{}</td><td>{}</td><td class="message">{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&object),
            esc(&state),
            esc(&object),
            badge(&state),
            esc(&text(&o["message"])),
            fields.join(" "),
            esc(&text(&o["source"])),
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// The last transitions, newest first; unfolded when the deployment is not Ready.
fn history(d: &Value, open: bool) -> String {
    let list = d["history"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return String::new();
    }
    let mut out = format!(
        r#"<details class="history"{}><summary>Recent history</summary><ol reversed>"#,
        if open { " open" } else { "" }
    );
    for t in list.iter().rev() {
        let message = text(&t["message"]);
        let _ = write!(
            out,
            "<li>{} {} at {}{}</li>",
            time(t["at"].as_i64().unwrap_or(0)),
            badge(&text(&t["state"])),
            revision(&text(&t["revision"])),
            if message.is_empty() {
                String::new()
            } else {
                format!(r#": <span class="message">{}</span>"#, esc(&message))
            },
        );
    }
    out.push_str("</ol></details>");
    out
}

/// The body of a GitRepo's page.
pub fn gitrepo(v: &Value) -> String {
    let name = text(&v["name"]);
    let mut out = format!(
        r#"<h1>GitRepo {}</h1><section id="gitrepo"><p>{} deployments · {}</p>{}</section>"#,
        esc(&name),
        num(&v["total"]),
        ready_of(v),
        state_totals(&v["states"]),
    );
    let bundles = v["bundles"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if bundles.is_empty() {
        let _ = write!(
            out,
            r#"<p class="muted">Nothing is deployed from a GitRepo named “{}”: it does not exist, has no bundles yet, or targets no cluster. <code>flotilla get gitrepo</code> lists the GitRepos.</p>"#,
            esc(&name)
        );
        return out;
    }
    out.push_str(
        r#"<section id="bundles"><h2>Bundles</h2><table><thead><tr><th>Bundle</th><th>State</th><th>Deployments</th><th>Build error</th></tr></thead><tbody>"#,
    );
    for b in bundles {
        let bundle = text(&b["name"]);
        let _ = write!(
            out,
            r#"<tr data-bundle="{}"><td>{}</td><td>{}</td><td>{}</td><td class="message">{}</td></tr>"#,
            esc(&bundle),
            esc(&bundle),
            badge(&text(&b["worst"])),
            ready_of(b),
            esc(&text(&b["error"])),
        );
    }
    out.push_str("</tbody></table></section>");
    out.push_str(
        r#"<section id="cells"><h2>By environment</h2><table><thead><tr><th>Environment</th><th>Bundle</th><th>State</th><th>Deployments</th></tr></thead><tbody>"#,
    );
    for c in v["cells"].as_array().into_iter().flatten() {
        let (env, bundle, worst) = (
            text(&c["environment"]),
            text(&c["bundle"]),
            text(&c["worst"]),
        );
        let _ = write!(
            out,
            r#"<tr data-env="{}" data-bundle="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&env),
            esc(&bundle),
            env_name(&env),
            esc(&bundle),
            badge(&worst),
            ready_of(c),
        );
    }
    out.push_str("</tbody></table></section>");
    out.push_str(&not_ready_table(v));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_page_shows_objects_errors_and_history() {
        let v = json!({
            "name": "stg-1", "connected": true, "lastSeen": 1_700_000_000, "total": 1,
            "labels": {"env": "staging"}, "groups": [], "states": {"ErrApplied": 1},
            "deployments": [{
                "bundle": "apps/web", "gitrepo": "apps", "environment": "staging",
                "state": "ErrApplied", "message": "1 object failed", "desiredRevision": "abcdef0123456789",
                "reportedRevision": "abcdef0123456789", "updatedAt": 1_700_000_000,
                "objects": [{"kind": "ConfigMap", "namespace": "default", "name": "Bad_Name",
                    "state": "Failed", "message": "metadata.name: Invalid value: \"Bad_Name\"",
                    "source": "web/bad.yaml#1", "modifiedFields": [".data.<x>"]}],
                "history": [{"at": 1_699_999_000, "state": "Ready", "revision": "0123", "message": ""},
                    {"at": 1_700_000_000, "state": "ErrApplied", "revision": "abcdef0123456789", "message": "1 object failed"}],
            }],
        });
        let html = cluster(&v);
        assert!(
            html.contains(r#"<tr data-object="ConfigMap default/Bad_Name" data-state="Failed">"#),
            "{html}"
        );
        assert!(html.contains("Invalid value: &quot;Bad_Name&quot;"));
        assert!(
            html.contains("<code>.data.&lt;x&gt;</code>"),
            "modified fields escaped"
        );
        assert!(html.contains(r#"<code title="abcdef0123456789">abcdef012345</code>"#));
        assert!(html.contains("<code>env=staging</code>"));
        assert!(
            html.contains(r#"<details class="history" open>"#),
            "unfolded: not Ready"
        );
        let newest = html
            .find("2023-11-14 22:13:20 UTC</time> <span class=\"badge s-errapplied\"")
            .unwrap();
        assert!(
            newest < html.find("s-ready\">Ready").unwrap(),
            "history newest first"
        );
    }

    #[test]
    fn gitrepo_page_lists_bundles_or_says_nothing_is_deployed() {
        let v = json!({"name": "apps", "total": 1, "states": {"Ready": 1},
            "bundles": [{"name": "apps/web", "total": 1, "worst": "Ready", "counts": {"Ready": 1}, "error": null}],
            "cells": [{"environment": "", "bundle": "apps/web", "total": 1, "worst": "Ready", "counts": {"Ready": 1}}],
            "notReady": [], "notReadyTotal": 0});
        let html = gitrepo(&v);
        assert!(html.contains(r#"<tr data-bundle="apps/web">"#) && html.contains("1/1 Ready"));
        assert!(html.contains("Every deployment is Ready"));
        let empty = gitrepo(&json!({"name": "<x>", "total": 0, "bundles": []}));
        assert!(empty.contains("GitRepo &lt;x&gt;") && empty.contains("flotilla get gitrepo"));
    }
}

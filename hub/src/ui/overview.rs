//! The fleet at a glance, rendered from `Fleet::summary_view()`: totals by state, connected
//! clusters, the environments x bundles grid (each cell coloured by its worst state, with its
//! Ready/total count), the GitRepos, the deployments that are not Ready and why, and the
//! bundles that failed to build.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::html::{
    badge, env_name, esc, gitrepo_link, not_ready_table, num, ready_of, state_class, state_totals,
    text,
};

/// The body of the fleet page.
pub fn render(v: &Value) -> String {
    let mut out = String::from("<h1>Fleet</h1>");
    let _ = write!(
        out,
        r#"<section id="totals"><p><a id="clusters" href="/clusters">{} clusters, {} connected</a> · <span id="deployments">{} deployments</span></p>{}</section>"#,
        num(&v["clusters"]["total"]),
        num(&v["clusters"]["connected"]),
        num(&v["total"]),
        state_totals(&v["states"]),
    );
    if num(&v["total"]) == 0 {
        out.push_str(
            r#"<p class="muted">No deployments yet: follow a GitRepo (<code>flotilla apply -f gitrepo.yaml</code>) and register clusters (<code>flotilla token create</code>, then <code>flotilla agent manifest</code>).</p>"#,
        );
    } else {
        out.push_str(&grid(v));
    }
    out.push_str(&not_ready_table(v));
    out.push_str(&bundle_errors(v));
    out.push_str(&gitrepos(v));
    out
}

/// The environments x bundles grid.
fn grid(v: &Value) -> String {
    let cells: HashMap<(String, String), &Value> = v["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| ((text(&c["environment"]), text(&c["bundle"])), c))
        .collect();
    let names =
        |key: &str| -> Vec<String> { v[key].as_array().into_iter().flatten().map(text).collect() };
    let (environments, bundles) = (names("environments"), names("bundles"));
    let mut out = String::from(
        r#"<section id="grid"><h2>Environments × bundles</h2><div class="scroll"><table class="grid"><thead><tr><th scope="col">Environment</th>"#,
    );
    for b in &bundles {
        let _ = write!(out, r#"<th scope="col">{}</th>"#, esc(b));
    }
    out.push_str("</tr></thead><tbody>");
    for env in &environments {
        let _ = write!(out, r#"<tr><th scope="row">{}</th>"#, env_name(env));
        for b in &bundles {
            match cells.get(&(env.clone(), b.clone())) {
                Some(c) => {
                    let worst = text(&c["worst"]);
                    let _ = write!(
                        out,
                        r#"<td class="cell {}" data-env="{}" data-bundle="{}" data-state="{}"><span class="state">{}</span> <span class="count">{}</span></td>"#,
                        state_class(&worst),
                        esc(env),
                        esc(b),
                        esc(&worst),
                        esc(&worst),
                        ready_of(c),
                    );
                }
                None => out.push_str(r#"<td class="cell empty"><span class="muted">–</span></td>"#),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div></section>");
    out
}

/// The bundles whose newest commit could not be built.
fn bundle_errors(v: &Value) -> String {
    let list = v["bundleErrors"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if list.is_empty() {
        return String::new();
    }
    let mut out = format!(
        r#"<section id="bundle-errors"><h2>Bundle build errors ({})</h2><table><thead><tr><th>Bundle</th><th>Environment</th><th>Error</th></tr></thead><tbody>"#,
        list.len()
    );
    for e in list {
        let bundle = text(&e["bundle"]);
        let _ = write!(
            out,
            r#"<tr data-bundle="{}"><td>{}</td><td>{}</td><td class="message">{}</td></tr>"#,
            esc(&bundle),
            esc(&bundle),
            env_name(&text(&e["environment"])),
            esc(&text(&e["error"])),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

/// The GitRepos and their rollups.
fn gitrepos(v: &Value) -> String {
    let list = v["gitrepos"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if list.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        r#"<section id="gitrepos"><h2>GitRepos</h2><table><thead><tr><th>GitRepo</th><th>State</th><th>Deployments</th></tr></thead><tbody>"#,
    );
    for r in list {
        let name = text(&r["name"]);
        let _ = write!(
            out,
            r#"<tr data-gitrepo="{}"><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            esc(&name),
            gitrepo_link(&name),
            badge(&text(&r["worst"])),
            ready_of(r),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn view() -> Value {
        json!({
            "clusters": {"total": 2, "connected": 1}, "total": 3,
            "states": {"Ready": 2, "ErrApplied": 1},
            "environments": ["prod", "staging"], "bundles": ["apps/web", "apps/<db>"],
            "cells": [
                {"environment": "prod", "bundle": "apps/web", "total": 1, "worst": "Ready", "counts": {"Ready": 1}},
                {"environment": "staging", "bundle": "apps/web", "total": 2, "worst": "ErrApplied",
                 "counts": {"Ready": 1, "ErrApplied": 1}},
            ],
            "gitrepos": [{"name": "apps", "total": 3, "worst": "ErrApplied", "counts": {"Ready": 2, "ErrApplied": 1}}],
            "notReady": [{"cluster": "stg-1", "environment": "staging", "bundle": "apps/web",
                "state": "ErrApplied", "message": "Bad_Name is invalid"}],
            "notReadyTotal": 1,
            "bundleErrors": [{"bundle": "apps/db", "environment": "prod", "error": "db/x.yaml:3: <oops>"}],
        })
    }

    #[test]
    fn cells_carry_worst_state_and_counts() {
        let html = render(&view());
        assert!(html.contains(
            r#"<td class="cell s-errapplied" data-env="staging" data-bundle="apps/web" data-state="ErrApplied"><span class="state">ErrApplied</span> <span class="count">1/2 Ready</span></td>"#
        ), "{html}");
        assert!(html.contains(r#"<td class="cell s-ready" data-env="prod""#));
        assert!(
            html.contains("<th scope=\"col\">apps/&lt;db&gt;</th>"),
            "bundle names escaped"
        );
        assert!(
            html.contains(r#"<td class="cell empty">"#),
            "a bundle not in an environment"
        );
        assert!(html.contains("2 clusters, 1 connected"));
    }

    #[test]
    fn lists_not_ready_errors_and_gitrepos() {
        let html = render(&view());
        assert!(html.contains(r#"<tr data-cluster="stg-1" data-bundle="apps/web""#));
        assert!(html.contains("Bad_Name is invalid"));
        assert!(html.contains("db/x.yaml:3: &lt;oops&gt;"));
        assert!(html.contains(r#"<a href="/gitrepos/apps">apps</a>"#));
    }

    #[test]
    fn an_empty_fleet_says_what_to_do() {
        let html = render(&json!({"clusters": {"total": 0, "connected": 0}, "total": 0}));
        assert!(html.contains("flotilla token create"), "{html}");
        assert!(!html.contains(r#"id="grid""#));
    }
}

//! Commands about who may talk to the hub: registration tokens, cluster deletion and the
//! CA rotation. Each says what happened and what comes next, in words an operator can act on.

use std::fmt::Write as _;

use anyhow::Context as _;
use flotilla_proto::admin::v1 as api;
use flotilla_proto::admin::v1::admin_client::AdminClient;
use serde_json::{Value, json};
use tonic::transport::Channel;

use super::{Output, output, pretty};

type Admin = AdminClient<Channel>;

pub(super) async fn token_list(admin: &mut Admin, out: Output, now: i64) -> anyhow::Result<String> {
    let tokens = admin
        .list_tokens(api::ListTokensRequest {})
        .await
        .context("listing tokens")?
        .into_inner()
        .tokens;
    Ok(match out {
        Output::Json => pretty(&Value::Array(
            tokens.iter().map(|t| token_json(t, now)).collect(),
        )),
        Output::Table => {
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        token_state(t, now).into(),
                        if t.max_uses == 0 {
                            format!("{}", t.uses)
                        } else {
                            format!("{}/{}", t.uses, t.max_uses)
                        },
                        output::relative(t.expires_at, now),
                        labels(&t.labels, &t.group),
                        t.description.clone(),
                    ]
                })
                .collect();
            output::table(
                &["ID", "STATE", "USES", "EXPIRES", "LABELS", "DESCRIPTION"],
                &rows,
            )
        }
    })
}

fn token_state(t: &api::Token, now: i64) -> &'static str {
    if t.revoked_at != 0 {
        "revoked"
    } else if t.expires_at <= now {
        "expired"
    } else if t.max_uses != 0 && t.uses >= t.max_uses {
        "used up"
    } else {
        "active"
    }
}

fn labels(labels: &std::collections::HashMap<String, String>, group: &str) -> String {
    let mut all: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    all.sort();
    if !group.is_empty() {
        all.push(format!("group={group}"));
    }
    all.join(",")
}

fn token_json(t: &api::Token, now: i64) -> Value {
    json!({"id": t.id, "state": token_state(t, now), "description": t.description,
           "createdAt": t.created_at, "expiresAt": t.expires_at, "maxUses": t.max_uses,
           "uses": t.uses, "labels": t.labels, "group": t.group, "revokedAt": t.revoked_at})
}

pub(super) async fn token_revoke(admin: &mut Admin, id: String) -> anyhow::Result<String> {
    let t = admin
        .revoke_token(api::RevokeTokenRequest { id })
        .await
        .context("revoking the token")?
        .into_inner();
    Ok(format!(
        "token {} revoked: no cluster can register with it any more ({} cluster(s) registered with it stay registered; delete one with `flotilla cluster delete NAME`)\n",
        t.id, t.uses
    ))
}

pub(super) async fn cluster_delete(admin: &mut Admin, name: String) -> anyhow::Result<String> {
    let d = admin
        .delete_cluster(api::DeleteClusterRequest { name: name.clone() })
        .await
        .context("deleting the cluster")?
        .into_inner();
    let mut out = format!("cluster {name} deleted.\n");
    if d.was_connected {
        out.push_str("- Its agent was connected and has been disconnected.\n");
    }
    out.push_str("- Its certificate is refused from now on; the agent keeps running but can no longer reach the hub.\n");
    let _ = writeln!(
        out,
        "- The {} bundle deployment(s) on it stay in the cluster as they are, unmanaged: nothing was pruned. \
         To remove them, delete the objects labelled app.kubernetes.io/managed-by=flotilla there; \
         to remove the agent, delete its namespace (flotilla-system by default).",
        d.deployments
    );
    out.push_str("- To manage the cluster again, install the agent with a new token: `flotilla token create`, then `flotilla agent manifest --token ...`.\n");
    Ok(out)
}

pub(super) async fn ca_status(admin: &mut Admin, out: Output) -> anyhow::Result<String> {
    let s = admin
        .get_ca(api::GetCaRequest {})
        .await
        .context("reading the CA status")?
        .into_inner();
    Ok(match out {
        Output::Json => pretty(&ca_json(&s)),
        Output::Table => ca_table(&s),
    })
}

pub(super) async fn ca_rotate(admin: &mut Admin) -> anyhow::Result<String> {
    let s = admin
        .rotate_ca(api::RotateCaRequest {})
        .await
        .context("starting the CA rotation")?
        .into_inner();
    let mut out = String::from(
        "CA rotation started: the new CA signs every certificate from now on, and both CAs are trusted.\n\
         Connected agents receive the new CA bundle and renew their certificates now; the admin credential was re-issued.\n\
         When `flotilla ca status` lists no cluster on the previous CA, finish with `flotilla ca retire`.\n\n",
    );
    out.push_str(&ca_table(&s));
    Ok(out)
}

pub(super) async fn ca_retire(admin: &mut Admin, force: bool) -> anyhow::Result<String> {
    let s = admin
        .retire_ca(api::RetireCaRequest { force })
        .await
        .context("retiring the previous CA")?
        .into_inner();
    let mut out = String::from(
        "The previous CA is retired: it is no longer trusted, and the hub serves with a certificate from the new CA.\n\n",
    );
    out.push_str(&ca_table(&s));
    Ok(out)
}

fn ca_table(s: &api::CaStatus) -> String {
    let rows: Vec<Vec<String>> = s
        .cas
        .iter()
        .map(|c| {
            vec![
                c.role.clone(),
                if c.serving { "yes" } else { "no" }.into(),
                c.fingerprint.chars().take(16).collect(),
                c.subject.clone(),
            ]
        })
        .collect();
    let mut out = output::table(&["ROLE", "SERVING", "FINGERPRINT", "SUBJECT"], &rows);
    if s.cas.len() > 1 {
        if s.clusters_on_previous.is_empty() {
            out.push_str(
                "\nEvery cluster holds a certificate from the active CA: ready to retire.\n",
            );
        } else {
            let _ = writeln!(
                out,
                "\nClusters still on the previous CA ({}): {}",
                s.clusters_on_previous.len(),
                s.clusters_on_previous.join(", ")
            );
        }
    }
    out
}

fn ca_json(s: &api::CaStatus) -> Value {
    json!({
        "cas": s.cas.iter().map(|c| json!({"role": c.role, "serving": c.serving,
            "fingerprint": c.fingerprint, "subject": c.subject,
            "notBefore": c.not_before, "notAfter": c.not_after})).collect::<Vec<_>>(),
        "clustersOnPrevious": s.clusters_on_previous,
    })
}

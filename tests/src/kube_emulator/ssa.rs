//! Server-side apply requests (`PATCH` with `application/apply-patch+yaml`): merges the applied
//! configuration into the live object (or a new one: apply creates), removes the fields this
//! manager applied before but no longer applies and nobody else owns, checks ownership
//! conflicts, then hands the result to the shared write path.

use serde_json::{Value, json};

use super::apply;
use super::managed::{Managed, Operation};
use super::prepare::{self, UNTRACKED_META};
use super::status::ApiError;
use super::store::{State, meta_str};
use super::write::{self, WriteCtx, Written};

/// Applies `config` for `ctx.manager`; `force` takes over conflicting fields.
pub(crate) fn apply(
    state: &mut State,
    ctx: &WriteCtx,
    name: &str,
    config: Value,
    force: bool,
) -> Result<Written, ApiError> {
    let config = prepare::check_body(ctx, config, Some(name), true)?;
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    let live = state.get(&ctx.rt.key(), ctx.ns(), name).cloned();
    let precondition = config
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str);
    if let (Some(live), Some(rv)) = (&live, precondition)
        && rv != meta_str(live, "resourceVersion")
    {
        return Err(ApiError::stale_resource_version(
            &ctx.rt.group,
            &ctx.rt.plural,
            name,
        ));
    }
    if live.is_none() {
        if precondition.is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::resource_version_on_create());
        }
        if ctx.status {
            return Err(ApiError::not_found(&ctx.rt.group, &ctx.rt.plural, name));
        }
        prepare::admit_namespace(state, ctx, name)?;
        prepare::admit_custom(ctx)?;
    }
    let config = for_merge(ctx, config);
    let schema = ctx.schema();
    let applied = apply::field_set(&ctx.tracked(&config), &schema);
    let base = live.clone().unwrap_or_else(|| skeleton(ctx, name));
    let mut merged = apply::merge(Some(&base), &config, &schema);
    let before = Managed::decode(&base);
    let actor = ctx.actor(Operation::Apply);
    let keep = before.owned_by_others(&actor).union(&applied);
    apply::prune(
        &mut merged,
        &before.owned_by(&actor).difference(&applied),
        &keep,
        &schema,
    );
    let cmp = apply::compare(&ctx.tracked(&base), &ctx.tracked(&merged), &schema);
    let mut managed = before;
    managed.record_apply(&actor, applied, &cmp, force, &ctx.now)?;
    match live {
        Some(live) => write::finish_update(state, ctx, live, merged, Some(managed)),
        None => {
            prepare::prepare_create(ctx, &mut merged);
            write::admit_object(state, ctx, &mut merged, None)?;
            let object = write::commit_new(state, ctx, merged, managed)?;
            Ok(Written {
                object,
                created: true,
            })
        }
    }
}

/// The configuration without server-owned metadata, and without the fields the target
/// (main resource or status subresource) resets.
fn for_merge(ctx: &WriteCtx, config: Value) -> Value {
    let Value::Object(mut m) = config else {
        return config;
    };
    if let Some(Value::Object(meta)) = m.get_mut("metadata") {
        UNTRACKED_META[2..].iter().for_each(|f| {
            meta.remove(*f);
        });
    }
    if ctx.status {
        m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
        if let Some(Value::Object(meta)) = m.get_mut("metadata") {
            meta.retain(|k, _| k == "name" || k == "namespace");
        }
    } else if ctx.rt.status_subresource {
        m.remove("status");
    }
    Value::Object(m)
}

/// What an apply of a missing object merges into.
fn skeleton(ctx: &WriteCtx, name: &str) -> Value {
    let mut meta = json!({ "name": name });
    if let Some(ns) = &ctx.namespace {
        meta["namespace"] = json!(ns);
    }
    json!({ "apiVersion": ctx.rt.api_version(), "kind": ctx.rt.kind, "metadata": meta })
}

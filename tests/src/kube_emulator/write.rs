//! The write path shared by POST, PUT, every PATCH flavour and server-side apply, for the main
//! resource and the `status` subresource: admission (`prepare.rs`), defaulting, validation,
//! generation, managedFields, and the no-op rule (an unchanged object is not written, so its
//! resourceVersion stays); then the store, with follow-up work for CRDs and namespaces.
//! *Invariant:* every write, from HTTP or from the emulator's own controllers, goes through here.

use std::sync::Arc;

use serde_json::{Value, json};

use super::apply;
use super::catalog::{GenerationPolicy, ResourceType};
use super::custom;
use super::defaults;
use super::fieldset::PathElement;
use super::managed::{Actor, Managed, Operation};
use super::patch;
use super::prepare::{
    UNTRACKED_META, admit_custom, admit_namespace, carry_server_meta, check_body, generate_name,
    next_generation, prepare_create, with_status,
};
use super::schema::Schema;
use super::status::ApiError;
use super::store::{Effect, State, meta_str};
use super::validate;

/// Who writes what, where.
pub(crate) struct WriteCtx {
    pub rt: Arc<ResourceType>,
    /// The URL namespace (`None` for cluster-scoped types).
    pub namespace: Option<String>,
    /// Whether this is a write to the `status` subresource.
    pub status: bool,
    pub manager: String,
    pub dry_run: bool,
    pub now: String,
}

/// A PATCH body, by content type.
pub(crate) enum PatchBody {
    Merge(Value),
    Strategic(Value),
    Json(Value),
    Apply { config: Value, force: bool },
}

/// The outcome of a write: the object as stored (or as it would be, on a dry run).
pub(crate) struct Written {
    pub object: Value,
    pub created: bool,
}

impl WriteCtx {
    pub(super) fn actor(&self, operation: Operation) -> Actor {
        Actor {
            manager: self.manager.clone(),
            operation,
            api_version: self.rt.api_version(),
            subresource: if self.status {
                "status".into()
            } else {
                String::new()
            },
        }
    }

    pub(super) fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    pub(super) fn schema(&self) -> Schema<'_> {
        let custom = self.rt.custom.as_ref();
        Schema::root(
            &self.rt.kind,
            custom.and_then(|c| c.schema.as_ref()),
            custom.is_some(),
        )
    }

    /// The part of an object whose ownership is tracked: no type or server-owned metadata, and
    /// only `status` (status subresource) or everything but `status` (main resource, when the
    /// type has a status subresource).
    pub(super) fn tracked(&self, obj: &Value) -> Value {
        let mut out = obj.as_object().cloned().unwrap_or_default();
        out.remove("apiVersion");
        out.remove("kind");
        if self.status {
            out.retain(|k, _| k == "status");
        } else if self.rt.status_subresource {
            out.remove("status");
        }
        if let Some(Value::Object(meta)) = out.get_mut("metadata") {
            UNTRACKED_META.iter().for_each(|f| {
                meta.remove(*f);
            });
            if meta.is_empty() {
                out.remove("metadata");
            }
        }
        Value::Object(out)
    }
}

/// Defaulting, custom-resource schema handling and validation, in the real server's order.
pub(super) fn admit_object(
    state: &mut State,
    ctx: &WriteCtx,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    if !ctx.status {
        defaults::apply(&ctx.rt, obj, old, &mut state.alloc)?;
    }
    custom::prune_default_validate(&ctx.rt, obj)?;
    validate::validate(&ctx.rt, obj, old)
}

/// Struct fields a built-in object always has (Go value fields): adding content to them does not
/// make the struct itself a member, unlike a map or pointer that was absent.
const VALUE_STRUCTS: [&str; 7] = [
    "metadata",
    "spec",
    "status",
    "template",
    "strategy",
    "updateStrategy",
    "jobTemplate",
];

/// What a non-apply write changed, as the ownership of an `Update` entry records it.
fn update_changes(ctx: &WriteCtx, old: &Value, new: &Value) -> apply::Comparison {
    let mut cmp = apply::compare(&ctx.tracked(old), &ctx.tracked(new), &ctx.schema());
    let builtin = ctx.rt.custom.is_none();
    cmp.changed.unmark(&|e, depth| match e {
        PathElement::Field(f) => {
            (depth == 0 && f == "metadata") || (builtin && VALUE_STRUCTS.contains(&f.as_str()))
        }
        _ => false,
    });
    cmp
}

/// POST.
pub(crate) fn create(state: &mut State, ctx: &WriteCtx, body: Value) -> Result<Value, ApiError> {
    let mut obj = check_body(ctx, body, None, false)?;
    if !meta_str(&obj, "resourceVersion").is_empty() {
        return Err(ApiError::resource_version_on_create());
    }
    generate_name(&mut obj);
    let name = meta_str(&obj, "name").to_string();
    admit_namespace(state, ctx, &name)?;
    admit_custom(ctx)?;
    prepare_create(ctx, &mut obj);
    admit_object(state, ctx, &mut obj, None)?;
    let cmp = update_changes(ctx, &json!({}), &obj);
    let mut managed = Managed::default();
    managed.record_update(&ctx.actor(Operation::Update), &cmp, &ctx.now);
    commit_new(state, ctx, obj, managed)
}

pub(super) fn commit_new(
    state: &mut State,
    ctx: &WriteCtx,
    mut obj: Value,
    managed: Managed,
) -> Result<Value, ApiError> {
    let name = meta_str(&obj, "name").to_string();
    if state.get(&ctx.rt.key(), ctx.ns(), &name).is_some() {
        return Err(ApiError::already_exists(
            &ctx.rt.group,
            &ctx.rt.plural,
            &name,
        ));
    }
    if ctx.rt.generation != GenerationPolicy::None {
        obj["metadata"]["generation"] = json!(1);
    }
    obj["metadata"]["managedFields"] = managed.encode(&Managed::default());
    if ctx.dry_run {
        return Ok(obj);
    }
    let stored = state.put(&ctx.rt.key(), obj);
    if !ctx.status {
        super::controllers::on_write(state, &ctx.rt, &stored);
    }
    if ctx
        .rt
        .is("apiextensions.k8s.io", "CustomResourceDefinition")
    {
        state.effects.push(Effect::EstablishCrd(name.clone()));
    }
    if ctx.rt.is("", "Namespace") {
        super::lifecycle::seed_namespace(state, &name, &ctx.now);
    }
    Ok(stored)
}

pub(super) fn live_object(state: &State, ctx: &WriteCtx, name: &str) -> Result<Value, ApiError> {
    state
        .get(&ctx.rt.key(), ctx.ns(), name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&ctx.rt.group, &ctx.rt.plural, name))
}

/// PUT, on the main resource or the status subresource.
pub(crate) fn update(
    state: &mut State,
    ctx: &WriteCtx,
    name: &str,
    body: Value,
) -> Result<Written, ApiError> {
    let body = check_body(ctx, body, Some(name), false)?;
    let live = live_object(state, ctx, name)?;
    match body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        Some(rv) if rv != meta_str(&live, "resourceVersion") => {
            return Err(ApiError::stale_resource_version(
                &ctx.rt.group,
                &ctx.rt.plural,
                name,
            ));
        }
        None if ctx.rt.custom.is_some() => {
            let err = super::status::FieldError::invalid(
                "metadata.resourceVersion",
                &json!(0),
                "must be specified for an update",
            );
            return Err(ApiError::invalid(&ctx.rt.group, &ctx.rt.kind, name, &[err]));
        }
        _ => {}
    }
    let new = if ctx.status {
        with_status(&live, &body)
    } else {
        body
    };
    finish_update(state, ctx, live, new, None)
}

/// PATCH (every content type), on the main resource or the status subresource.
pub(crate) fn patch(
    state: &mut State,
    ctx: &WriteCtx,
    name: &str,
    body: PatchBody,
) -> Result<Written, ApiError> {
    let (config, force) = match body {
        PatchBody::Apply { config, force } => (config, force),
        other => return patch_update(state, ctx, name, other),
    };
    if ctx.manager.is_empty() {
        let err =
            super::status::FieldError::required("fieldManager", "is required for apply patch");
        return Err(ApiError::invalid("meta.k8s.io", "PatchOptions", "", &[err]));
    }
    super::ssa::apply(state, ctx, name, config, force)
}

fn patch_update(
    state: &mut State,
    ctx: &WriteCtx,
    name: &str,
    body: PatchBody,
) -> Result<Written, ApiError> {
    let live = live_object(state, ctx, name)?;
    let patched = match body {
        PatchBody::Merge(p) => patch::merge_patch(&live, &p),
        PatchBody::Strategic(p) => patch::strategic_merge(&live, &p, &ctx.schema()),
        PatchBody::Json(ops) => patch::json_patch(&live, &ops)?,
        PatchBody::Apply { .. } => unreachable!("apply is handled by ssa"),
    };
    let patched = check_body(ctx, patched, Some(name), false)?;
    if meta_str(&patched, "resourceVersion") != meta_str(&live, "resourceVersion") {
        return Err(ApiError::stale_resource_version(
            &ctx.rt.group,
            &ctx.rt.plural,
            name,
        ));
    }
    let new = if ctx.status {
        with_status(&live, &patched)
    } else {
        patched
    };
    finish_update(state, ctx, live, new, None)
}

/// Everything after the body has been turned into the new object: `managed` is the apply's
/// ownership result, or `None` to record an update.
pub(crate) fn finish_update(
    state: &mut State,
    ctx: &WriteCtx,
    live: Value,
    mut new: Value,
    managed: Option<Managed>,
) -> Result<Written, ApiError> {
    carry_server_meta(&live, &mut new);
    if ctx.rt.status_subresource && !ctx.status {
        new = with_status(&new, &live);
    }
    admit_object(state, ctx, &mut new, Some(&live))?;
    if let Some(generation) = next_generation(ctx, &live, &new) {
        new["metadata"]["generation"] = json!(generation);
    }
    let before = Managed::decode(&live);
    let managed = managed.unwrap_or_else(|| {
        let cmp = update_changes(ctx, &live, &new);
        let mut m = before.clone();
        m.record_update(&ctx.actor(Operation::Update), &cmp, &ctx.now);
        m
    });
    new["metadata"]["managedFields"] = managed.encode(&before);
    if new == live || ctx.dry_run {
        return Ok(Written {
            object: new,
            created: false,
        });
    }
    let object = commit_update(state, &ctx.rt, new);
    if !ctx.status {
        super::controllers::on_write(state, &ctx.rt, &object);
    }
    Ok(Written {
        object,
        created: false,
    })
}

/// Stores an updated object, or removes it when it is being deleted and no finalizer is left.
pub(crate) fn commit_update(state: &mut State, rt: &ResourceType, new: Value) -> Value {
    let deleting = new.pointer("/metadata/deletionTimestamp").is_some();
    if deleting && !super::lifecycle::has_finalizers(rt, &new) {
        let (ns, name) = (
            meta_str(&new, "namespace").to_string(),
            meta_str(&new, "name").to_string(),
        );
        if let Some(gone) = state.remove(&rt.key(), &ns, &name, Some(new.clone())) {
            return gone;
        }
    }
    state.put(&rt.key(), new)
}

/// Writes `status` as a controller would (an update of the status subresource by `manager`).
pub(crate) fn write_status(
    state: &mut State,
    rt: Arc<ResourceType>,
    namespace: Option<&str>,
    name: &str,
    status: Value,
    manager: &str,
    now: &str,
) -> Result<Value, ApiError> {
    let ctx = WriteCtx {
        rt,
        namespace: namespace.map(String::from),
        status: true,
        manager: manager.to_string(),
        dry_run: false,
        now: now.to_string(),
    };
    let live = live_object(state, &ctx, name)?;
    let new = with_status(&live, &json!({ "status": status }));
    Ok(finish_update(state, &ctx, live, new, None)?.object)
}

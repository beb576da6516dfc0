//! Health of one applied object, read from Kubernetes' own signals: a controller's
//! `status.observedGeneration`, replica counts, and the conditions controllers write.
//!
//! *Invariant:* pure: a live object in, a [`Health`] out; no I/O. The rules follow what the
//! controllers publish (and what `kubectl rollout status` and kstatus read): a status is
//! trusted only once `observedGeneration` caught up with `metadata.generation`; then each
//! kind has its own signal; any other object with `status.conditions` is ready when its
//! `Ready` condition is (or when it has none); anything else is ready once applied.

use serde_json::Value;

/// Whether an object does what it was applied for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Health {
    Ready,
    /// Not ready, with a short reason for people.
    NotReady(String),
}

/// The health of a live object, as read or watched from the API server.
pub(crate) fn assess(obj: &Value) -> Health {
    let o = Obj(obj);
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return o.not_ready("being deleted");
    }
    let group = o
        .text("/apiVersion")
        .rsplit_once('/')
        .map_or("", |(g, _)| g);
    let result = match (group, o.text("/kind")) {
        ("apps", "Deployment") => deployment(&o),
        ("apps", "StatefulSet") => stateful_set(&o),
        ("apps", "DaemonSet") => daemon_set(&o),
        ("batch", "Job") => job(&o),
        ("", "Service") => service(&o),
        ("", "PersistentVolumeClaim") => claim(&o),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => crd(&o),
        _ => generic(&o),
    };
    match result {
        Ok(()) => Health::Ready,
        Err(h) => h,
    }
}

/// A live object and the readers health needs.
struct Obj<'a>(&'a Value);

type Check = Result<(), Health>;

impl Obj<'_> {
    fn text(&self, pointer: &str) -> &str {
        self.0
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn int(&self, pointer: &str) -> Option<i64> {
        self.0.pointer(pointer).and_then(Value::as_i64)
    }

    /// `<Kind> <name>: <why>`.
    fn not_ready(&self, why: &str) -> Health {
        Health::NotReady(format!(
            "{} {}: {why}",
            self.text("/kind"),
            self.text("/metadata/name")
        ))
    }

    fn fail(&self, why: &str) -> Check {
        Err(self.not_ready(why))
    }

    /// The condition of `type`, if the status has it.
    fn condition(&self, ty: &str) -> Option<&Value> {
        self.0
            .pointer("/status/conditions")?
            .as_array()?
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
    }

    fn condition_is(&self, ty: &str, status: &str) -> Option<&Value> {
        self.condition(ty)
            .filter(|c| c.get("status").and_then(Value::as_str) == Some(status))
    }

    /// Fails while the controller has not seen the latest generation. With `required`, a
    /// status without `observedGeneration` has not been written by the controller yet.
    fn observed(&self, required: bool) -> Check {
        let Some(generation) = self.int("/metadata/generation") else {
            return Ok(());
        };
        match self.int("/status/observedGeneration") {
            Some(seen) if seen >= generation => Ok(()),
            Some(seen) => self.fail(&format!(
                "the controller has not observed generation {generation} yet (observed {seen})"
            )),
            None if required => self.fail("the controller has not reported a status yet"),
            None => Ok(()),
        }
    }

    /// Fails when `have` (at `pointer`, missing is 0) is below `want`.
    fn at_least(&self, pointer: &str, want: i64, what: &str) -> Check {
        let have = self.int(pointer).unwrap_or(0);
        if have < want {
            return self.fail(&format!("{have} of {want} {what}"));
        }
        Ok(())
    }
}

/// `reason: message` of a condition, either part possibly missing.
fn explain(c: &Value, fallback: &str) -> String {
    let field = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("");
    match (field("reason"), field("message")) {
        ("", "") => fallback.to_string(),
        (reason, "") => reason.to_string(),
        ("", message) => message.to_string(),
        (reason, message) => format!("{reason}: {message}"),
    }
}

fn deployment(o: &Obj) -> Check {
    o.observed(true)?;
    if let Some(c) = o.condition("Progressing")
        && c.get("reason").and_then(Value::as_str) == Some("ProgressDeadlineExceeded")
    {
        return Err(Health::NotReady(explain(c, "ProgressDeadlineExceeded")));
    }
    let want = o.int("/spec/replicas").unwrap_or(1);
    o.at_least("/status/updatedReplicas", want, "replicas updated")?;
    let total = o.int("/status/replicas").unwrap_or(0);
    if total > want {
        return o.fail(&format!(
            "{} old replicas pending termination",
            total - want
        ));
    }
    o.at_least("/status/availableReplicas", want, "replicas available")
}

fn stateful_set(o: &Obj) -> Check {
    o.observed(true)?;
    let want = o.int("/spec/replicas").unwrap_or(1);
    o.at_least("/status/readyReplicas", want, "replicas ready")?;
    o.at_least("/status/updatedReplicas", want, "replicas updated")?;
    let update = o.text("/status/updateRevision");
    if !update.is_empty() && o.text("/status/currentRevision") != update {
        return o.fail(&format!("rolling update to revision {update} in progress"));
    }
    Ok(())
}

fn daemon_set(o: &Obj) -> Check {
    o.observed(true)?;
    let want = o.int("/status/desiredNumberScheduled").unwrap_or(0);
    o.at_least("/status/updatedNumberScheduled", want, "pods updated")?;
    o.at_least("/status/numberAvailable", want, "pods available")
}

fn job(o: &Obj) -> Check {
    if o.condition_is("Complete", "True").is_some() {
        return Ok(());
    }
    if let Some(c) = o.condition_is("Failed", "True") {
        return Err(Health::NotReady(explain(c, "the Job failed")));
    }
    o.fail("running")
}

fn service(o: &Obj) -> Check {
    if o.text("/spec/type") != "LoadBalancer" {
        return Ok(());
    }
    let has_address =
        o.0.pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    if has_address {
        return Ok(());
    }
    o.fail("waiting for a load balancer address")
}

fn claim(o: &Obj) -> Check {
    match o.text("/status/phase") {
        "Bound" => Ok(()),
        "" => o.fail("not Bound yet"),
        phase => o.fail(&format!("{phase}, not Bound")),
    }
}

fn crd(o: &Obj) -> Check {
    if o.condition_is("Established", "True").is_some() {
        return Ok(());
    }
    match o.condition_is("NamesAccepted", "False") {
        Some(c) => Err(Health::NotReady(explain(c, "names not accepted"))),
        None => o.fail("not Established yet"),
    }
}

/// Any other kind: its `Ready` condition, if it has one, once its generation is observed.
fn generic(o: &Obj) -> Check {
    o.observed(false)?;
    let Some(ready) = o.condition("Ready") else {
        return Ok(());
    };
    if let (Some(seen), Some(generation)) = (
        ready.get("observedGeneration").and_then(Value::as_i64),
        o.int("/metadata/generation"),
    ) && seen < generation
    {
        return o.fail(&format!(
            "the Ready condition is about generation {seen}, not {generation}"
        ));
    }
    match ready.get("status").and_then(Value::as_str) {
        Some("True") => Ok(()),
        status => Err(Health::NotReady(explain(
            ready,
            &format!(
                "{} {}: Ready is {}",
                o.text("/kind"),
                o.text("/metadata/name"),
                status.unwrap_or("unknown")
            ),
        ))),
    }
}

#[cfg(test)]
mod tests;

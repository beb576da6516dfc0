//! Health, drift and Missing objects end to end: the emulator's status subresource (written
//! by hand, with its workload controllers paused) drives each kind's health; hand edits and
//! deletes go through the emulator's API as `kubectl` would make them; assertions read the
//! hub's view (`flotilla status cluster east -o json`). `restart`: the same after an agent
//! restart, for the deployments it held.

use std::sync::Arc;

use flotilla_tests::fleet::{TestFleet, wait_for};
use flotilla_tests::git_server::TestRepo;
use flotilla_tests::kube_emulator::KubeEmulator;
use serde_json::{Value, json};

mod manifests;
mod restart;

use manifests::{CLAIM, CONFIG_MAP, CRD, DATABASE, DEPLOYMENT, LB_SERVICE, job};

/// One cluster `east` and one bundle `apps/app` (from `files`), with drift options.
struct Health {
    fleet: TestFleet,
    repo: TestRepo,
    kube: Arc<KubeEmulator>,
}

#[derive(Default)]
struct Options {
    /// The GitRepo's `correctDrift.enabled`.
    correct_drift: bool,
    /// Pause the emulator's workload controllers before anything is applied.
    manual_status: bool,
}

impl Health {
    async fn start(files: &[(&str, &str)], options: Options) -> anyhow::Result<Self> {
        let mut fleet = TestFleet::start().await?;
        let kube = fleet.add_cluster("east").await?;
        kube.pause_workload_controllers(options.manual_status);
        let repo = fleet.git.create_repo("apps")?;
        for (path, body) in files {
            repo.write(path, body)?;
        }
        repo.commit("first")?;
        let gitrepo = format!(
            "apiVersion: flotilla.dev/v1\nkind: GitRepo\nmetadata: {{name: apps}}\nspec:\n  repo: {}\n  paths: [app]\n  correctDrift: {{enabled: {}}}\n",
            fleet.git.http_url("apps"),
            options.correct_drift
        );
        let path = fleet.admin_config().with_file_name("gitrepo.yaml");
        std::fs::write(&path, gitrepo)?;
        fleet
            .cli(&["apply", "-f", path.to_str().expect("utf-8 path")])
            .await?;
        fleet.sync("apps").await?;
        Ok(Self { fleet, repo, kube })
    }

    /// Waits until the hub's view of `apps/app` on `east` satisfies `check`; returns it.
    async fn wait(&self, what: &str, check: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let last = std::sync::Mutex::new(Value::Null);
        let found = wait_for(what, || async {
            let view = self
                .fleet
                .cli(&["status", "cluster", "east", "-o", "json"])
                .await
                .ok()?;
            let view: Value = serde_json::from_str(&view).ok()?;
            let d = view["deployments"]
                .as_array()?
                .iter()
                .find(|d| d["bundle"] == "apps/app")?
                .clone();
            *last.lock().expect("lock") = d.clone();
            check(&d).then_some(d)
        })
        .await;
        found.map_err(|e| e.context(format!("last seen: {:#}", last.lock().expect("lock"))))
    }

    /// Writes the status subresource of `kind`/`name` in `default`, as its controller would.
    fn set_status(&self, kind: &str, name: &str, status: Value) -> anyhow::Result<()> {
        self.kube
            .set_status(api_version(kind), kind, Some("default"), name, status)?;
        Ok(())
    }

    /// Changes `kind`/`name` in `default` with a read-modify-PUT by `manager`.
    fn edit(
        &self,
        kind: &str,
        name: &str,
        manager: &str,
        edit: impl FnOnce(&mut Value),
    ) -> anyhow::Result<()> {
        let ns = Some("default");
        self.kube
            .edit_object(api_version(kind), kind, ns, name, manager, edit)?;
        Ok(())
    }

    /// `kind`/`name` in `default` as the API server holds it.
    fn live(&self, kind: &str, name: &str) -> Option<Value> {
        self.kube
            .get_object(api_version(kind), kind, Some("default"), name)
    }

    async fn wait_state(&self, state: &str) -> anyhow::Result<Value> {
        self.wait(&format!("deployment {state}"), |d| d["state"] == state)
            .await
    }

    /// A commit of `files` and the sync that brings it.
    async fn commit(&self, files: &[(&str, &str)]) -> anyhow::Result<String> {
        for (path, body) in files {
            self.repo.write(path, body)?;
        }
        let rev = self.repo.commit("change")?;
        self.fleet.sync("apps").await?;
        Ok(rev)
    }
}

/// The apiVersion the tests use for `kind`.
fn api_version(kind: &str) -> &'static str {
    match kind {
        "Deployment" => "apps/v1",
        "Job" => "batch/v1",
        "Database" => "example.com/v1",
        _ => "v1",
    }
}

/// The object `kind`/`name` of a deployment view.
fn object<'a>(d: &'a Value, kind: &str, name: &str) -> &'a Value {
    d["objects"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["kind"] == kind && o["name"] == name))
        .unwrap_or(&Value::Null)
}

fn object_is(d: &Value, kind: &str, name: &str, state: &str) -> bool {
    object(d, kind, name)["state"] == state
}

/// A Deployment is NotReady until its controller reports; a progress deadline shows with its
/// reason; a finished rollout is Ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_is_ready_once_rolled_out() -> anyhow::Result<()> {
    let options = Options {
        manual_status: true,
        ..Options::default()
    };
    let h = Health::start(&[("app/web.yaml", DEPLOYMENT)], options).await?;
    let d = h.wait_state("NotReady").await?;
    assert_eq!(
        d["message"],
        "app/web.yaml#1: Deployment/web: Deployment web: the controller has not reported a status yet"
    );
    let status = |updated: i64, available: i64, progressing: Value| {
        json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": updated,
            "availableReplicas": available, "conditions": [progressing]})
    };
    let deadline = json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet \"web-abc\" has timed out progressing."});
    h.set_status("Deployment", "web", status(1, 1, deadline))?;
    let d = h
        .wait("progress deadline", |d| {
            d["message"]
                .as_str()
                .is_some_and(|m| m.contains("ProgressDeadlineExceeded"))
        })
        .await?;
    assert_eq!(d["state"], "NotReady");
    assert_eq!(
        object(&d, "Deployment", "web")["message"],
        "ProgressDeadlineExceeded: ReplicaSet \"web-abc\" has timed out progressing."
    );
    let progressing =
        json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"});
    h.set_status("Deployment", "web", status(3, 1, progressing.clone()))?;
    h.wait("one of three available", |d| {
        object(d, "Deployment", "web")["message"] == "Deployment web: 1 of 3 replicas available"
    })
    .await?;
    h.set_status("Deployment", "web", status(3, 3, progressing))?;
    let d = h.wait_state("Ready").await?;
    assert_eq!(
        (
            d["message"].as_str(),
            object(&d, "Deployment", "web")["message"].as_str()
        ),
        (Some(""), Some(""))
    );
    Ok(())
}

/// With the emulator's controllers running (as on a healthy cluster) workloads, Jobs, claims
/// and load balancers become Ready by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_cluster_makes_every_kind_ready() -> anyhow::Result<()> {
    let h = Health::start(
        &[
            ("app/web.yaml", DEPLOYMENT),
            ("app/jobs.yaml", &job("migrate")),
            ("app/lb.yaml", LB_SERVICE),
            ("app/claim.yaml", CLAIM),
        ],
        Options::default(),
    )
    .await?;
    let d = h.wait_state("Ready").await?;
    let states: Vec<&str> = d["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["state"].as_str())
        .collect();
    assert_eq!(states, ["Ready"; 4], "{d:#}");
    Ok(())
}

/// A Job is NotReady while it runs, Ready once Complete, NotReady with its reason once Failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_or_fail() -> anyhow::Result<()> {
    let options = Options {
        manual_status: true,
        ..Options::default()
    };
    let jobs = format!("{}---\n{}", job("ok"), job("bad"));
    let h = Health::start(&[("app/jobs.yaml", &jobs)], options).await?;
    let d = h.wait_state("NotReady").await?;
    assert_eq!(d["message"], "app/jobs.yaml#1: Job/ok: Job ok: running");
    let condition = |ty: &str, reason: &str, message: &str| json!({"conditions": [{"type": ty, "status": "True", "reason": reason, "message": message}]});
    h.set_status(
        "Job",
        "ok",
        condition(
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        ),
    )?;
    h.set_status(
        "Job",
        "bad",
        condition(
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ),
    )?;
    let d = h
        .wait("ok complete, bad failed", |d| {
            object_is(d, "Job", "ok", "Ready")
                && object(d, "Job", "bad")["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("BackoffLimitExceeded"))
        })
        .await?;
    assert_eq!(d["state"], "NotReady");
    assert_eq!(
        d["message"],
        "app/jobs.yaml#2: Job/bad: BackoffLimitExceeded: Job has reached the specified backoff limit"
    );
    Ok(())
}

/// A LoadBalancer Service waits for an address, a claim for Bound, a CRD for Established and a
/// custom resource for its Ready condition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_claims_crds_and_custom_resources() -> anyhow::Result<()> {
    let options = Options {
        manual_status: true,
        ..Options::default()
    };
    let files = [
        ("app/lb.yaml", LB_SERVICE),
        ("app/claim.yaml", CLAIM),
        ("app/crd.yaml", CRD),
        ("app/db.yaml", DATABASE),
    ];
    let h = Health::start(&files, options).await?;
    let d = h
        .wait("applied", |d| {
            d["state"] == "NotReady" && object_is(d, "Database", "orders", "Ready")
        })
        .await?;
    assert_eq!(
        object(&d, "Service", "front")["message"],
        "Service front: waiting for a load balancer address"
    );
    assert_eq!(
        object(&d, "PersistentVolumeClaim", "data")["message"],
        "PersistentVolumeClaim data: Pending, not Bound"
    );
    assert_eq!(
        object(&d, "CustomResourceDefinition", "databases.example.com")["state"],
        "Ready"
    );

    let not_ready = json!({"conditions": [{"type": "Ready", "status": "False", "reason": "Provisioning", "message": "creating the primary"}]});
    h.set_status("Database", "orders", not_ready)?;
    h.wait("database provisioning", |d| {
        object(d, "Database", "orders")["message"] == "Provisioning: creating the primary"
    })
    .await?;
    h.set_status(
        "Service",
        "front",
        json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}),
    )?;
    h.set_status("PersistentVolumeClaim", "data", json!({"phase": "Bound"}))?;
    let ready = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Available"}]});
    h.set_status("Database", "orders", ready)?;
    h.wait_state("Ready").await?;
    Ok(())
}

/// Without correctDrift a hand edit is reported (Modified, with the fields) until the next
/// commit re-applies; a deleted object is Missing until then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_and_deletes_are_reported_without_correct_drift() -> anyhow::Result<()> {
    let h = Health::start(
        &[
            ("app/config.yaml", CONFIG_MAP),
            ("app/web.yaml", DEPLOYMENT),
        ],
        Options::default(),
    )
    .await?;
    h.wait_state("Ready").await?;
    h.edit("ConfigMap", "settings", "kubectl-edit", |cm| {
        cm["data"]["greeting"] = json!("bonjour");
    })?;
    let d = h.wait_state("Modified").await?;
    let cm = object(&d, "ConfigMap", "settings");
    assert_eq!(cm["modifiedFields"], json!(["/data/greeting"]));
    assert_eq!(
        d["message"],
        "app/config.yaml#1: ConfigMap/settings: modified on the cluster: /data/greeting"
    );

    h.kube
        .delete_object("apps/v1", "Deployment", Some("default"), "web")?;
    let d = h.wait_state("Missing").await?;
    assert_eq!(
        object(&d, "ConfigMap", "settings")["state"],
        "Modified",
        "still reported"
    );
    assert!(h.live("Deployment", "web").is_none(), "not re-created");

    // The next commit applies everything again: restored and reverted.
    h.commit(&[("app/more.yaml", &CONFIG_MAP.replace("settings", "more"))])
        .await?;
    let d = h.wait_state("Ready").await?;
    assert_eq!(
        object(&d, "ConfigMap", "settings")["modifiedFields"],
        json!([])
    );
    let cm = h
        .kube
        .get_object("v1", "ConfigMap", Some("default"), "settings")
        .unwrap();
    assert_eq!(cm["data"]["greeting"], "hello");
    assert!(h.live("Deployment", "web").is_some());
    Ok(())
}

/// With correctDrift a hand edit is reverted and a deleted object re-created at once; each is
/// counted on the object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correct_drift_reverts_edits_and_restores_deletes() -> anyhow::Result<()> {
    let options = Options {
        correct_drift: true,
        ..Options::default()
    };
    let h = Health::start(
        &[
            ("app/config.yaml", CONFIG_MAP),
            ("app/web.yaml", DEPLOYMENT),
        ],
        options,
    )
    .await?;
    h.wait_state("Ready").await?;
    h.edit("Deployment", "web", "kubectl-edit", |d| {
        d["spec"]["replicas"] = json!(5);
    })?;
    h.wait("replicas reverted", |d| {
        object(d, "Deployment", "web")["driftCorrections"] == 1
    })
    .await?;
    let web = h
        .kube
        .get_object("apps/v1", "Deployment", Some("default"), "web")
        .unwrap();
    assert_eq!(web["spec"]["replicas"], 3);
    let d = h.wait_state("Ready").await?;
    assert_eq!(
        object(&d, "Deployment", "web")["message"],
        "drift corrected: /spec/replicas"
    );

    h.kube
        .delete_object("v1", "ConfigMap", Some("default"), "settings")?;
    let d = h
        .wait("config map restored", |d| {
            object(d, "ConfigMap", "settings")["driftCorrections"] == 1
        })
        .await?;
    assert_eq!(
        object(&d, "ConfigMap", "settings")["message"],
        "re-created after it was deleted from the cluster"
    );
    let cm = h
        .kube
        .get_object("v1", "ConfigMap", Some("default"), "settings")
        .expect("re-created");
    assert_eq!(cm["data"]["greeting"], "hello");
    h.wait_state("Ready").await?;
    Ok(())
}

/// fleet.yaml `diff.comparePatches` keeps `/spec/replicas` (an autoscaler's business) from
/// showing as drift; other fields still do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_patches_ignore_replicas() -> anyhow::Result<()> {
    const FLEET_YAML: &str = "diff:
  comparePatches:
  - apiVersion: apps/v1
    kind: Deployment
    name: web
    jsonPointers: [/spec/replicas]
";
    let h = Health::start(
        &[("app/fleet.yaml", FLEET_YAML), ("app/web.yaml", DEPLOYMENT)],
        Options::default(),
    )
    .await?;
    h.wait_state("Ready").await?;
    h.edit("Deployment", "web", "hpa-controller", |d| {
        d["spec"]["replicas"] = json!(6);
    })?;
    // Observations are handled in order: once the later image edit shows, the replicas
    // edit was looked at and let through.
    h.edit("Deployment", "web", "kubectl-edit", |d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    })?;
    let d = h.wait_state("Modified").await?;
    assert_eq!(
        object(&d, "Deployment", "web")["modifiedFields"],
        json!(["/spec/template/spec/containers/0/image"])
    );
    Ok(())
}

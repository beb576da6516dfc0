//! What the fleet index costs at the scale it promises: 10,000 clusters and ~500,000 bundle
//! deployments on one hub, against a real temporary sled store (its writes are part of the
//! cost). Each operation is repeated and reported as median / p95, with how many clusters it
//! notified: work must follow what changed, never clusters x bundles per event.
//!
//! The fleet: clusters `c00000`.. labelled `env` (dev/test/prod), `region` (eu/us/ap) and
//! `ring` (0..99). GitRepo `apps` has environments dev/test/prod of 50 bundles each, every
//! 10th bundle with a `region: eu` target customization and `app49` depending on `app00`, so
//! every cluster runs 50 of its bundles. GitRepo `canary` (5 bundles) targets the cluster
//! group `canary` (`ring In [0]`, 1% of the clusters). Agents report Ready for everything.
//!
//! `cargo bench -p flotilla-hub --bench fleet`; `FLEET_BENCH_CLUSTERS` (default 10000)
//! scales the fleet down for a quick look. docs/performance.md reads the figures.
#![allow(clippy::print_stdout)] // a bench reports on stdout

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_hub::fleet::{Fleet, Session};
use flotilla_hub::model::{
    Bundle, BundleContent, BundleId, Cluster, ClusterId, ContentHash, Customization, Dependency,
    DeploymentState, Environment, GitRepo, GitRepoSpec, ManifestRef, ObjectState, ObjectStatus,
    ReportedStatus,
};
use flotilla_hub::store::Store;
use flotilla_hub::target::{ClusterGroup, ClusterTarget, LabelSelector, Operator, Requirement};

const ENVS: [&str; 3] = ["dev", "test", "prod"];
const REGIONS: [&str; 3] = ["eu", "us", "ap"];
const BUNDLES_PER_ENV: usize = 50;
const CANARY_BUNDLES: usize = 5;

/// The fleet under test and what the bench keeps of it.
struct Bench {
    store: Store,
    fleet: Arc<Fleet>,
    ids: Vec<ClusterId>,
    /// One live stream per cluster, as connected agents have.
    sessions: Vec<Session>,
    /// Each `apps` environment's bundles as last committed.
    apps: BTreeMap<&'static str, Vec<Bundle>>,
    commits: usize,
}

fn main() {
    if let Some(dir) = std::env::var_os("FLEET_BENCH_RESTART") {
        return restart_cold(Path::new(&dir));
    }
    let clusters: usize = std::env::var("FLEET_BENCH_CLUSTERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let rss_empty = rss_kib();
    let mut b = setup(dir.path());
    println!(
        "fleet bench: {clusters} clusters; GitRepo apps: {} environments x {BUNDLES_PER_ENV} bundles; GitRepo canary: {CANARY_BUNDLES} bundles on group canary",
        ENVS.len()
    );
    println!(
        "{:<50} {:>6} {:>10} {:>10}  notes",
        "operation", "n", "median", "p95"
    );
    register(&mut b, clusters);
    let rss_placed = rss_kib();
    report_ready(&b);
    let rss_reported = rss_kib();
    connect(&mut b);
    commits(&mut b);
    relabel(&mut b, 100);
    regroup(&mut b, 20);
    let deployments = views(&b);
    restart_warm(&b, 3);
    drop(b); // the streams, the index and the store: the store's files are free again
    let per = |kib: u64| kib as f64 * 1024.0 / deployments as f64;
    println!(
        "memory (VmRSS): empty store {} MiB; clusters placed {} MiB (+{:.0} B/deployment); statuses reported {} MiB (+{:.0} B/deployment, sled's cache included); peak {} MiB",
        rss_empty / 1024,
        rss_placed / 1024,
        per(rss_placed.saturating_sub(rss_empty)),
        rss_reported / 1024,
        per(rss_reported.saturating_sub(rss_placed)),
        peak_kib() / 1024,
    );
    println!("store on disk: {} MiB", dir_bytes(dir.path()) / (1 << 20));
    // A new process, so that memory freed by the runs above does not hide the index's size.
    let exe = std::env::current_exe().expect("bench executable");
    let restarted = std::process::Command::new(exe)
        .env("FLEET_BENCH_RESTART", dir.path())
        .status()
        .expect("restart process");
    assert!(restarted.success());
}

/// The GitRepos, the canary group and every environment's bundles, before any cluster.
fn setup(dir: &Path) -> Bench {
    let store = Store::open(dir).expect("store");
    let envs = ENVS.iter().map(|e| Environment {
        name: e.to_string(),
        branch: e.to_string(),
        target: selector_target(&[("env", e)]),
    });
    let canary_target = ClusterTarget {
        cluster_group: Some("canary".into()),
        ..Default::default()
    };
    for (name, environments, targets) in [
        ("apps", envs.collect(), vec![]),
        ("canary", vec![], vec![canary_target]),
    ] {
        let repo = GitRepo {
            spec: spec(name, environments, targets),
            status: Default::default(),
        };
        store.put_repo(&repo).expect("put repo");
    }
    let fleet = Fleet::load(store.clone()).expect("load");
    fleet.set_group(canary(&["0"])).expect("group");
    let mut apps = BTreeMap::new();
    for env in ENVS {
        let bundles: Vec<Bundle> = (0..BUNDLES_PER_ENV).map(|i| app_bundle(env, i)).collect();
        fleet
            .set_repo_bundles("apps", env, bundles.clone())
            .expect("bundles");
        apps.insert(env, bundles);
    }
    let canary_bundles = (0..CANARY_BUNDLES)
        .map(|i| bundle("canary", "", &format!("probe{i}"), "c0"))
        .collect();
    fleet
        .set_repo_bundles("canary", "", canary_bundles)
        .expect("canary bundles");
    Bench {
        store,
        fleet,
        ids: Vec::new(),
        sessions: Vec::new(),
        apps,
        commits: 0,
    }
}

/// Initial placement: register every cluster once the GitRepos and bundles exist.
fn register(b: &mut Bench, clusters: usize) {
    let mut samples = Vec::with_capacity(clusters);
    let started = Instant::now();
    for i in 0..clusters {
        let c = cluster(i);
        b.ids.push(c.id);
        let added = timed(&mut samples, || b.fleet.add_cluster(c).expect("add"));
        assert!(added);
    }
    let total = started.elapsed();
    row(
        "add_cluster (register + place 50 bundles)",
        &mut samples,
        &format!("all {clusters}: {}", fmt(total)),
    );
}

/// Every agent reports Ready for what it was sent (which releases `app49` after `app00`).
fn report_ready(b: &Bench) {
    let mut samples = Vec::new();
    let started = Instant::now();
    for id in &b.ids {
        let mut reported = std::collections::HashSet::new();
        // Reporting app00 Ready releases app49: a second pass reports that one too.
        loop {
            let fresh: Vec<_> = b
                .fleet
                .desired(*id)
                .into_iter()
                .filter(|(bundle, _)| !reported.contains(bundle))
                .collect();
            if fresh.is_empty() {
                break;
            }
            for (bundle, content) in fresh {
                let status = ready(&content);
                timed(&mut samples, || b.fleet.record_status(*id, &bundle, status))
                    .expect("status");
                reported.insert(bundle);
            }
        }
    }
    let note = format!("all {}: {}", samples.len(), fmt(started.elapsed()));
    row("record_status (Ready, 2 objects)", &mut samples, &note);
}

/// Connect a stream for every cluster and give it its full sync, as agents do on connect.
fn connect(b: &mut Bench) {
    let mut samples = Vec::with_capacity(b.ids.len());
    for id in &b.ids {
        let session = b.fleet.connect(*id).expect("connect");
        let sent = timed(&mut samples, || b.fleet.full_sync(*id));
        assert!(sent.len() >= BUNDLES_PER_ENV);
        b.sessions.push(session);
    }
    row("full_sync at connect (every cluster)", &mut samples, "");
}

/// Commits to one environment, then to all three, each followed by the streams taking
/// their changes.
fn commits(b: &mut Bench) {
    let mut takes = Vec::new();
    for (what, changed, reps) in [
        ("commit: 1 bundle changed in env dev", 1, 20),
        ("commit: 50 bundles changed in env dev", BUNDLES_PER_ENV, 10),
    ] {
        let mut samples = Vec::new();
        let mut note = String::new();
        for _ in 0..reps {
            let bundles = commit(b, "dev", changed);
            timed(&mut samples, || {
                b.fleet.set_repo_bundles("apps", "dev", bundles)
            })
            .expect("commit");
            takes.clear();
            note = notified(drain(b, &mut takes));
        }
        row(what, &mut samples, &note);
        row("  then take_changes, per cluster", &mut takes, "");
    }
    let mut samples = Vec::new();
    let mut note = String::new();
    for _ in 0..3 {
        let all: Vec<_> = ENVS.map(|e| (e, commit(b, e, BUNDLES_PER_ENV))).into();
        timed(&mut samples, || {
            for (env, bundles) in all {
                b.fleet
                    .set_repo_bundles("apps", env, bundles)
                    .expect("commit");
            }
        });
        let started = Instant::now();
        let counts = drain(b, &mut Vec::new());
        note = format!(
            "{}; drained in {}",
            notified(counts),
            fmt(started.elapsed())
        );
    }
    row(
        "commit: 50 bundles changed in all 3 envs",
        &mut samples,
        &note,
    );
}

/// Move one cluster between environments and back.
fn relabel(b: &mut Bench, reps: usize) {
    let mut samples = Vec::new();
    let mut note = String::new();
    for i in 0..reps {
        let mut labels = labels(0);
        labels.insert("env".into(), ["test", "dev"][i % 2].into());
        timed(&mut samples, || {
            b.fleet.set_cluster_labels("c00000", labels)
        })
        .expect("relabel")
        .expect("cluster exists");
        note = notified(drain(b, &mut Vec::new()));
    }
    row("set_cluster_labels: env dev <-> test", &mut samples, &note);
}

/// Grow the canary group from ring 0 to rings 0 and 1 (1% more clusters) and back.
fn regroup(b: &mut Bench, reps: usize) {
    let mut samples = Vec::new();
    let mut note = String::new();
    for i in 0..reps {
        let group = canary(if i % 2 == 0 { &["0", "1"] } else { &["0"] });
        timed(&mut samples, || b.fleet.set_group(group)).expect("group");
        note = notified(drain(b, &mut Vec::new()));
    }
    row(
        "set_group: selector moves 1% of clusters",
        &mut samples,
        &note,
    );
}

/// The read paths: a stream with nothing pending, a full sync, the status view. Returns
/// the number of deployments.
fn views(b: &Bench) -> usize {
    let step = (b.ids.len() / 1000).max(1);
    let (mut take, mut full) = (Vec::new(), Vec::new());
    for (s, id) in b.sessions.iter().zip(&b.ids).step_by(step) {
        assert!(timed(&mut take, || b.fleet.take_changes(s)).is_empty());
        timed(&mut full, || b.fleet.full_sync(*id));
    }
    row("take_changes, nothing pending", &mut take, "");
    row("full_sync, steady state", &mut full, "");
    let mut samples = Vec::new();
    let mut rows = Vec::new();
    for _ in 0..3 {
        rows = timed(&mut samples, || b.fleet.deployments());
    }
    let n = rows.len();
    row(
        "deployments() (full status view)",
        &mut samples,
        &format!("{n} rows"),
    );
    // The view sorts its rows, gathered in the index's hash order of clusters, by name:
    // the same sort on the same rows, shuffled by cluster the same way.
    rows.sort_by_key(|v| v.cluster);
    let mut sort = Vec::new();
    timed(&mut sort, || {
        rows.sort_by(|x, y| (&x.cluster_name, &x.bundle).cmp(&(&y.cluster_name, &y.bundle)))
    });
    row("  of which sorting the rows", &mut sort, "");
    for (what, view) in [
        ("summary_view() (fleet at a glance, rollups)", 0),
        ("gitrepo_view(apps)", 1),
        ("cluster_view(c00000, with history)", 2),
    ] {
        let mut samples = Vec::new();
        for _ in 0..20 {
            timed(&mut samples, || match view {
                0 => b.fleet.summary_view(),
                1 => b.fleet.gitrepo_view("apps"),
                _ => b.fleet.cluster_view("c00000", true).expect("cluster"),
            });
        }
        row(what, &mut samples, "");
    }
    lock_hold(b);
    n
}

/// How long the status view keeps writers out: relabel a cluster over and over while
/// another thread builds the view; the slowest relabel waited for the view's read lock.
fn lock_hold(b: &Bench) {
    let mut samples = Vec::new();
    std::thread::scope(|s| {
        let view = s.spawn(|| b.fleet.deployments().len());
        let mut i = 0;
        while !view.is_finished() {
            let mut labels = labels(3);
            labels.insert("env".into(), ["test", "dev"][i % 2].into());
            timed(&mut samples, || {
                b.fleet.set_cluster_labels("c00003", labels)
            })
            .expect("relabel");
            i += 1;
        }
    });
    let worst = samples.iter().max().copied().unwrap_or_default();
    row(
        "set_cluster_labels, longest wait on deployments()",
        &mut [worst],
        &format!("the slowest of {} relabels meanwhile", samples.len()),
    );
}

/// A restart: load a second index from the populated store (already open).
fn restart_warm(b: &Bench, reps: usize) {
    let mut samples = Vec::new();
    for _ in 0..reps {
        let loaded = timed(&mut samples, || Fleet::load(b.store.clone())).expect("load");
        assert_eq!(loaded.cluster_count(), b.ids.len());
    }
    row("Fleet::load (restart, store open)", &mut samples, "");
    // What of a load is reading the store: the statuses dominate it.
    let mut read = Vec::new();
    let n = timed(&mut read, || b.store.statuses())
        .expect("statuses")
        .len();
    row(
        "  of which store.statuses()",
        &mut read,
        &format!("{n} records"),
    );
}

/// In a process of its own: a cold restart (open the store's files, load the index), then
/// the memory one index takes, as what a second load from the same store adds.
fn restart_cold(dir: &Path) {
    let mut samples = Vec::new();
    let fleet = timed(&mut samples, || {
        Fleet::load(Store::open(dir).expect("reopen")).expect("load")
    });
    let n = fleet.cluster_count();
    row(
        "Store::open + Fleet::load (cold restart, new process)",
        &mut samples,
        &format!("{n} clusters"),
    );
    let rss_loaded = rss_kib();
    let second = Fleet::load(fleet.store().clone()).expect("load");
    let index = rss_kib().saturating_sub(rss_loaded);
    let deployments = second.deployments().len();
    println!(
        "memory: restarted hub {} MiB; one index of {deployments} deployments: {} MiB = {:.0} B/deployment",
        rss_loaded / 1024,
        index / 1024,
        index as f64 * 1024.0 / deployments as f64
    );
}

/// The next commit of `env`: every bundle moves to it, the first `changed` get new content.
fn commit(b: &mut Bench, env: &str, changed: usize) -> Vec<Bundle> {
    b.commits += 1;
    let rev = format!("commit{:04}", b.commits);
    let bundles = b.apps.get_mut(env).expect("environment");
    for (i, bundle) in bundles.iter_mut().enumerate() {
        bundle.commit = rev.clone();
        if i < changed {
            set_content(bundle, &rev);
        }
    }
    bundles.clone()
}

/// Let every stream take its changes, as the agents' streams do when notified. Returns how
/// many clusters had any and how many bundle changes they took; times each non-empty take.
fn drain(b: &Bench, takes: &mut Vec<Duration>) -> (usize, usize) {
    let (mut clusters, mut bundles) = (0, 0);
    for s in &b.sessions {
        let started = Instant::now();
        let changes = b.fleet.take_changes(s);
        if !changes.is_empty() {
            takes.push(started.elapsed());
            clusters += 1;
            bundles += changes.len();
        }
    }
    (clusters, bundles)
}

fn notified((clusters, bundles): (usize, usize)) -> String {
    format!("{clusters} clusters notified, {bundles} bundle changes")
}

fn cluster(i: usize) -> Cluster {
    Cluster {
        id: ClusterId::new(),
        name: format!("c{i:05}"),
        labels: labels(i),
        registered_at: 0,
        agent_version: "0.1.0".into(),
        kubernetes_version: "v1.31.0".into(),
        token_id: "bench".into(),
        certificate: Default::default(),
    }
}

fn labels(i: usize) -> BTreeMap<String, String> {
    [
        ("env", ENVS[i % 3].to_string()),
        ("region", REGIONS[(i / 3) % 3].to_string()),
        ("ring", (i % 100).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn spec(name: &str, environments: Vec<Environment>, targets: Vec<ClusterTarget>) -> GitRepoSpec {
    GitRepoSpec {
        name: name.into(),
        url: format!("https://git.example/{name}.git"),
        branch: "main".into(),
        revision: None,
        paths: vec![],
        poll_interval_secs: 15,
        disable_polling: false,
        labels: BTreeMap::new(),
        targets,
        environments,
        correct_drift: false,
        keep_resources: false,
        paused: false,
        credentials: None,
    }
}

fn selector_target(labels: &[(&str, &str)]) -> ClusterTarget {
    let match_labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    ClusterTarget {
        cluster_selector: Some(LabelSelector {
            match_labels,
            match_expressions: vec![],
        }),
        ..Default::default()
    }
}

fn canary(rings: &[&str]) -> ClusterGroup {
    ClusterGroup {
        name: "canary".into(),
        labels: BTreeMap::new(),
        selector: Some(LabelSelector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![Requirement {
                key: "ring".into(),
                operator: Operator::In,
                values: rings.iter().map(|r| r.to_string()).collect(),
            }],
        }),
    }
}

/// Bundle `app<i>` of environment `env`: every 10th with a region=eu customization,
/// `app49` depending on `app00`.
fn app_bundle(env: &str, i: usize) -> Bundle {
    let mut b = bundle("apps", env, &format!("app{i:02}"), "c0");
    if i.is_multiple_of(10) {
        b.customizations.push(Customization {
            name: "eu".into(),
            target: selector_target(&[("region", "eu")]),
            do_not_deploy: false,
            content: None,
            error: None,
        });
    }
    if i == BUNDLES_PER_ENV - 1 {
        b.depends_on.push(Dependency {
            name: Some("app00".into()),
            selector: None,
        });
    }
    set_content(&mut b, "c0");
    b
}

fn bundle(repo: &str, env: &str, path: &str, rev: &str) -> Bundle {
    let mut b = Bundle {
        id: BundleId::new(repo, path),
        repo: repo.into(),
        env: env.into(),
        path: path.into(),
        tree_id: String::new(),
        commit: rev.into(),
        content: None,
        error: None,
        customizations: vec![],
        override_targets: vec![],
        depends_on: vec![],
        labels: BTreeMap::new(),
        warnings: vec![],
    };
    set_content(&mut b, rev);
    b
}

/// New content built at `rev` for the bundle and each of its customizations.
fn set_content(b: &mut Bundle, rev: &str) {
    let key = format!("{}/{}/{}", b.repo, b.env, b.path);
    b.tree_id = ContentHash::of(format!("{key}@{rev}").as_bytes()).0;
    b.content = Some(content(&format!("{key}@{rev}"), rev));
    for c in &mut b.customizations {
        c.content = Some(content(&format!("{key}#{}@{rev}", c.name), rev));
    }
}

/// Content of 5 manifests, as a small application has.
fn content(body: &str, rev: &str) -> Arc<BundleContent> {
    Arc::new(BundleContent {
        content_hash: ContentHash::of(body.as_bytes()),
        revision: rev.into(),
        default_namespace: "default".into(),
        manifests: (0..5)
            .map(|m| ManifestRef {
                hash: ContentHash::of(format!("{body}#{m}").as_bytes()),
                source: format!("manifests/m{m}.yaml#1"),
            })
            .collect(),
        keep_resources: false,
        correct_drift: false,
        compare_patches: Vec::new(),
    })
}

fn ready(content: &BundleContent) -> ReportedStatus {
    let object = |kind: &str| ObjectStatus {
        api_version: "v1".into(),
        kind: kind.into(),
        namespace: "default".into(),
        name: "app".into(),
        state: ObjectState::Ready,
        message: String::new(),
        source: "manifests/m0.yaml#1".into(),
        modified_fields: Vec::new(),
        drift_corrections: 0,
    };
    ReportedStatus {
        content_hash: content.content_hash.clone(),
        revision: content.revision.clone(),
        state: DeploymentState::Ready,
        message: String::new(),
        objects: vec![object("Service"), object("ConfigMap")],
        updated_at: 0,
    }
}

fn timed<T>(samples: &mut Vec<Duration>, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    samples.push(started.elapsed());
    out
}

/// Print one table row: the median and p95 of `samples`.
fn row(what: &str, samples: &mut [Duration], note: &str) {
    samples.sort();
    let n = samples.len();
    if n == 0 {
        println!("{what:<50} {n:>6}  (no samples) {note}");
        return;
    }
    let median = samples[n / 2];
    let p95 = samples[(n * 95).div_ceil(100) - 1];
    println!(
        "{what:<50} {n:>6} {:>10} {:>10}  {note}",
        fmt(median),
        fmt(p95)
    );
}

fn fmt(d: Duration) -> String {
    let s = d.as_secs_f64();
    match s {
        s if s < 1e-3 => format!("{:.1} µs", s * 1e6),
        s if s < 1.0 => format!("{:.2} ms", s * 1e3),
        s => format!("{s:.2} s"),
    }
}

/// A line of /proc/self/status, in KiB (Linux; 0 elsewhere).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn peak_kib() -> u64 {
    status_kib("VmHWM:")
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

//! Store round trips against a real sled database in a temporary directory.

use std::collections::BTreeMap;

use super::*;
use crate::model::*;

fn token(id: &str, max_uses: u32) -> RegistrationToken {
    RegistrationToken {
        id: id.into(),
        secret_sha256: "x".into(),
        description: String::new(),
        created_at: 0,
        expires_at: i64::MAX,
        max_uses,
        uses: 0,
        labels: Default::default(),
        group: None,
        revoked_at: None,
    }
}

#[test]
fn records_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = ClusterId::new();
    {
        let store = Store::open(dir.path()).unwrap();
        let cluster = Cluster {
            id,
            name: "east".into(),
            labels: BTreeMap::from([("env".into(), "prod".into())]),
            registered_at: 1,
            agent_version: "0.1.0".into(),
            kubernetes_version: "v1.33.0".into(),
            token_id: "t".into(),
            certificate: Default::default(),
        };
        store.put_cluster(&cluster).unwrap();
        let status = ReportedStatus {
            content_hash: ContentHash("abc".into()),
            revision: "r1".into(),
            state: DeploymentState::Ready,
            message: String::new(),
            objects: vec![],
            updated_at: 5,
        };
        store
            .put_status(id, &BundleId("repo/app".into()), &status)
            .unwrap();
        store.put_manifest(&ContentHash::of(b"{}"), b"{}").unwrap();
        drop(store);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.clusters().unwrap()[0].name, "east");
    let statuses = store.statuses().unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].0, id);
    assert_eq!(statuses[0].1.0, "repo/app");
    assert_eq!(
        store.manifest(&ContentHash::of(b"{}").0).unwrap().unwrap(),
        b"{}"
    );
}

#[test]
fn token_use_is_counted_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.put_token(&token("t1", 1)).unwrap();
    let check = |t: &RegistrationToken| {
        if t.max_uses != 0 && t.uses >= t.max_uses {
            Err("used up")
        } else {
            Ok(())
        }
    };
    assert!(matches!(store.use_token("t1", check).unwrap(), Some(Ok(_))));
    assert!(matches!(
        store.use_token("t1", check).unwrap(),
        Some(Err("used up"))
    ));
    assert!(store.use_token("nope", check).unwrap().is_none());
    assert_eq!(store.token("t1").unwrap().unwrap().uses, 1);
}

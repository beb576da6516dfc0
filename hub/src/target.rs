//! Targeting: which clusters a GitRepo, an environment or a fleet.yaml target customization
//! selects. Pure functions over model types: no I/O, no store, no proto.
//!
//! The vocabulary is Fleet's (and Kubernetes'): a target names a cluster (`clusterName`),
//! selects clusters by their labels (`clusterSelector`), names a cluster group
//! (`clusterGroup`) or selects groups by the group's own labels (`clusterGroupSelector`).
//! Every field a target sets must match; a target that sets none matches nothing, as in
//! Fleet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::GROUP_LABEL;

/// A Kubernetes label selector. An empty selector matches every cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<Requirement>,
}

/// One `matchExpressions` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// The set-based operators of a label selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl LabelSelector {
    /// Whether `labels` satisfy every term of the selector.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// Check the selector is well formed; the error names the field under `at`.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        for (i, r) in self.match_expressions.iter().enumerate() {
            let here = format!("{at}.matchExpressions[{i}]");
            if r.key.is_empty() {
                return Err(format!("{here}.key: must not be empty"));
            }
            match r.operator {
                Operator::In | Operator::NotIn if r.values.is_empty() => {
                    return Err(format!(
                        "{here}.values: operator {:?} needs at least one value",
                        r.operator
                    ));
                }
                Operator::Exists | Operator::DoesNotExist if !r.values.is_empty() => {
                    return Err(format!(
                        "{here}.values: operator {:?} takes no values",
                        r.operator
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A cluster group: clusters chosen by a selector, plus those registered into it by name
/// (a token's `--group`, which sets the label [`GROUP_LABEL`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterGroup {
    pub name: String,
    /// The group's own labels, which `clusterGroupSelector` selects on.
    pub labels: BTreeMap<String, String>,
    /// None: only clusters registered into the group by name are members.
    pub selector: Option<LabelSelector>,
}

impl ClusterGroup {
    /// Whether a cluster with `labels` is a member.
    pub fn contains(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.get(GROUP_LABEL) == Some(&self.name)
            || self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
}

/// One target: every field that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTarget {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_selector: Option<LabelSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_group_selector: Option<LabelSelector>,
}

/// A cluster as targeting sees it: its name, labels and the groups it belongs to.
#[derive(Clone, Copy, Debug)]
pub struct ClusterFacts<'a> {
    pub name: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Groups that contain this cluster.
    pub groups: &'a [&'a ClusterGroup],
}

impl ClusterTarget {
    /// Whether the target sets no criterion at all (and so matches nothing).
    pub fn is_empty(&self) -> bool {
        self.cluster_name.is_none()
            && self.cluster_selector.is_none()
            && self.cluster_group.is_none()
            && self.cluster_group_selector.is_none()
    }

    /// Whether this target selects `cluster`.
    pub fn matches(&self, cluster: &ClusterFacts<'_>) -> bool {
        !self.is_empty()
            && self
                .cluster_name
                .as_deref()
                .is_none_or(|n| n == cluster.name)
            && self
                .cluster_selector
                .as_ref()
                .is_none_or(|s| s.matches(cluster.labels))
            && self
                .cluster_group
                .as_deref()
                .is_none_or(|g| cluster.groups.iter().any(|x| x.name == g))
            && self
                .cluster_group_selector
                .as_ref()
                .is_none_or(|s| cluster.groups.iter().any(|g| s.matches(&g.labels)))
    }

    /// Check the target is well formed; the error names the field under `at`.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.is_empty() {
            return Err(format!(
                "{at}: a target needs at least one of clusterName, clusterSelector, clusterGroup, clusterGroupSelector (use `clusterSelector: {{}}` for every cluster)"
            ));
        }
        if let Some(s) = &self.cluster_selector {
            s.validate(&format!("{at}.clusterSelector"))?;
        }
        if let Some(s) = &self.cluster_group_selector {
            s.validate(&format!("{at}.clusterGroupSelector"))?;
        }
        Ok(())
    }
}

/// The index of the first target in `targets` that selects `cluster`.
pub fn first_match(targets: &[ClusterTarget], cluster: &ClusterFacts<'_>) -> Option<usize> {
    targets.iter().position(|t| t.matches(cluster))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn selector(yaml: &str) -> LabelSelector {
        serde_saphyr::from_str(yaml).expect("selector parses")
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let prod = labels(&[("env", "prod"), ("region", "eu")]);
        let dev = labels(&[("env", "dev")]);
        let cases = [
            ("{}", true, true),
            ("matchLabels: {env: prod}", true, false),
            ("matchLabels: {env: prod, region: us}", false, false),
            (
                "matchExpressions: [{key: env, operator: In, values: [prod, test]}]",
                true,
                false,
            ),
            (
                "matchExpressions: [{key: env, operator: NotIn, values: [prod]}]",
                false,
                true,
            ),
            (
                "matchExpressions: [{key: region, operator: NotIn, values: [us]}]",
                true,
                true,
            ),
            (
                "matchExpressions: [{key: region, operator: Exists}]",
                true,
                false,
            ),
            (
                "matchExpressions: [{key: region, operator: DoesNotExist}]",
                false,
                true,
            ),
            (
                "{matchLabels: {env: dev}, matchExpressions: [{key: region, operator: DoesNotExist}]}",
                false,
                true,
            ),
        ];
        for (yaml, on_prod, on_dev) in cases {
            let s = selector(yaml);
            assert_eq!(s.matches(&prod), on_prod, "{yaml} on prod");
            assert_eq!(s.matches(&dev), on_dev, "{yaml} on dev");
        }
    }

    #[test]
    fn malformed_selectors_name_the_field() {
        let s = selector("matchExpressions: [{key: env, operator: In}]");
        assert_eq!(
            s.validate("spec.targets[0].clusterSelector").unwrap_err(),
            "spec.targets[0].clusterSelector.matchExpressions[0].values: operator In needs at least one value"
        );
        let s = selector("matchExpressions: [{key: env, operator: Exists, values: [a]}]");
        assert!(s.validate("x").unwrap_err().contains("takes no values"));
        assert!(
            serde_saphyr::from_str::<LabelSelector>(
                "matchExpressions: [{key: a, operator: Maybe}]"
            )
            .is_err()
        );
    }

    #[test]
    fn targets_combine_every_field_they_set() {
        let edge = ClusterGroup {
            name: "edge".into(),
            labels: labels(&[("tier", "edge")]),
            selector: Some(selector("matchLabels: {site: store}")),
        };
        let by_token = ClusterGroup {
            name: "lab".into(),
            labels: BTreeMap::new(),
            selector: None,
        };
        let store_labels = labels(&[("site", "store"), ("env", "prod")]);
        let lab_labels = labels(&[(GROUP_LABEL, "lab"), ("env", "dev")]);
        assert!(edge.contains(&store_labels) && !edge.contains(&lab_labels));
        assert!(by_token.contains(&lab_labels) && !by_token.contains(&store_labels));

        let store_groups = [&edge];
        let lab_groups = [&by_token];
        let store = ClusterFacts {
            name: "store-1",
            labels: &store_labels,
            groups: &store_groups,
        };
        let lab = ClusterFacts {
            name: "lab-1",
            labels: &lab_labels,
            groups: &lab_groups,
        };
        let t = |yaml: &str| -> ClusterTarget { serde_saphyr::from_str(yaml).unwrap() };
        assert!(t("clusterName: store-1").matches(&store));
        assert!(!t("clusterName: store-1").matches(&lab));
        assert!(t("clusterGroup: lab").matches(&lab));
        assert!(!t("clusterGroup: lab").matches(&store));
        assert!(t("clusterGroupSelector: {matchLabels: {tier: edge}}").matches(&store));
        assert!(!t("clusterGroupSelector: {matchLabels: {tier: edge}}").matches(&lab));
        assert!(
            !t("{clusterGroup: edge, clusterSelector: {matchLabels: {env: dev}}}").matches(&store)
        );
        assert!(
            t("{clusterGroup: edge, clusterSelector: {matchLabels: {env: prod}}}").matches(&store)
        );
        // A target with no criterion matches nothing and is refused by validation.
        assert!(!t("name: nothing").matches(&store));
        assert!(t("name: nothing").validate("spec.targets[0]").is_err());

        let targets = [t("clusterName: lab-1"), t("clusterSelector: {}")];
        assert_eq!(first_match(&targets, &lab), Some(0));
        assert_eq!(first_match(&targets, &store), Some(1));
    }
}

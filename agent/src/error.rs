//! The errors that stop the agent. Everything else (a hub that is down, an object the API
//! server refuses) is retried or becomes a deployment's status; these need a person, so each
//! message says what to do next.

/// Why [`crate::run`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration cannot work (for example a hub URL that is not `https://host:port`).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// No hub URL from the flags, the bootstrap Secret or a stored identity.
    #[error(
        "no hub URL: pass --hub https://HOST:PORT (or set FLOTILLA_HUB), or name a bootstrap Secret \
         with a hubURL key (--bootstrap-secret NAME, as the manifest of `flotilla agent manifest` does)"
    )]
    NoHubUrl,

    /// First start (no stored identity) without a registration token.
    #[error(
        "this agent has no identity yet and no registration token: pass --token (or set FLOTILLA_TOKEN) \
         with a token from `flotilla token create`, or re-apply the install manifest from \
         `flotilla agent manifest --token TOKEN`, whose bootstrap Secret carries one"
    )]
    NoToken,

    /// The bootstrap Secret could not be read, or holds something unusable.
    #[error(
        "the bootstrap Secret {location} is unusable: {message}; check that the agent may read Secrets \
         in its namespace, and re-apply the install manifest from `flotilla agent manifest` \
         (or pass --hub, --ca and --token instead)"
    )]
    Bootstrap {
        /// `Secret namespace/name`.
        location: String,
        /// What went wrong.
        message: String,
    },

    /// No --cluster-name, and none could be derived from the `kube-system` namespace.
    #[error(
        "could not derive a cluster name from the kube-system namespace: {0}; pass --cluster-name NAME \
         (a lower-case RFC 1123 label)"
    )]
    ClusterName(String),

    /// The hub refused the registration token (unknown, expired or used up).
    #[error("the hub refused the registration token: {}", with_advice(.0, "create a new one with `flotilla token create`"))]
    TokenRefused(String),

    /// The hub refused the registration for another reason, typically the cluster name.
    #[error("the hub refused to register cluster {name:?}: {}", with_advice(.message, "choose another `--cluster-name` (a lower-case RFC 1123 label that no other cluster uses)"))]
    RegistrationRefused {
        /// The name asked for.
        name: String,
        /// The hub's answer.
        message: String,
    },

    /// The key pair or certificate request could not be made, or the hub's answer is unusable.
    #[error("could not set up the agent's credentials: {0}; this is a bug, please report it")]
    Credentials(String),

    /// The identity could not be read or written.
    #[error(
        "could not {action} the agent identity in {location}: {message}; check that the agent may \
         write there (directory permissions, or RBAC for Secrets in its namespace)"
    )]
    IdentityStore {
        /// `read` or `write`.
        action: &'static str,
        /// The directory or `Secret namespace/name`.
        location: String,
        /// What went wrong.
        message: String,
    },

    /// No usable Kubernetes credentials.
    #[error(
        "could not load Kubernetes credentials: {0}; pass --kubeconfig FILE, or run the agent in a \
         cluster with a service account"
    )]
    KubeConfig(String),

    /// The hub's CA certificate or the stored certificate cannot be used for TLS.
    #[error(
        "the TLS settings for the hub are unusable: {0}; check --ca (a PEM file with the hub's CA certificate)"
    )]
    Tls(String),
}

/// `message; advice`, unless the message already gives that advice (the hub's often does).
fn with_advice(message: &str, advice: &str) -> String {
    let command = advice.split('`').nth(1).unwrap_or(advice);
    if message.contains(command) {
        message.to_string()
    } else {
        format!("{message}; {advice}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_refusals_say_what_to_do_once() {
        let plain = AgentError::TokenRefused("token expired".into()).to_string();
        assert_eq!(
            plain,
            "the hub refused the registration token: token expired; create a new one with `flotilla token create`"
        );
        let advised = AgentError::TokenRefused(
            "registration token refused: unknown; create a new one with `flotilla token create` on the hub".into(),
        )
        .to_string();
        assert_eq!(
            advised.matches("flotilla token create").count(),
            1,
            "{advised}"
        );
    }

    #[test]
    fn a_taken_name_is_advised_once() {
        let hub = "a cluster named \"c-1\" is already registered; choose another --cluster-name, or delete the old cluster with `flotilla cluster delete`";
        let text = AgentError::RegistrationRefused {
            name: "c-1".into(),
            message: hub.into(),
        }
        .to_string();
        assert_eq!(text.matches("--cluster-name").count(), 1, "{text}");
        let plain = AgentError::RegistrationRefused {
            name: "c-1".into(),
            message: "taken".into(),
        }
        .to_string();
        assert!(plain.ends_with("choose another `--cluster-name` (a lower-case RFC 1123 label that no other cluster uses)"), "{plain}");
    }

    #[test]
    fn every_error_says_what_to_do_next() {
        let errors = [
            AgentError::NoHubUrl,
            AgentError::NoToken,
            AgentError::Bootstrap {
                location: "Secret ns/b".into(),
                message: "forbidden".into(),
            },
            AgentError::ClusterName("forbidden".into()),
            AgentError::RegistrationRefused {
                name: "x".into(),
                message: "taken".into(),
            },
            AgentError::IdentityStore {
                action: "write",
                location: "/s".into(),
                message: "denied".into(),
            },
            AgentError::KubeConfig("no file".into()),
            AgentError::Tls("bad pem".into()),
        ];
        for e in errors {
            let text = e.to_string();
            assert!(
                ["pass", "choose", "check"].iter().any(|w| text.contains(w)),
                "{text}"
            );
        }
    }
}

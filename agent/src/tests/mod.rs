//! The whole agent ([`crate::run`]) against a fake hub over real mTLS and the fake API server.
//! The real hub is exercised by the e2e tests.
//!
//! - `fake_hub`: the hub's side (registration, streams, renewal, expiry);
//! - `harness`: starting both fakes and agents, waiting with one deadline;
//! - `deploy`: registration, deploy → fetch → ack → status, removal, restart, refused token;
//! - `identity`: renewal on the stream, trust updates, registering again after expiry;
//! - `bootstrap`: the install manifest's bootstrap Secret and its token;
//! - `keep`: fleet.yaml `keepResources` on removal, and across a restart;
//! - `resume`: held deployments watched again after a restart, nothing re-sent or re-applied.

mod bootstrap;
mod deploy;
mod fake_hub;
mod harness;
mod identity;
mod keep;
mod resume;

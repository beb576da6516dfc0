//! The Flotilla hub: follows Git, builds bundles, and serves them to agents over mTLS gRPC.
//!
//! See docs/ARCHITECTURE.md for the map. In short: `source` fetches Git and builds
//! `bundle`s, `fleet` holds the in-memory index of who should run what and who is connected,
//! `grpc` is the only place that sees protobuf, `store` the only place that sees sled.

pub mod bundle;
pub mod cli;
pub mod config;
pub mod fleet;
pub mod grpc;
mod http;
pub(crate) mod hub;
pub mod metrics;
pub mod model;
pub mod objects;
pub mod pki;
pub mod render;
pub mod rollup;
pub mod source;
pub mod store;
pub mod target;
pub mod ui;
pub mod webhook;

pub use config::HubConfig;
pub use hub::{AdminCredential, Hub, HubError};

//! Flotilla's wire contract, generated from `proto/flotilla/**.proto` at build time.
//!
//! Only the hub's `grpc` module and the agent's `hub_client` module use these types; everything
//! else works on domain types and converts at that one boundary.

/// Hub ↔ agent messages and services (`flotilla.agent.v1`).
pub mod agent {
    /// Version 1 of the agent contract.
    pub mod v1 {
        tonic::include_proto!("flotilla.agent.v1");
    }
}

/// Admin API used by the CLI (`flotilla.admin.v1`).
pub mod admin {
    /// Version 1 of the admin contract.
    pub mod v1 {
        tonic::include_proto!("flotilla.admin.v1");
    }
}

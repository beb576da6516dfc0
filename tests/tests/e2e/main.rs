//! Flotilla's one end-to-end test binary: the harness lives in the `flotilla-tests` library
//! (TestFleet, the Git server, the Kubernetes API emulator); these modules are the scenarios.

mod credentials;
mod emulator;
mod fleet_examples;
mod git_server;
mod health;
mod install;
mod rotation;
mod scenarios;
mod security;
mod status;
mod targeting;
mod web;

//! Flotilla's test harness: a real Git server on loopback (`git_server`), a Kubernetes API
//! emulator over HTTPS (`kube_emulator`), and `TestFleet`, which runs a real hub and real
//! agents in-process against them (`fleet`); headless Chromium over WebDriver for the status
//! page (`browser`). Test support only; nothing here ships.

pub mod browser;
pub mod fixtures;
pub mod fleet;
pub mod git_server;
pub mod kube_emulator;
pub mod raw_agent;

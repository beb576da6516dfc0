//! `flotilla-agent`: flags → [`flotilla_agent::AgentConfig`] (see [`flotilla_agent::cli`]),
//! logging, then [`flotilla_agent::run`] until SIGINT or SIGTERM.

use clap::Parser;
use flotilla_agent::cli;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // Once, before any TLS: kube and tonic both use the process default. `run` repeats it.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let args = cli::Args::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    if args.log_format == "json" {
        logs.json().init()
    } else {
        logs.init()
    }
    let config = args.into_config()?;

    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate())?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        on_signal.cancel();
    });
    flotilla_agent::run(config, shutdown).await?;
    Ok(())
}

//! `flotilla`: the hub server (`flotilla serve`) and its admin CLI.

use anyhow::Context;
use clap::Parser;
use flotilla_hub::cli::{Cli, Command, LogFormat, execute_frames};
use flotilla_hub::{Hub, HubConfig};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let Command::Serve(args) = cli.command else {
        let watching = matches!(&cli.command, Command::Status(s) if s.watch);
        execute_frames(cli, |out| {
            // The CLI binary is the one place that prints to stdout.
            #[allow(clippy::print_stdout)]
            {
                if watching {
                    // Clear the screen and home the cursor, as `watch` does.
                    print!("\x1b[2J\x1b[H");
                }
                print!("{out}");
            }
            true
        })
        .await?;
        return Ok(());
    };
    init_tracing(args.log_format);
    let mut config = HubConfig::new(args.data_dir);
    config.listen = args.listen;
    config.http_listen = args.http_listen;
    config.allow_tls12 = args.allow_tls12;
    config.server_names = args.server_names;
    config.default_poll_interval = args.poll_interval;
    config.client_cert_ttl = args.client_cert_ttl;
    config.agent_url = args.agent_url;
    config.renderers.helm = args.helm;
    config.renderers.kubectl = args.kubectl;
    config.renderers.timeout = args.render_timeout;
    args.ui.apply(&mut config);
    if let Some(dir) = args.credentials_dir {
        config.credentials_dir = dir;
    }
    if let Some(path) = &args.webhook_secret_file {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read the webhook secret file {}; check --webhook-secret-file",
                path.display()
            )
        })?;
        config.webhook_secret = Some(
            flotilla_hub::config::WebhookSecret::new(&text)
                .with_context(|| format!("the webhook secret file {} is empty", path.display()))?,
        );
    }
    let hub = Hub::bind(config).await?;
    eprintln!(
        "flotilla hub listening on {}; admin credential: {}",
        hub.local_addr(),
        hub.admin_credential_path().display()
    );
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    hub.run(shutdown).await?;
    Ok(())
}

fn init_tracing(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

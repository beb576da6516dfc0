//! Run the Kubernetes API emulator on its own, to try `flotilla-agent` by hand without a
//! cluster: `cargo run -p flotilla-tests --example kube-emulator -- /tmp/kubeconfig`, then
//! `flotilla-agent --kubeconfig /tmp/kubeconfig ...`. Stops on Ctrl-C.

use flotilla_tests::kube_emulator::KubeEmulator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "kubeconfig".into());
    let kube = KubeEmulator::start().await?;
    kube.write_kubeconfig(std::path::Path::new(&path))?;
    eprintln!(
        "Kubernetes API emulator at {}; kubeconfig written to {path}",
        kube.url()
    );
    tokio::signal::ctrl_c().await?;
    kube.shutdown().await;
    Ok(())
}

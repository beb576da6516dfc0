//! Compiles the `.proto` contract with protox (pure Rust), so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "flotilla/agent/v1/agent.proto",
        "flotilla/admin/v1/admin.proto",
    ];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let descriptors = protox::compile(files, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // No `Client::connect(url)` constructors: clients build their own TLS channel, and the
        // generated constructor would clash with the `Connect` RPC.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}

//! Compiles Mizzen's own .proto files with protox (no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mizzen/galley/v1/validation.proto",
        "proto/istio/v1/auth/ca.proto",
        "proto/mizzen/ca/v1/trust.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    envoy_descriptor_set()?;
    Ok(())
}

/// Second step: compiles the vendored Envoy API protos (the roots listed in
/// `proto/envoy-api/ROOTS`, see `scripts/vendor-envoy-protos`) into one
/// FileDescriptorSet at `$OUT_DIR/envoy_descriptor.bin`, read by `envoy_json`.
/// No Rust code is generated: the types come from the envoy-types crate.
fn envoy_descriptor_set() -> Result<(), Box<dyn std::error::Error>> {
    use prost::Message as _;
    println!("cargo:rerun-if-changed=proto/envoy-api");
    let roots = std::fs::read_to_string("proto/envoy-api/ROOTS")?;
    let roots: Vec<&str> = roots.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut fds = protox::compile(roots, ["proto/envoy-api"])?;
    // Comments (source info) are most of the set and of the decoded pool's
    // memory; JSON mapping never reads them.
    for file in &mut fds.file {
        file.source_code_info = None;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("envoy_descriptor.bin");
    std::fs::write(out, fds.encode_to_vec())?;
    Ok(())
}

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
    Ok(())
}

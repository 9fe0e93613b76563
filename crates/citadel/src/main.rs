//! The `citadel` binary (not available yet).

fn main() -> std::process::ExitCode {
    eprintln!(
        "citadel: not available in this build. When built it will serve: Istio's CA gRPC API (IstioCertificateService/CreateCertificate) over TLS on :15012, metrics on :15014. See the README for what works today (mizzen validate, mizzen analyze, galley)."
    );
    std::process::ExitCode::from(2)
}

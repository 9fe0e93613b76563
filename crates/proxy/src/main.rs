//! The `proxy` binary (not available yet).

fn main() -> std::process::ExitCode {
    eprintln!(
        "proxy: not available in this build. When built it will serve: the sidecar ports: :15001 outbound, :15006 inbound, :15000 admin, :15020/:15090 Prometheus, :15021 /healthz/ready. See the README for what works today (mizzen validate, mizzen analyze, galley)."
    );
    std::process::ExitCode::from(2)
}

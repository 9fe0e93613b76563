//! `mizzen kube-inject` on bookinfo's Kubernetes manifests
//! (samples/bookinfo/platform.yaml), as the kind suite deploys them: every
//! Deployment gets istio-init and istio-proxy, Services and ServiceAccounts come
//! out as they went in, the output re-parses, and Kubernetes 1.35's schemas
//! accept it (`kubernetes-validate --strict`; the test fails, saying to run
//! scripts/setup, when the validator is not installed).

mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use support::{kubernetes_validate, mizzen_binary as mizzen, repo};

use serde_json::Value;

fn docs(text: &str) -> Vec<Value> {
    common::yaml::parse_stream(text)
        .expect("the output is YAML")
        .into_iter()
        .filter_map(|d| d.root.map(|r| r.to_json()))
        .collect()
}

fn names(containers: &Value) -> Vec<&str> {
    containers
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

fn inject_bookinfo(native: &str) -> (Vec<Value>, Vec<Value>, PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bookinfo-injected.yaml");
    let o = mizzen(&[
        "kube-inject",
        "-f",
        "samples/bookinfo/platform.yaml",
        "-o",
        out.to_str().unwrap(),
        "--native-sidecars",
        native,
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("Injected 6 workload(s)"), "{stderr}");
    assert!(
        stderr.contains(
            "Skipped Deployment/istio-ingressgateway: the pod already has an istio-proxy container"
        ),
        "{stderr}"
    );
    let input =
        docs(&std::fs::read_to_string(repo().join("samples/bookinfo/platform.yaml")).unwrap());
    let output = docs(&std::fs::read_to_string(&out).unwrap());
    (input, output, out, dir)
}

#[test]
fn bookinfo_native_sidecars() {
    let (input, output, file, _dir) = inject_bookinfo("true");
    assert_eq!(input.len(), output.len());
    let mut deployments = 0;
    for (before, after) in input.iter().zip(&output) {
        let gateway = names(&before["spec"]["template"]["spec"]["containers"]) == ["istio-proxy"];
        if before["kind"] == "Deployment" && !gateway {
            deployments += 1;
            let spec = &after["spec"]["template"]["spec"];
            assert_eq!(
                names(&spec["initContainers"]),
                ["istio-init", "istio-proxy"],
                "{}",
                before["metadata"]["name"]
            );
            assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");
            assert!(!names(&spec["containers"]).contains(&"istio-proxy"));
            let labels = &after["spec"]["template"]["metadata"]["labels"];
            assert_eq!(labels["security.istio.io/tlsMode"], "istio");
            assert_eq!(
                labels["service.istio.io/canonical-name"],
                before["spec"]["template"]["metadata"]["labels"]["app"]
            );
            assert!(
                after["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/status"]
                    .is_string()
            );
            // Only the template changed.
            assert_eq!(after["metadata"], before["metadata"]);
            assert_eq!(after["spec"]["selector"], before["spec"]["selector"]);
        } else {
            // Services, ServiceAccounts, and the ingress gateway (its own istio-proxy).
            assert_eq!(after, before, "{} passes through unchanged", before["kind"]);
        }
    }
    assert_eq!(deployments, 6);
    let (ok, said) = kubernetes_validate(&[&file]);
    assert!(
        ok,
        "Kubernetes 1.35 refuses the injected manifests:\n{said}"
    );
}

#[test]
fn bookinfo_classic_sidecars_validate_too() {
    let (input, output, file, _dir) = inject_bookinfo("false");
    for (before, after) in input.iter().zip(&output) {
        let gateway = names(&before["spec"]["template"]["spec"]["containers"]) == ["istio-proxy"];
        if before["kind"] == "Deployment" && !gateway {
            let spec = &after["spec"]["template"]["spec"];
            assert_eq!(names(&spec["initContainers"]), ["istio-init"]);
            assert_eq!(names(&spec["containers"])[0], "istio-proxy");
        }
    }
    let (ok, said) = kubernetes_validate(&[&file]);
    assert!(
        ok,
        "Kubernetes 1.35 refuses the injected manifests:\n{said}"
    );
    // The validator does refuse a broken sidecar.
    let broken = file.with_file_name("broken.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("readOnlyRootFilesystem: true"));
    std::fs::write(
        &broken,
        text.replacen(
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesystem: sometimes",
            1,
        ),
    )
    .unwrap();
    let (ok, said) = kubernetes_validate(&[&broken]);
    assert!(!ok, "a broken pod template passed: {said}");
}

#[test]
fn standard_input_opt_out_and_errors() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mizzen"))
        .args([
            "kube-inject",
            "-f",
            "-",
            "--hub",
            "reg.example/mesh",
            "--tag",
            "dev",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: skip}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata:\n      labels: {app: a, sidecar.istio.io/inject: \"false\"}\n    spec:\n      containers: [{name: a, image: a}]\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {sidecar.istio.io/userVolume: \"[]\"}\nspec:\n  containers: [{name: a, image: a}]\n",
        )
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("Skipped Deployment/skip"), "{err}");
    assert!(
        err.contains("Warning: Pod/p: annotation sidecar.istio.io/userVolume"),
        "{err}"
    );
    let parsed = docs(&out);
    assert!(
        parsed[0]["spec"]["template"]["spec"]
            .get("initContainers")
            .is_none()
    );
    assert_eq!(
        parsed[1]["spec"]["initContainers"][0]["image"],
        "reg.example/mesh/proxy:dev"
    );

    let o = mizzen(&["kube-inject", "-f", "no/such/file.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no/such/file.yaml"));
    let o = mizzen(&["kube-inject", "-f", "-", "--proxy-image", "x", "--hub", "y"]);
    assert_eq!(o.status.code(), Some(2), "--proxy-image and --hub conflict");

    // --values: the mesh-wide defaults (and the keys it ignores, named).
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "global:\n  proxy:\n    resources: {requests: {cpu: 10m, memory: 40Mi}}\n    holdApplicationUntilProxyStarts: false\n    tracer: zipkin\n",
    )
    .unwrap();
    let o = mizzen(&[
        "kube-inject",
        "-f",
        "samples/bookinfo/platform.yaml",
        "--native-sidecars",
        "false",
        "--values",
        values.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("global.proxy.tracer"), "{err}");
    let out = docs(&String::from_utf8_lossy(&o.stdout));
    let productpage = out
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "productpage-v1")
        .unwrap();
    let containers = &productpage["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        names(containers),
        ["productpage", "istio-proxy"],
        "no gating: the sidecar goes last"
    );
    assert_eq!(containers[1]["resources"]["requests"]["cpu"], "10m");
}

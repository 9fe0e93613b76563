//! The template's output: snapshots of bookinfo's productpage pod (native and
//! classic) and the placement rules.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;

use super::*;

/// productpage-v1's pod as the ReplicaSet controller creates it.
pub(crate) fn productpage() -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "productpage-v1-6b746f74dc-",
            "namespace": "default",
            "labels": {"app": "productpage", "version": "v1", "pod-template-hash": "6b746f74dc"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "productpage-v1-6b746f74dc",
                "uid": "2d6a5f2e-8c1b-4d0c-9d7e-6c2b1f0e9a11", "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "serviceAccountName": "bookinfo-productpage",
            "containers": [{
                "name": "productpage",
                "image": "docker.io/istio/examples-bookinfo-productpage-v1:1.20.2",
                "ports": [{"containerPort": 9080, "protocol": "TCP"}],
            }],
        },
    }))
    .unwrap()
}

fn names(cs: &Option<Vec<Container>>) -> Vec<String> {
    cs.iter().flatten().map(|c| c.name.clone()).collect()
}

#[test]
fn productpage_native() {
    let pod = inject(&productpage(), &Options::default()).unwrap();
    insta::assert_yaml_snapshot!(pod);
}

#[test]
fn productpage_classic() {
    let opts = Options {
        native_sidecars: false,
        ..Options::default()
    };
    let pod = inject(&productpage(), &opts).unwrap();
    insta::assert_yaml_snapshot!(pod);
}

#[test]
fn native_sidecar_is_an_always_restarting_init_container() {
    let pod = inject(&productpage(), &Options::default()).unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(names(&spec.init_containers), ["istio-init", "istio-proxy"]);
    assert_eq!(names(&Some(spec.containers)), ["productpage"]);
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert!(proxy.startup_probe.is_some() && proxy.lifecycle.is_none());
    let status: Value =
        serde_json::from_str(&pod.metadata.annotations.unwrap()[STATUS_ANNOTATION]).unwrap();
    assert_eq!(
        status["initContainers"],
        json!(["istio-init", "istio-proxy"])
    );
    assert_eq!(status["containers"], json!([]));
    assert_eq!(status["revision"], "default");
}

#[test]
fn classic_sidecar_goes_first_and_waits_unless_gating_is_off() {
    let mut opts = Options {
        native_sidecars: false,
        ..Options::default()
    };
    let pod = inject(&productpage(), &opts).unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(
        names(&Some(spec.containers.clone())),
        ["istio-proxy", "productpage"]
    );
    let hook = spec.containers[0]
        .lifecycle
        .as_ref()
        .unwrap()
        .post_start
        .as_ref()
        .unwrap();
    assert_eq!(
        hook.exec.as_ref().unwrap().command.as_deref(),
        Some(&["/usr/local/bin/proxy".to_string(), "wait".to_string()][..])
    );
    opts.values.hold_application_until_proxy_starts = false;
    let pod = inject(&productpage(), &opts).unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(
        names(&Some(spec.containers.clone())),
        ["productpage", "istio-proxy"]
    );
    assert!(spec.containers[1].lifecycle.is_none());
}

#[test]
fn the_init_container_carries_the_traffic_annotations() {
    let mut pod = productpage();
    pod.metadata.annotations = Some(
        [
            (
                "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                "169.254.169.254/32",
            ),
            (
                "traffic.sidecar.istio.io/includeOutboundIPRanges",
                "10.0.0.0/8",
            ),
            ("traffic.sidecar.istio.io/includeInboundPorts", "9080"),
            ("traffic.sidecar.istio.io/excludeInboundPorts", "8081"),
            ("traffic.sidecar.istio.io/includeOutboundPorts", "5432"),
            ("traffic.sidecar.istio.io/excludeOutboundPorts", "3306"),
            ("status.sidecar.istio.io/port", "15999"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into(),
    );
    let out = inject(&pod, &Options::default()).unwrap();
    let init = &out.spec.unwrap().init_containers.unwrap()[0];
    assert_eq!(
        init.args.as_ref().unwrap().join(" "),
        "init -p 15001 -z 15006 -u 1337 -m REDIRECT -i 10.0.0.0/8 -x 169.254.169.254/32 -b 9080 \
         -d 15090,15021,15999,8081 -q 5432 -o 3306"
    );
    let caps = init
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_ADMIN".to_string(), "NET_RAW".to_string()][..])
    );
}

#[test]
fn interception_none_has_no_init_container() {
    let mut pod = productpage();
    pod.metadata.annotations = Some(
        [(
            "sidecar.istio.io/interceptionMode".to_string(),
            "NONE".to_string(),
        )]
        .into(),
    );
    let out = inject(&pod, &Options::default()).unwrap();
    let spec = out.spec.unwrap();
    assert_eq!(names(&spec.init_containers), ["istio-proxy"]);
    let args = spec.init_containers.unwrap()[0].args.clone().unwrap();
    assert!(
        args.ends_with(&["--interception-mode".into(), "NONE".into()]),
        "{args:?}"
    );
}

#[test]
fn sidecar_resources_env_and_volumes() {
    let mut pod = productpage();
    pod.metadata.annotations = Some(
        [
            ("sidecar.istio.io/proxyCPU", "50m"),
            ("sidecar.istio.io/proxyMemoryLimit", "256Mi"),
            ("sidecar.istio.io/logLevel", "debug"),
            (
                "proxy.istio.io/config",
                "concurrency: 1\nproxyMetadata: {ISTIO_META_X: y}",
            ),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into(),
    );
    let out = inject(&pod, &Options::default()).unwrap();
    let spec = out.spec.unwrap();
    let proxy = &spec.init_containers.as_ref().unwrap()[1];
    let r = proxy.resources.as_ref().unwrap();
    assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "50m");
    assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "256Mi");
    let args = proxy.args.as_ref().unwrap().join(" ");
    assert!(
        args.contains("--concurrency 1") && args.contains("--log-level debug"),
        "{args}"
    );
    let env: Vec<&str> = proxy
        .env
        .iter()
        .flatten()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        env,
        [
            "POD_NAME",
            "POD_NAMESPACE",
            "INSTANCE_IP",
            "SERVICE_ACCOUNT",
            "ISTIO_META_X"
        ]
    );
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, VOLUMES);
}

#[test]
fn labels_and_conflicts() {
    let out = inject(&productpage(), &Options::default()).unwrap();
    let labels = out.metadata.labels.unwrap();
    assert_eq!(labels["security.istio.io/tlsMode"], "istio");
    // sidecarInjectorWebhook.injectedAnnotations.
    let mut opts = Options::default();
    opts.values.injected_annotations = [("team".to_string(), "mesh".to_string())].into();
    let annotated = inject(&productpage(), &opts).unwrap();
    assert_eq!(annotated.metadata.annotations.unwrap()["team"], "mesh");
    assert_eq!(labels["service.istio.io/canonical-name"], "productpage");
    assert_eq!(labels["service.istio.io/canonical-revision"], "v1");
    // Without app/version labels: the Deployment's name and `latest`.
    let mut bare = productpage();
    bare.metadata.labels =
        Some([("pod-template-hash".to_string(), "6b746f74dc".to_string())].into());
    let labels = inject(&bare, &Options::default())
        .unwrap()
        .metadata
        .labels
        .unwrap();
    assert_eq!(labels["service.istio.io/canonical-name"], "productpage-v1");
    assert_eq!(labels["service.istio.io/canonical-revision"], "latest");
    // A pod with its own istio-proxy container is refused, naming it.
    let mut own = productpage();
    own.spec.as_mut().unwrap().containers[0].name = "istio-proxy".into();
    let e = inject(&own, &Options::default()).unwrap_err().to_string();
    assert!(
        e.contains("istio-proxy") && e.contains("sidecar.istio.io/inject=false"),
        "{e}"
    );
}

#[test]
fn workload_names() {
    let mut pod = productpage();
    assert_eq!(workload_name(&pod), "productpage-v1");
    pod.metadata.owner_references = Some(vec![OwnerReference {
        kind: "Job".into(),
        name: "migrate-28893920".into(),
        controller: Some(true),
        ..Default::default()
    }]);
    pod.metadata.labels = None;
    assert_eq!(workload_name(&pod), "migrate-28893920");
    pod.metadata.owner_references = None;
    pod.metadata.generate_name = None;
    pod.metadata.name = Some("standalone".into());
    assert_eq!(workload_name(&pod), "standalone");
}

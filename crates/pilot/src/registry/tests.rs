//! One test per derivation rule, each with its own inline YAML.

use std::sync::Arc;

use common::load::load_str;

use super::*;
use crate::model::{Protocol, Resolution, ServiceSource};

fn snap(yaml: &str) -> Snapshot {
    let loaded = load_str(yaml, "test.yaml");
    assert!(
        loaded.errors.is_empty(),
        "fixture does not decode: {:?}",
        loaded.errors
    );
    let accepted = loaded.resources.into_iter().map(Arc::new).collect();
    build_snapshot(accepted, Vec::new(), 1)
}

fn eps<'a>(s: &'a Snapshot, host: &str, port: u32) -> &'a [Endpoint] {
    s.endpoints_of(host, port)
}

const REVIEWS: &str = "reviews.default.svc.cluster.local";

const REVIEWS_SVC: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  clusterIP: 10.96.0.10
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080, targetPort: 9080}
  - {name: grpc-api, port: 9090, appProtocol: http2}
  - {name: metrics, port: 9100, protocol: UDP}
"#;

fn pod(name: &str, ip: &str, labels: &str, extra: &str) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  labels: {labels}
{extra}
spec:
  serviceAccountName: bookinfo-reviews
  containers:
  - name: app
    image: app
    ports: [{{name: web, containerPort: 8080}}]
status:
  podIP: {ip}
"#
    )
}

#[test]
fn kubernetes_service_host_ports_protocols_addresses() {
    let s = snap(REVIEWS_SVC);
    let svc = &s.services[REVIEWS];
    assert_eq!(svc.namespace, "default");
    assert_eq!(svc.name, "reviews");
    assert_eq!(svc.addresses, vec!["10.96.0.10"]);
    assert_eq!(svc.resolution, Resolution::ClientSideLb);
    assert_eq!(svc.source, ServiceSource::Kubernetes);
    assert!(!svc.mesh_external);
    assert_eq!(svc.selector["app"], "reviews");
    // UDP ports are not part of the mesh.
    let ports: Vec<(u32, Protocol)> = svc.ports.iter().map(|p| (p.port, p.protocol)).collect();
    assert_eq!(ports, vec![(9080, Protocol::Http), (9090, Protocol::Http2)]);
}

#[test]
fn port_protocols_follow_istio_naming() {
    assert_eq!(kube::port_protocol("grpc-web-x", None), Protocol::Http2);
    assert_eq!(
        kube::port_protocol("tcp", Some("kubernetes.io/h2c")),
        Protocol::Http2
    );
    assert_eq!(kube::port_protocol("http", Some("tcp")), Protocol::Tcp);
    assert_eq!(kube::port_protocol("https-admin", None), Protocol::Tls);
    assert_eq!(kube::port_protocol("", None), Protocol::Tcp);
    assert_eq!(kube::port_protocol("ĥttp-web", None), Protocol::Tcp);
}

#[test]
fn headless_service_keeps_client_side_lb_without_addresses() {
    let s = snap(
        r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: data}
spec:
  clusterIP: None
  ports: [{name: tcp-pg, port: 5432}]
"#,
    );
    let svc = &s.services["db.data.svc.cluster.local"];
    assert!(svc.addresses.is_empty());
    assert_eq!(svc.resolution, Resolution::ClientSideLb);
}

#[test]
fn external_name_service_resolves_by_dns() {
    let s = snap(
        r#"
apiVersion: v1
kind: Service
metadata: {name: payments, namespace: default}
spec:
  type: ExternalName
  externalName: api.payments.example
  ports: [{name: https, port: 443}]
"#,
    );
    let host = "payments.default.svc.cluster.local";
    let svc = &s.services[host];
    assert_eq!(svc.resolution, Resolution::Dns);
    assert!(svc.mesh_external);
    let e = eps(&s, host, 443);
    assert_eq!(e.len(), 1);
    assert_eq!(
        (e[0].address.as_str(), e[0].port),
        ("api.payments.example", 443)
    );
    assert!(!e[0].mesh_tls);
}

#[test]
fn export_to_annotation() {
    let s = snap(
        r#"
apiVersion: v1
kind: Service
metadata:
  name: private
  namespace: default
  annotations: {networking.istio.io/exportTo: ".,istio-system"}
spec: {ports: [{port: 80}]}
"#,
    );
    assert_eq!(
        s.services["private.default.svc.cluster.local"].export_to,
        vec![".", "istio-system"]
    );
}

#[test]
fn endpoints_object_ready_and_not_ready_matched_by_port_name() {
    let yaml = format!(
        "{REVIEWS_SVC}---{}",
        r#"
apiVersion: v1
kind: Endpoints
metadata: {name: reviews, namespace: default}
subsets:
- addresses: [{ip: 10.1.0.1, targetRef: {kind: Pod, name: reviews-a, namespace: default}}]
  notReadyAddresses: [{ip: 10.1.0.2}]
  ports:
  - {name: grpc-api, port: 19090}
  - {name: http, port: 18080}
"#
    );
    let yaml = format!(
        "{yaml}{}",
        pod("reviews-a", "10.1.0.1", "{app: reviews, version: v1}", "")
    );
    let s = snap(&yaml);
    let http = eps(&s, REVIEWS, 9080);
    assert_eq!(http.len(), 2);
    assert_eq!(
        (http[0].address.as_str(), http[0].port, http[0].healthy),
        ("10.1.0.1", 18080, true)
    );
    assert_eq!(
        (http[1].address.as_str(), http[1].port, http[1].healthy),
        ("10.1.0.2", 18080, false)
    );
    // The address backed by a pod carries the pod's identity; the bare one none.
    assert_eq!(http[0].labels["version"], "v1");
    assert_eq!(http[0].service_account, "bookinfo-reviews");
    assert_eq!(http[0].workload_name, "reviews-a");
    assert!(http[1].labels.is_empty());
    assert!(!http[1].mesh_tls);
    assert_eq!(eps(&s, REVIEWS, 9090)[0].port, 19090);
}

#[test]
fn endpoints_single_unnamed_port_matches_single_service_port() {
    let s = snap(
        r#"
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: echo, namespace: default}
subsets:
- addresses: [{ip: 127.0.0.1}]
  ports: [{port: 8081}]
"#,
    );
    let e = eps(&s, "echo.default.svc.cluster.local", 80);
    assert_eq!((e[0].address.as_str(), e[0].port), ("127.0.0.1", 8081));
}

#[test]
fn endpoint_slices_by_service_label_and_ready_condition() {
    let yaml = format!(
        "{REVIEWS_SVC}---{}",
        r#"
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: reviews-abc
  namespace: default
  labels: {kubernetes.io/service-name: reviews}
addressType: IPv4
ports: [{name: http, port: 9080}]
endpoints:
- addresses: [10.2.0.1]
  conditions: {ready: true}
- addresses: [10.2.0.2]
  conditions: {ready: false}
- addresses: [10.2.0.3]
---
apiVersion: v1
kind: Endpoints
metadata: {name: reviews, namespace: default}
subsets: [{addresses: [{ip: 10.9.9.9}], ports: [{name: http, port: 9080}]}]
"#
    );
    let s = snap(&yaml);
    let e = eps(&s, REVIEWS, 9080);
    // Slices win over the Endpoints object when both exist.
    let got: Vec<(&str, bool)> = e.iter().map(|e| (e.address.as_str(), e.healthy)).collect();
    assert_eq!(
        got,
        vec![("10.2.0.1", true), ("10.2.0.2", false), ("10.2.0.3", true)]
    );
    // The slice lists no grpc-api port: no endpoints there.
    assert!(eps(&s, REVIEWS, 9090).is_empty());
}

#[test]
fn pods_matching_the_selector_when_no_endpoints_exist() {
    let mut yaml = REVIEWS_SVC.replace("targetPort: 9080", "targetPort: web");
    yaml.push_str(&pod(
        "reviews-v1",
        "10.3.0.1",
        "{app: reviews, version: v1}",
        "",
    ));
    yaml.push_str(&pod(
        "reviews-v2",
        "10.3.0.2",
        "{app: reviews, version: v2}",
        "  annotations: {sidecar.istio.io/status: '{}'}",
    ));
    yaml.push_str(&pod("ratings", "10.3.0.3", "{app: ratings}", ""));
    let s = snap(&yaml);
    let http = eps(&s, REVIEWS, 9080);
    assert_eq!(http.len(), 2, "only pods with app=reviews: {http:?}");
    // Named targetPort resolves to the container port; no status conditions: ready.
    assert!(http.iter().all(|e| e.port == 8080 && e.healthy));
    assert_eq!(http[0].namespace, "default");
    assert_eq!(http[0].service_account, "bookinfo-reviews");
    assert!(!http[0].mesh_tls, "no sidecar");
    assert!(http[1].mesh_tls, "sidecar.istio.io/status annotation");
    // No targetPort: the service port.
    assert_eq!(eps(&s, REVIEWS, 9090)[0].port, 9090);
}

#[test]
fn pod_readiness_sidecar_and_tls_mode_label() {
    let mut yaml = REVIEWS_SVC.to_string();
    yaml.push_str(
        r#"
---
apiVersion: v1
kind: Pod
metadata: {name: not-ready, namespace: default, labels: {app: reviews}}
spec:
  containers: [{name: app}, {name: istio-proxy}]
status:
  podIP: 10.4.0.1
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: v1
kind: Pod
metadata:
  name: local
  namespace: default
  labels: {app: reviews, security.istio.io/tlsMode: istio}
spec: {containers: [{name: app}]}
status: {podIP: 10.4.0.2, conditions: [{type: Ready, status: "True"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: default, labels: {app: reviews}}
spec: {containers: [{name: app}]}
status: {phase: Succeeded, podIP: 10.4.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: pending, namespace: default, labels: {app: reviews}}
spec: {containers: [{name: app}]}
"#,
    );
    let s = snap(&yaml);
    let e = eps(&s, REVIEWS, 9080);
    let got: Vec<(&str, bool, bool, &str)> = e
        .iter()
        .map(|e| {
            (
                e.address.as_str(),
                e.healthy,
                e.mesh_tls,
                e.service_account.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.4.0.1", false, true, "default"),
            ("10.4.0.2", true, true, "default")
        ],
        "finished pods and pods without an IP are not endpoints"
    );
}

#[test]
fn workloads_by_ip_from_pods_and_workload_entries() {
    let mut yaml = pod(
        "reviews-v1",
        "10.5.0.1",
        "{app: reviews, istio-locality: us.east-1.rack2}",
        "",
    );
    yaml.push_str(&pod(
        "reviews-v2",
        "10.5.0.2",
        "{app: reviews, topology.kubernetes.io/region: us, topology.kubernetes.io/zone: west-2}",
        "",
    ));
    yaml.push_str(
        r#"
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-1, namespace: vms}
spec:
  address: 192.168.1.10
  labels: {app: legacy}
  serviceAccount: legacy-sa
  locality: eu/west-1
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm-dns, namespace: vms}
spec: {address: vm.example.internal}
"#,
    );
    let s = snap(&yaml);
    assert_eq!(s.workloads.len(), 3);
    let pod = &s.workloads[&"10.5.0.1".parse().unwrap()];
    // Localities: the `istio-locality` label (dots for slashes), else the
    // topology labels, else the WorkloadEntry's `locality`.
    assert_eq!(pod.locality, "us/east-1/rack2");
    assert_eq!(
        s.workloads[&"10.5.0.2".parse().unwrap()].locality,
        "us/west-2"
    );
    assert_eq!(
        s.workloads[&"192.168.1.10".parse().unwrap()].locality,
        "eu/west-1"
    );
    assert_eq!(
        (pod.name.as_str(), pod.service_account.as_str()),
        ("reviews-v1", "bookinfo-reviews")
    );
    let vm = &s.workloads[&"192.168.1.10".parse().unwrap()];
    assert_eq!(
        (
            vm.name.as_str(),
            vm.namespace.as_str(),
            vm.service_account.as_str()
        ),
        ("vm-1", "vms", "legacy-sa")
    );
    assert_eq!(vm.labels["app"], "legacy");
}

const SE_HEAD: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: default}
spec:
"#;

#[test]
fn service_entry_hosts_resolutions_location_addresses() {
    for (res, want) in [
        ("NONE", Resolution::Passthrough),
        ("STATIC", Resolution::ClientSideLb),
        ("DNS", Resolution::Dns),
        ("DNS_ROUND_ROBIN", Resolution::DnsRoundRobin),
    ] {
        let s = snap(&format!(
            "{SE_HEAD}  hosts: [a.example.com, b.example.com]\n  addresses: [240.0.0.1/32, 10.0.0.0/8]\n  exportTo: [\".\"]\n  ports: [{{number: 443, name: tls, protocol: TLS}}, {{number: 80, name: web, protocol: HTTP}}]\n  resolution: {res}\n"
        ));
        for host in ["a.example.com", "b.example.com"] {
            let svc = &s.services[host];
            assert_eq!(svc.resolution, want, "{res}");
            assert!(svc.mesh_external, "location defaults to MESH_EXTERNAL");
            assert_eq!(svc.addresses, vec!["240.0.0.1", "10.0.0.0/8"]);
            assert_eq!(svc.export_to, vec!["."]);
            assert_eq!(
                svc.source,
                ServiceSource::ServiceEntry("ext.default".into())
            );
            assert_eq!(svc.port(443).map(|p| p.protocol), Some(Protocol::Tls));
            assert_eq!(svc.port(80).map(|p| p.protocol), Some(Protocol::Http));
        }
    }
    let s = snap(&format!(
        "{SE_HEAD}  hosts: [in.mesh]\n  location: MESH_INTERNAL\n  ports: [{{number: 80, name: http}}]\n"
    ));
    assert!(!s.services["in.mesh"].mesh_external);
}

#[test]
fn service_entry_inline_endpoints_ports_labels_weight_locality() {
    let s = snap(&format!(
        r#"{SE_HEAD}  hosts: [api.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 80, name: http}}
  - {{number: 9000, name: admin, targetPort: 9001}}
  endpoints:
  - address: 10.6.0.1
    ports: {{http: 8080}}
    labels: {{version: v1}}
    weight: 3
    locality: us-east/zone-a
    network: net-1
    serviceAccount: api
  - address: 10.6.0.2
    labels: {{security.istio.io/tlsMode: disabled}}
  - address: 10.6.0.3
"#
    ));
    let http = eps(&s, "api.internal", 80);
    let got: Vec<(&str, u32, u32, bool)> = http
        .iter()
        .map(|e| (e.address.as_str(), e.port, e.weight, e.mesh_tls))
        .collect();
    // Named port mapping, else the service port; tlsMode label, else a service account means mTLS.
    assert_eq!(
        got,
        vec![
            ("10.6.0.1", 8080, 3, true),
            ("10.6.0.2", 80, 1, false),
            ("10.6.0.3", 80, 1, false)
        ]
    );
    assert_eq!(http[0].labels["version"], "v1");
    assert_eq!(http[0].locality, "us-east/zone-a");
    assert_eq!(http[0].service_account, "api");
    // targetPort when the endpoint does not name the port.
    assert!(eps(&s, "api.internal", 9000).iter().all(|e| e.port == 9001));
}

#[test]
fn dns_service_entry_without_endpoints_uses_the_host() {
    let s = snap(&format!(
        "{SE_HEAD}  hosts: [httpbin.org, \"*.wild.example\"]\n  resolution: DNS\n  ports: [{{number: 443, name: https, protocol: TLS}}]\n"
    ));
    let e = eps(&s, "httpbin.org", 443);
    assert_eq!(
        (e[0].address.as_str(), e[0].port, e[0].mesh_tls),
        ("httpbin.org", 443, false)
    );
    assert!(
        eps(&s, "*.wild.example", 443).is_empty(),
        "wildcards cannot be resolved"
    );
}

#[test]
fn service_entry_workload_selector_selects_workload_entries_and_pods() {
    let mut yaml = format!(
        r#"{SE_HEAD}  hosts: [legacy.mesh]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{number: 80, name: http, targetPort: 8000}}]
  workloadSelector: {{labels: {{app: legacy}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: vm-1, namespace: default}}
spec:
  address: 192.168.1.10
  ports: {{http: 8081}}
  labels: {{app: legacy}}
  serviceAccount: legacy
  weight: 2
  locality: eu/west
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: vm-2, namespace: default}}
spec:
  address: 192.168.1.11
  labels: {{app: legacy, security.istio.io/tlsMode: disabled}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: vm-other-ns, namespace: other}}
spec: {{address: 192.168.1.12, labels: {{app: legacy}}}}
"#
    );
    yaml.push_str(&pod("legacy-pod", "10.7.0.1", "{app: legacy}", ""));
    let s = snap(&yaml);
    let e = eps(&s, "legacy.mesh", 80);
    let got: Vec<(&str, u32, bool, &str)> = e
        .iter()
        .map(|e| {
            (
                e.address.as_str(),
                e.port,
                e.mesh_tls,
                e.workload_name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("10.7.0.1", 8000, false, "legacy-pod"),
            ("192.168.1.10", 8081, true, "vm-1"),
            ("192.168.1.11", 8000, false, "vm-2"),
        ]
    );
    assert_eq!(
        (
            e[1].weight,
            e[1].locality.as_str(),
            e[1].service_account.as_str()
        ),
        (2, "eu/west", "legacy")
    );
    assert_eq!(s.services["legacy.mesh"].selector["app"], "legacy");
}

#[test]
fn kubernetes_service_selects_workload_entries_too() {
    let s = snap(&format!(
        "{REVIEWS_SVC}---{}",
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-vm, namespace: default}
spec: {address: 10.8.0.1, labels: {app: reviews}, ports: {grpc-api: 7070}}
"#
    ));
    assert_eq!(eps(&s, REVIEWS, 9080)[0].port, 9080);
    assert_eq!(eps(&s, REVIEWS, 9090)[0].port, 7070);
    assert!(eps(&s, REVIEWS, 9080)[0].mesh_tls);
}

#[test]
fn kubernetes_service_wins_then_first_service_entry_by_namespace_and_name() {
    let s = snap(&format!(
        r#"{REVIEWS_SVC}---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: zz, namespace: default}}
spec: {{hosts: [reviews.default.svc.cluster.local, shared.example], ports: [{{number: 1, name: tcp}}], resolution: DNS}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: aa, namespace: default}}
spec: {{hosts: [shared.example], ports: [{{number: 2, name: tcp}}], resolution: DNS}}
"#
    ));
    assert_eq!(s.services[REVIEWS].source, ServiceSource::Kubernetes);
    assert_eq!(
        s.services["shared.example"].source,
        ServiceSource::ServiceEntry("aa.default".into())
    );
    assert!(s.endpoints["shared.example"].contains_key(&2));
}

#[test]
fn tls_secrets_from_data_and_string_data() {
    // "Y2VydA==" is "cert", "a2V5" is "key".
    let s = snap(
        r#"
apiVersion: v1
kind: Secret
metadata: {name: gw-cred, namespace: istio-system}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: a2V5}
---
apiVersion: v1
kind: Secret
metadata: {name: gw-cred-cacert, namespace: istio-system}
stringData: {ca.crt: the-ca}
---
apiVersion: v1
kind: Secret
metadata: {name: generic, namespace: istio-system}
stringData: {cert: c2, key: k2, cacert: ca2}
---
apiVersion: v1
kind: Secret
metadata: {name: not-tls, namespace: istio-system}
stringData: {password: hunter2}
"#,
    );
    let gw = &s.secrets["istio-system/gw-cred"];
    assert_eq!(
        (gw.cert_chain.as_str(), gw.private_key.as_str()),
        ("cert", "key")
    );
    assert_eq!(
        gw.ca_cert.as_deref(),
        Some("the-ca"),
        "<name>-cacert supplies the CA"
    );
    let generic = &s.secrets["istio-system/generic"];
    assert_eq!(
        (generic.cert_chain.as_str(), generic.ca_cert.as_deref()),
        ("c2", Some("ca2"))
    );
    assert!(!s.secrets.contains_key("istio-system/not-tls"));
}

#[test]
fn config_holds_istio_kinds_only_in_key_order() {
    let s = snap(&format!(
        r#"{REVIEWS_SVC}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: b, namespace: default}}
spec: {{hosts: [reviews], http: [{{route: [{{destination: {{host: reviews}}}}]}}]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: a, namespace: default}}
spec: {{host: reviews}}
"#
    ));
    let kinds: Vec<&str> = s.config.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(kinds, vec!["DestinationRule", "VirtualService"]);
    assert_eq!(s.virtual_services().count(), 1);
}

#[test]
fn endpoint_only_changes_are_recognised() {
    let base = format!(
        "{REVIEWS_SVC}{}",
        pod("r1", "10.1.1.1", "{app: reviews}", "")
    );
    let v1 = snap(&base);
    let mut first = v1.clone();
    describe_change(&Snapshot::default(), &mut first);
    assert!(!first.endpoints_only, "the first snapshot is a full push");

    // A second pod: endpoints only.
    let mut v2 = snap(&format!(
        "{base}{}",
        pod("r2", "10.1.1.2", "{app: reviews}", "")
    ));
    describe_change(&v1, &mut v2);
    assert!(v2.endpoints_only);
    assert_eq!(
        v2.endpoints_changed.iter().collect::<Vec<_>>(),
        vec![REVIEWS]
    );

    // A service port change: full.
    let mut v3 = snap(&base.replace("port: 9080", "port: 9081"));
    describe_change(&v1, &mut v3);
    assert!(!v3.endpoints_only);

    // A pod relabelled: its workload changed, full.
    let mut v4 = snap(&format!(
        "{REVIEWS_SVC}{}",
        pod("r1", "10.1.1.1", "{app: reviews, v: x}", "")
    ));
    describe_change(&v1, &mut v4);
    assert!(!v4.endpoints_only);

    assert!(same_content(&v1, &snap(&base)));
    assert!(!same_content(&v1, &v2));
}

#[test]
fn kubernetes_objects_that_do_not_decode_are_reported() {
    let loaded = load_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: bad}\nspec: {ports: [{port: eighty}]}\n",
        "t.yaml",
    );
    let problem = kubernetes_problem(&loaded.resources[0]).expect("a problem");
    assert!(problem.contains("Service"), "{problem}");
    let unnamed = load_str("apiVersion: v1\nkind: Pod\nmetadata: {}\n", "t.yaml");
    assert!(kubernetes_problem(&unnamed.resources[0]).is_some());
}

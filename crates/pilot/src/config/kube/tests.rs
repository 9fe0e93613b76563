//! The Kubernetes source against a fake API server ([`fake_api`]: kube-rs's
//! client over a `tower_test` mock, answering recorded API responses): initial
//! lists into the registry, watch events, resumption after errors, relists after
//! 410 Gone, CRDs missing or refused, the controller and the app's `/ready`; and,
//! ignored without a cluster, the same source against the current KUBECONFIG.

use std::collections::BTreeSet;
use std::time::Duration;

use common::load::Loaded;
use common::resource::{Body, Resource};
use serde_json::Value;
use tokio::sync::mpsc;

use super::*;
use crate::config::{ChangeSignal, ConfigController, ConfigOptions, ConfigStore};
use crate::model::ModelHandle;

mod app;
mod fake_api;

use fake_api::{FakeApi, fixture};

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
const PODS: &str = "/api/v1/pods";
const NAMESPACES: &str = "/api/v1/namespaces";
const ACCOUNTS: &str = "/api/v1/serviceaccounts";
const SECRETS: &str = "/api/v1/secrets";
const VIRTUAL_SERVICES: &str = "/apis/networking.istio.io/v1/virtualservices";
/// The DestinationRule CRD of the fixture serves up to v1beta1 only.
const DESTINATION_RULES: &str = "/apis/networking.istio.io/v1beta1/destinationrules";
const REVIEWS: &str = "reviews.default.svc.cluster.local";

const WAIT: Duration = Duration::from_secs(15);

/// Options that look for missing kinds again quickly.
fn options() -> KubeOptions {
    KubeOptions {
        recheck: Duration::from_millis(200),
        ..KubeOptions::default()
    }
}

/// A fake API server holding bookinfo's reviews (Service, EndpointSlice, two
/// Pods), the namespaces, service accounts, a gateway certificate, and the
/// VirtualService and DestinationRule CRDs with one resource each. Other Istio
/// CRDs are not installed.
fn bookinfo_api() -> (FakeApi, kube::Client) {
    let (api, client) = FakeApi::start();
    api.set_list(SERVICES, fixture!("services.json"));
    api.set_list(SLICES, fixture!("endpointslices.json"));
    api.set_list(PODS, fixture!("pods.json"));
    api.set_list(NAMESPACES, fixture!("namespaces.json"));
    api.set_list(ACCOUNTS, fixture!("serviceaccounts.json"));
    api.set_list(SECRETS, fixture!("secrets.json"));
    api.install_crd(fixture!("crd-virtualservices.json"));
    api.set_list(VIRTUAL_SERVICES, fixture!("virtualservices.json"));
    api.install_crd(fixture!("crd-destinationrules.json"));
    api.set_list(DESTINATION_RULES, fixture!("destinationrules.json"));
    (api, client)
}

/// A watching source whose initial lists completed, and its change signal (drained).
async fn synced(client: kube::Client) -> (KubeSource, mpsc::Receiver<()>) {
    synced_with(KubeSource::with_options(client, options())).await
}

/// [`synced`] for a source built by the caller.
async fn synced_with(mut source: KubeSource) -> (KubeSource, mpsc::Receiver<()>) {
    let (signal, mut changes) = ChangeSignal::channel();
    source.watch(signal).expect("watching starts");
    tokio::time::timeout(WAIT, source.synced())
        .await
        .expect("initial lists complete in time")
        .expect("synced");
    // A kind's task signals just after marking it listed: let those land, then
    // start from a quiet channel.
    tokio::time::sleep(Duration::from_millis(50)).await;
    while changes.try_recv().is_ok() {}
    (source, changes)
}

async fn changed(changes: &mut mpsc::Receiver<()>) {
    tokio::time::timeout(WAIT, changes.recv())
        .await
        .expect("the source signals a change")
        .expect("signal open");
}

/// `namespace/name` of every loaded resource of `kind`.
fn names(loaded: &Loaded, kind: &str) -> Vec<String> {
    loaded
        .resources
        .iter()
        .filter(|r| r.kind == kind)
        .map(|r| match &r.meta.namespace {
            Some(ns) => format!("{ns}/{}", r.name()),
            None => r.name().to_string(),
        })
        .collect()
}

fn find<'a>(loaded: &'a Loaded, kind: &str, name: &str) -> &'a Resource {
    loaded
        .resources
        .iter()
        .find(|r| r.kind == kind && r.name() == name)
        .unwrap_or_else(|| panic!("{kind} {name} loaded"))
}

fn event(name: &str) -> Value {
    fixture!("services-watch.json")[name].clone()
}

fn phase_of(source: &KubeSource, kind: &str) -> &'static str {
    match source.phases().into_iter().find(|(k, _)| *k == kind) {
        Some((_, Phase::Pending)) => "pending",
        Some((_, Phase::Absent)) => "absent",
        Some((_, Phase::Serving { .. })) => "serving",
        None => panic!("{kind} is not watched"),
    }
}

#[tokio::test]
async fn initial_lists_become_a_mesh_service_with_endpoints() {
    let (api, client) = bookinfo_api();
    let (mut source, _changes) = synced(client).await;
    let loaded = source.load().expect("loads once synced");

    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(
        names(&loaded, "Service"),
        ["default/kubernetes", "default/reviews"]
    );
    assert_eq!(
        names(&loaded, "EndpointSlice"),
        ["default/kubernetes", "default/reviews-7xq2m"]
    );
    assert_eq!(
        names(&loaded, "Pod"),
        [
            "default/reviews-v1-5b7c8d9f6d-x2x7k",
            "default/reviews-v2-6c9d7f5b8-q4k9p"
        ]
    );
    assert_eq!(
        names(&loaded, "Namespace"),
        ["default", "istio-system", "kube-system"]
    );
    assert_eq!(names(&loaded, "ServiceAccount").len(), 2);
    assert_eq!(
        names(&loaded, "Secret"),
        ["istio-system/bookinfo-gateway-cert"]
    );
    assert_eq!(names(&loaded, "VirtualService"), ["default/reviews"]);
    assert_eq!(names(&loaded, "DestinationRule"), ["default/reviews"]);

    // Objects read as the API returns them: list items of built-in kinds get their
    // apiVersion and kind back, managedFields go, the origin names the object.
    let service = find(&loaded, "Service", "reviews");
    assert_eq!(service.api_version, "v1");
    assert_eq!(&*service.origin.file, "kubernetes:Service/default/reviews");
    let Body::Kubernetes { object, known } = &service.body else {
        panic!("a Service is a Kubernetes object");
    };
    assert!(known);
    assert!(
        object["metadata"].get("managedFields").is_none(),
        "{object}"
    );
    assert_eq!(object["spec"]["clusterIP"], "10.96.120.17");
    let vs = find(&loaded, "VirtualService", "reviews");
    assert_eq!(vs.api_version, "networking.istio.io/v1");
    assert_eq!(
        &*vs.origin.file,
        "kubernetes:VirtualService/default/reviews"
    );
    assert!(vs.meta.managed_fields.is_none());
    assert_eq!(
        find(&loaded, "DestinationRule", "reviews").api_version,
        "networking.istio.io/v1beta1"
    );
    assert_eq!(
        &*find(&loaded, "Namespace", "istio-system").origin.file,
        "kubernetes:Namespace/istio-system"
    );
    // kubectl's copy of the object goes too; of a Pod, what the registry never
    // reads (container statuses, volumes, containers but their names and ports).
    assert!(
        service.meta.annotations.is_none(),
        "{:?}",
        service.meta.annotations
    );
    let Body::Kubernetes { object: pod, .. } =
        &find(&loaded, "Pod", "reviews-v1-5b7c8d9f6d-x2x7k").body
    else {
        panic!("a Pod is a Kubernetes object");
    };
    assert!(pod["spec"].get("volumes").is_none());
    assert!(pod["status"].get("containerStatuses").is_none());
    assert!(pod["status"].get("initContainerStatuses").is_none());
    let proxy = &pod["spec"]["containers"][1];
    let kept: Vec<&String> = proxy.as_object().unwrap().keys().collect();
    assert_eq!(kept, ["name", "ports"]);
    assert_eq!(pod["spec"]["serviceAccountName"], "bookinfo-reviews");
    assert_eq!(pod["status"]["podIP"], "10.244.0.12");
    assert!(
        pod["metadata"]["annotations"]
            .get("sidecar.istio.io/status")
            .is_some()
    );

    // The registry makes the same mesh of it as of files.
    let mut store = ConfigStore::new("default");
    let outcome = store.apply(loaded);
    assert_eq!(outcome.rejected, 0, "{:?}", store.rejected());
    let snapshot = store.snapshot(1);
    let reviews = &snapshot.services[REVIEWS];
    assert_eq!(
        reviews.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
        [9080]
    );
    let endpoints = &snapshot.endpoints[REVIEWS][&9080];
    let by_address: Vec<(&str, u32, &str, bool, &str)> = endpoints
        .iter()
        .map(|e| {
            (
                e.address.as_str(),
                e.port,
                e.labels["version"].as_str(),
                e.mesh_tls,
                e.service_account.as_str(),
            )
        })
        .collect();
    assert_eq!(
        by_address,
        [
            ("10.244.0.12", 9080, "v1", true, "bookinfo-reviews"),
            ("10.244.0.13", 9080, "v2", true, "bookinfo-reviews"),
        ]
    );
    assert!(endpoints.iter().all(|e| e.healthy));
    let api_server = &snapshot.endpoints["kubernetes.default.svc.cluster.local"][&443];
    assert_eq!(api_server[0].address, "172.18.0.2");
    assert_eq!(api_server[0].port, 6443);
    assert!(
        snapshot
            .secrets
            .contains_key("istio-system/bookinfo-gateway-cert")
    );
    assert_eq!(snapshot.virtual_services().count(), 1);

    // What was asked: lists from the watch cache (resourceVersion=0), Secrets
    // without Helm releases and tokens, every Istio CRD looked up (but
    // IstioOperator), the missing ones left absent.
    let lists = api.requests(SERVICES);
    assert!(!lists[0].is_watch());
    assert_eq!(lists[0].resource_version(), Some("0"));
    let secrets = api.requests(SECRETS);
    assert_eq!(
        secrets[0].query.get("fieldSelector").map(String::as_str),
        Some(SECRETS_FIELD_SELECTOR)
    );
    for kind in common::resource::IstioKind::ALL {
        let lookups = api.requests(&format!(
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{}",
            kinds::crd_name(*kind)
        ));
        if *kind == common::resource::IstioKind::IstioOperator {
            assert!(lookups.is_empty(), "IstioOperator is not watched");
        } else {
            assert!(!lookups.is_empty(), "{kind}'s CRD was looked up");
        }
    }
    assert_eq!(phase_of(&source, "Gateway"), "absent");
    assert_eq!(phase_of(&source, "AuthorizationPolicy"), "absent");
    assert_eq!(phase_of(&source, "VirtualService"), "serving");
    // Each list is followed by a watch from the list's resourceVersion.
    let watch = api.next_watch(SERVICES).await;
    assert_eq!(watch.request.resource_version(), Some("48213"));
    assert_eq!(
        watch
            .request
            .query
            .get("allowWatchBookmarks")
            .map(String::as_str),
        Some("true")
    );
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
}

#[tokio::test]
async fn watch_events_change_what_load_returns_and_fire_the_signal() {
    let (api, client) = bookinfo_api();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = crate::metrics::KubeEventMetrics::register(&mut registry);
    let source = KubeSource::with_options(client, options()).with_metrics(metrics);
    let (mut source, mut changes) = synced_with(source).await;
    let watch = api.next_watch(SERVICES).await;

    // An object without a name (no conforming API server sends one) is left out;
    // the watch goes on.
    let mut nameless = event("ratings-added");
    nameless["object"]["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("name");
    watch.send(&nameless);
    watch.send(&event("ratings-added"));
    changed(&mut changes).await;
    let loaded = source.load().unwrap();
    assert_eq!(
        names(&loaded, "Service"),
        ["default/kubernetes", "default/ratings", "default/reviews"]
    );

    watch.send(&event("reviews-modified"));
    changed(&mut changes).await;
    let loaded = source.load().unwrap();
    let Body::Kubernetes { object, .. } = &find(&loaded, "Service", "reviews").body else {
        panic!("a Kubernetes object");
    };
    assert_eq!(object["metadata"]["labels"]["tier"], "backend");
    assert_eq!(object["spec"]["ports"].as_array().map(Vec::len), Some(2));
    assert!(object["metadata"].get("managedFields").is_none());

    watch.send(&event("ratings-deleted"));
    changed(&mut changes).await;
    assert_eq!(
        names(&source.load().unwrap(), "Service"),
        ["default/kubernetes", "default/reviews"]
    );

    // Counted as istiod counts its informers' events; the initial lists are not.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    for event in ["add", "update", "delete"] {
        let line = format!("pilot_k8s_reg_events_total{{type=\"Services\",event=\"{event}\"}} 1");
        assert!(text.contains(&line), "{line} in {text}");
    }
    assert!(
        text.contains("pilot_k8s_reg_events_total{type=\"Pods\",event=\"add\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("pilot_k8s_cfg_events_total{type=\"VirtualService\",event=\"add\"} 0"),
        "{text}"
    );
}

#[tokio::test]
async fn a_status_report_that_changes_nothing_pilot_reads_does_not_reload() {
    let (api, client) = bookinfo_api();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = crate::metrics::KubeEventMetrics::register(&mut registry);
    let source = KubeSource::with_options(client, options()).with_metrics(metrics.clone());
    let (mut source, mut changes) = synced_with(source).await;
    let pods = api.next_watch(PODS).await;
    let pod_event = |resource_version: &str, edit: &dyn Fn(&mut Value)| {
        let mut pod = fixture!("pods.json")["items"][0].clone();
        pod["apiVersion"] = "v1".into();
        pod["kind"] = "Pod".into();
        pod["metadata"]["resourceVersion"] = resource_version.into();
        edit(&mut pod);
        serde_json::json!({"type": "MODIFIED", "object": pod})
    };

    // The kubelet reports a container restart: nothing the registry reads moved.
    pods.send(&pod_event("48700", &|p| {
        p["status"]["containerStatuses"][1]["restartCount"] = 1.into();
        p["status"]["containerStatuses"][1]["lastState"] =
            serde_json::json!({"terminated": {"exitCode": 137, "reason": "OOMKilled"}});
    }));
    let quiet = tokio::time::timeout(Duration::from_millis(700), changes.recv()).await;
    assert!(
        quiet.is_err(),
        "no reload for a status report pilot ignores"
    );
    assert_eq!(metrics.counter("Pod", "updatesame").get(), 1);

    // Then the pod stops being ready: that is a change.
    pods.send(&pod_event("48701", &|p| {
        p["status"]["conditions"][2]["status"] = "False".into();
    }));
    changed(&mut changes).await;
    assert_eq!(metrics.counter("Pod", "update").get(), 1);
    let loaded = source.load().unwrap();
    let Body::Kubernetes { object, .. } = &find(&loaded, "Pod", "reviews-v1-5b7c8d9f6d-x2x7k").body
    else {
        panic!("a Pod is a Kubernetes object");
    };
    assert_eq!(object["metadata"]["resourceVersion"], "48701");
    assert_eq!(object["status"]["conditions"][2]["type"], "Ready");
    assert_eq!(object["status"]["conditions"][2]["status"], "False");
}

#[tokio::test]
async fn a_broken_watch_resumes_from_the_last_resource_version_without_listing() {
    let (api, client) = bookinfo_api();
    let (mut source, mut changes) = synced(client).await;
    let watch = api.next_watch(SERVICES).await;
    watch.send(&event("ratings-added")); // resourceVersion 48300
    changed(&mut changes).await;
    watch.send(&event("bookmark")); // resourceVersion 48350
    // A server-side error event keeps the stream; the watcher carries on.
    watch.send(&event("internal-error"));
    watch.fail();

    let resumed = api.next_watch(SERVICES).await;
    assert!(resumed.request.is_watch());
    assert_eq!(resumed.request.resource_version(), Some("48350"));
    let requests = api.requests(SERVICES);
    assert_eq!(
        requests.iter().filter(|r| !r.is_watch()).count(),
        1,
        "no relist after a broken watch: {requests:#?}"
    );
    // Nothing was lost, and the resumed watch delivers.
    assert!(names(&source.load().unwrap(), "Service").contains(&"default/ratings".to_string()));
    resumed.send(&event("ratings-deleted"));
    changed(&mut changes).await;
    assert_eq!(
        names(&source.load().unwrap(), "Service"),
        ["default/kubernetes", "default/reviews"]
    );
}

#[tokio::test]
async fn gone_relists_and_keeps_serving_the_last_objects_until_the_list_completes() {
    let (api, client) = bookinfo_api();
    let (mut source, mut changes) = synced(client).await;
    let watch = api.next_watch(SERVICES).await;

    // The relist will hang until released; meanwhile the old objects stay.
    api.hold_lists(SERVICES);
    let mut relisted = fixture!("services.json");
    relisted["metadata"]["resourceVersion"] = "48500".into();
    let ratings = event("ratings-added")["object"].clone();
    relisted["items"].as_array_mut().unwrap().push(ratings);
    api.set_list(SERVICES, relisted);
    watch.send(&event("gone"));

    let requests = api.wait_requests(SERVICES, 3).await;
    assert!(
        !requests[2].is_watch(),
        "410 Gone lists again: {requests:#?}"
    );
    assert_eq!(requests[2].resource_version(), Some("0"));
    assert_eq!(
        names(&source.load().unwrap(), "Service"),
        ["default/kubernetes", "default/reviews"],
        "the last listed objects stay served during the relist"
    );

    api.release_lists(SERVICES);
    changed(&mut changes).await;
    assert_eq!(
        names(&source.load().unwrap(), "Service"),
        ["default/kubernetes", "default/ratings", "default/reviews"]
    );
    let rewatch = api.next_watch(SERVICES).await;
    assert_eq!(rewatch.request.resource_version(), Some("48500"));
}

#[tokio::test]
async fn a_missing_crd_is_skipped_and_watched_once_installed() {
    let (api, client) = FakeApi::start();
    api.set_list(SERVICES, fixture!("services.json"));
    // No CRD installed: every Istio kind is absent, the built-in kinds serve.
    let (mut source, mut changes) = synced(client).await;
    let loaded = source.load().unwrap();
    assert_eq!(names(&loaded, "Service").len(), 2);
    assert!(names(&loaded, "VirtualService").is_empty());
    assert_eq!(phase_of(&source, "VirtualService"), "absent");

    api.set_list(VIRTUAL_SERVICES, fixture!("virtualservices.json"));
    api.install_crd(fixture!("crd-virtualservices.json"));
    loop {
        changed(&mut changes).await;
        if !names(&source.load().unwrap(), "VirtualService").is_empty() {
            break;
        }
    }
    assert_eq!(phase_of(&source, "VirtualService"), "serving");
    assert!(api.unexpected().is_empty(), "{:?}", api.unexpected());
}

#[tokio::test]
async fn a_crd_whose_list_is_not_found_is_skipped_while_the_rest_works() {
    let (api, client) = bookinfo_api();
    // The CRD exists but its resource is not served (yet): 404 on the list.
    api.set_list_status(VIRTUAL_SERVICES, 404, fixture!("status-404-page.json"));
    let (mut source, _changes) = synced(client).await;
    assert_eq!(phase_of(&source, "VirtualService"), "absent");
    let loaded = source.load().unwrap();
    assert!(names(&loaded, "VirtualService").is_empty());
    assert_eq!(names(&loaded, "DestinationRule"), ["default/reviews"]);
    assert_eq!(names(&loaded, "Service").len(), 2);
}

#[tokio::test]
async fn a_refused_list_keeps_pilot_waiting_rather_than_serving_without_the_kind() {
    let (api, client) = bookinfo_api();
    api.set_list_status(SECRETS, 403, fixture!("status-403-secrets.json"));
    let mut source = KubeSource::with_options(client, options());
    let (signal, _changes) = ChangeSignal::channel();
    source.watch(signal).unwrap();
    let mut sync = source.synced();
    let early = tokio::time::timeout(Duration::from_millis(1500), &mut sync).await;
    assert!(early.is_err(), "not synced while Secrets are refused");
    match source.load() {
        Err(SourceError::NotSynced { pending }) => assert_eq!(pending, "Secret"),
        other => panic!("load before sync: {other:?}"),
    }

    // Granted: the watcher's next attempt (with backoff) lists them.
    api.set_list(SECRETS, fixture!("secrets.json"));
    tokio::time::timeout(WAIT, sync)
        .await
        .expect("synced once allowed")
        .unwrap();
    assert_eq!(names(&source.load().unwrap(), "Secret").len(), 1);
}

#[tokio::test]
async fn the_controller_publishes_services_endpoints_and_subsets_from_the_api() {
    let (api, client) = bookinfo_api();
    let options = ConfigOptions {
        debounce_after: Duration::from_millis(10),
        debounce_max: Duration::from_millis(100),
        ..ConfigOptions::default()
    };
    let controller =
        ConfigController::new(KubeSource::with_options(client, self::options()), options);
    let model = ModelHandle::default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(controller.run(model.clone(), async {
        let _ = stopped.await;
    }));
    let mut versions = model.subscribe();
    tokio::time::timeout(WAIT, versions.wait_for(|v| *v > 0))
        .await
        .expect("published after the initial lists")
        .unwrap();

    let snapshot = model.load();
    assert!(snapshot.rejected.is_empty(), "{:?}", snapshot.rejected);
    assert!(snapshot.services.contains_key(REVIEWS));
    let addresses: BTreeSet<&str> = snapshot.endpoints[REVIEWS][&9080]
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(addresses, BTreeSet::from(["10.244.0.12", "10.244.0.13"]));
    let (rule, spec) = snapshot
        .destination_rules()
        .next()
        .expect("a DestinationRule");
    assert_eq!(rule.name(), "reviews");
    let subsets: Vec<&str> = spec.subsets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(subsets, ["v1", "v2"]);
    assert_eq!(snapshot.virtual_services().count(), 1);
    let first = snapshot.version;

    // A pod leaves the slice: an endpoints-only update.
    let slices = api.next_watch(SLICES).await;
    let mut slice = fixture!("endpointslices.json")["items"][1].clone();
    slice["apiVersion"] = "discovery.k8s.io/v1".into();
    slice["kind"] = "EndpointSlice".into();
    slice["metadata"]["resourceVersion"] = "48600".into();
    slice["endpoints"].as_array_mut().unwrap().truncate(1);
    slices.send(&serde_json::json!({"type": "MODIFIED", "object": slice}));
    tokio::time::timeout(WAIT, versions.wait_for(|v| *v > first))
        .await
        .expect("the change is published")
        .unwrap();
    let snapshot = model.load();
    let addresses: Vec<&str> = snapshot.endpoints[REVIEWS][&9080]
        .iter()
        .map(|e| e.address.as_str())
        .collect();
    assert_eq!(addresses, ["10.244.0.12"]);
    assert!(snapshot.endpoints_only);

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, run)
        .await
        .expect("the controller stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster"]
async fn sees_the_kubernetes_service_of_the_current_cluster() {
    let client = kube::Client::try_default()
        .await
        .expect("a cluster from KUBECONFIG or in-cluster config");
    let mut source = KubeSource::new(client);
    let (signal, _changes) = ChangeSignal::channel();
    source.watch(signal).unwrap();
    tokio::time::timeout(Duration::from_secs(60), source.synced())
        .await
        .expect("initial lists within a minute")
        .expect("synced");
    let loaded = source.load().unwrap();
    assert!(
        names(&loaded, "Service").contains(&"default/kubernetes".to_string()),
        "{:?}",
        names(&loaded, "Service")
    );
    let mut store = ConfigStore::new("default");
    store.apply(loaded);
    let snapshot = store.snapshot(1);
    assert!(
        snapshot
            .services
            .contains_key("kubernetes.default.svc.cluster.local")
    );
}

/// The README's ClusterRole for pilot (what the Helm chart grants) covers every
/// kind the source watches, and the CRD lookups.
#[test]
fn the_readme_rbac_grants_what_the_source_reads() {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
    let block = readme
        .split("The service account needs this ClusterRole:")
        .nth(1)
        .and_then(|rest| rest.split("```yaml").nth(1))
        .and_then(|rest| rest.split("```").next())
        .expect("README has pilot's ClusterRole");
    let list = |line: &str, key: &str| -> Option<Vec<String>> {
        let inner = line.trim().trim_start_matches("- ").strip_prefix(key)?;
        let inner = inner.trim().trim_start_matches('[').trim_end_matches(']');
        Some(
            inner
                .split(',')
                .map(|s| s.trim().trim_matches('"').to_string())
                .collect(),
        )
    };
    let mut granted = BTreeSet::new();
    let (mut groups, mut resources) = (Vec::new(), Vec::new());
    for line in block.lines() {
        if let Some(g) = list(line, "apiGroups:") {
            groups = g;
        } else if let Some(r) = list(line, "resources:") {
            resources = r;
        } else if let Some(verbs) = list(line, "verbs:") {
            for g in &groups {
                for r in &resources {
                    for v in &verbs {
                        granted.insert((g.clone(), r.clone(), v.clone()));
                    }
                }
            }
        }
    }
    for kind in WatchedKind::all() {
        let (group, plural) = match kind.api {
            kinds::KindApi::BuiltIn { group, plural, .. } => (group, plural),
            kinds::KindApi::Istio(k) => (k.group(), k.plural()),
        };
        for verb in ["list", "watch"] {
            assert!(
                granted.contains(&(group.to_string(), plural.to_string(), verb.to_string())),
                "README's ClusterRole lacks {verb} on {plural}.{group}"
            );
        }
    }
    assert!(granted.contains(&(
        "apiextensions.k8s.io".to_string(),
        "customresourcedefinitions".to_string(),
        "get".to_string()
    )));
}

//! The routing table against the real control plane: pilot loads Istio's
//! bookinfo (`samples/bookinfo/*.yaml`, the pods of
//! `crates/pilot/tests/fixtures/xds/bookinfo-workloads.yaml`) and every feature
//! its generators translate (`fixtures/xds/features.yaml`) through its config
//! controller, generates RDS for the productpage sidecar and the ingress
//! gateway, and the proxy compiles every route configuration (the conformance
//! bar: whatever pilot emits, the proxy accepts) and selects routes as the
//! Istio YAML says.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::{Listener, filter::ConfigType};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager::RouteSpecifier,
};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use hyper::HeaderMap;
use pilot::config::{ConfigController, ConfigOptions};
use pilot::model::{ModelHandle, Snapshot};
use pilot::proxy::Proxy;
use pilot::xds::{self, LISTENER, ROUTE};
use prost::Message;
use proxy::route::{self, FaultAbort, RequestView, RouteTable, Selected, SelectedAction};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Bookinfo plus the feature fixture, loaded the way `pilot` loads a config
/// directory.
fn snapshot() -> (std::sync::Arc<Snapshot>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = repo().join("crates/pilot/tests/fixtures/xds");
    let copy = |from: &Path, to: &str| {
        let text = std::fs::read_to_string(from).unwrap();
        let text = text.replace("FIXTURES", &fixtures.display().to_string());
        std::fs::write(dir.path().join(to), text).unwrap();
    };
    copy(
        &repo().join("samples/bookinfo/platform.yaml"),
        "platform.yaml",
    );
    copy(
        &repo().join("samples/bookinfo/networking.yaml"),
        "networking.yaml",
    );
    copy(&fixtures.join("bookinfo-workloads.yaml"), "workloads.yaml");
    copy(&fixtures.join("features.yaml"), "features.yaml");
    let model = ModelHandle::default();
    let mut controller = ConfigController::from_dir(dir.path(), ConfigOptions::default());
    let reload = controller.reload_once(&model).unwrap();
    assert_eq!(reload.outcome.rejected, 0, "pilot rejected fixtures");
    (model.load(), dir)
}

fn proxy(snapshot: &Snapshot, id: &str, namespace: &str, labels: &[(&str, &str)]) -> Proxy {
    let s = |v: &str| Value {
        kind: Some(Kind::StringValue(v.into())),
    };
    let mut meta = Struct::default();
    meta.fields.insert("NAMESPACE".into(), s(namespace));
    meta.fields.insert(
        "LABELS".into(),
        Value {
            kind: Some(Kind::StructValue(Struct {
                fields: labels.iter().map(|(k, v)| (k.to_string(), s(v))).collect(),
            })),
        },
    );
    let mut p = Proxy::from_node(&Node {
        id: id.into(),
        metadata: Some(meta),
        ..Default::default()
    })
    .unwrap();
    p.complete_from(snapshot);
    p
}

/// RDS for every route name the proxy's listeners use, compiled; panics with
/// every compile error.
fn tables(snapshot: &Snapshot, proxy: &Proxy) -> Vec<RouteTable> {
    let mut names = BTreeSet::new();
    for r in xds::generate(snapshot, proxy, LISTENER, &[]).unwrap() {
        let l = Listener::decode(r.resource.value.as_slice()).unwrap();
        for chain in l.filter_chains.iter().chain(l.default_filter_chain.iter()) {
            for f in &chain.filters {
                if let Some(ConfigType::TypedConfig(any)) = &f.config_type
                    && any.type_url.ends_with("HttpConnectionManager")
                    && let Ok(h) = HttpConnectionManager::decode(any.value.as_slice())
                    && let Some(RouteSpecifier::Rds(rds)) = h.route_specifier
                {
                    names.insert(rds.route_config_name);
                }
            }
        }
    }
    let names: Vec<String> = names.into_iter().collect();
    assert!(!names.is_empty(), "no RDS names in LDS");
    let routes = xds::generate(snapshot, proxy, ROUTE, &names).unwrap();
    assert!(!routes.is_empty());
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for r in routes {
        let rc = RouteConfiguration::decode(r.resource.value.as_slice()).unwrap();
        match route::compile(&rc) {
            Ok(t) => out.push(t),
            Err(e) => errors.push(format!("{}: {e:#?}", rc.name)),
        }
    }
    assert!(
        errors.is_empty(),
        "pilot's RDS refused:\n{}",
        errors.join("\n")
    );
    out
}

fn productpage(snapshot: &Snapshot) -> Proxy {
    proxy(
        snapshot,
        "sidecar~10.1.0.10~productpage-v1-6b746f74dc-9rlmh.default~default.svc.cluster.local",
        "default",
        &[("app", "productpage"), ("version", "v1")],
    )
}

fn ingress(snapshot: &Snapshot) -> Proxy {
    proxy(
        snapshot,
        "router~10.1.9.9~istio-ingressgateway-5d9d8c7f8b-abcde.istio-system~istio-system.svc.cluster.local",
        "istio-system",
        &[("istio", "ingressgateway")],
    )
}

struct Req {
    authority: &'static str,
    path: &'static str,
    scheme: &'static str,
    headers: HeaderMap,
}

impl Req {
    fn new(authority: &'static str, path: &'static str) -> Req {
        Req {
            authority,
            path,
            scheme: "http",
            headers: HeaderMap::new(),
        }
    }
    fn header(mut self, k: &'static str, v: &'static str) -> Req {
        self.headers.insert(k, v.parse().unwrap());
        self
    }
    fn view(&self, random: u64) -> RequestView<'_> {
        RequestView {
            authority: self.authority,
            method: "GET",
            path_and_query: self.path,
            scheme: self.scheme,
            headers: &self.headers,
            random,
        }
    }
}

fn by_name<'a>(tables: &'a [RouteTable], name: &str) -> &'a RouteTable {
    tables
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no route configuration {name}"))
}

/// `req` routed by `table`.
fn route_in<'a>(table: &'a RouteTable, req: &Req, random: u64) -> Selected<'a> {
    table.select(&req.view(random)).unwrap_or_else(|| {
        panic!(
            "{} does not route {} {}",
            table.name(),
            req.authority,
            req.path
        )
    })
}

/// The first table with a route for `req` other than passthrough or block-all.
fn select<'a>(tables: &'a [RouteTable], req: &Req, random: u64) -> Selected<'a> {
    let hits: Vec<_> = tables
        .iter()
        .filter_map(|t| t.select(&req.view(random)).map(|s| (t.name(), s)))
        .filter(|(_, s)| {
            !matches!(s.action, SelectedAction::Cluster(c) if c == "PassthroughCluster")
                && s.virtual_host != "block_all"
        })
        .collect();
    assert!(
        !hits.is_empty(),
        "no table routes {} {}",
        req.authority,
        req.path
    );
    hits.into_iter().next().unwrap().1
}

fn cluster<'a>(s: &Selected<'a>) -> &'a str {
    match s.action {
        SelectedAction::Cluster(c) => c,
        other => panic!("expected a cluster, got {other:?}"),
    }
}

#[test]
fn route_pilot_sidecar_bookinfo() {
    let (snapshot, _dir) = snapshot();
    let tables = tables(&snapshot, &productpage(&snapshot));
    // The sidecar's outbound HTTP listener on 9080 uses the table named `9080`.
    let t = by_name(&tables, "9080");

    // reviews: `end-user: jason` → v2.
    let jason = Req::new("reviews:9080", "/reviews/0").header("end-user", "jason");
    for random in [0, 1, 99, 12345] {
        assert_eq!(
            cluster(&route_in(t, &jason, random)),
            "outbound|9080|v2|reviews.default.svc.cluster.local"
        );
    }
    // Everyone else: 75 % v1, 25 % v3.
    let other =
        Req::new("reviews.default.svc.cluster.local:9080", "/reviews/0").header("end-user", "mary");
    let (mut v1, mut v3) = (0, 0);
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    for _ in 0..10_000 {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        match cluster(&route_in(t, &other, rng >> 11)) {
            "outbound|9080|v1|reviews.default.svc.cluster.local" => v1 += 1,
            "outbound|9080|v3|reviews.default.svc.cluster.local" => v3 += 1,
            c => panic!("unexpected {c}"),
        }
    }
    assert!((7400..=7600).contains(&v1), "v1 {v1} v3 {v3}");
    assert_eq!(v1 + v3, 10_000);

    // ratings: timeout 10s, 3 attempts of 2s on gateway-error,connect-failure,refused-stream.
    let s = route_in(t, &Req::new("ratings:9080", "/ratings/0"), 0);
    assert_eq!(
        cluster(&s),
        "outbound|9080|v1|ratings.default.svc.cluster.local"
    );
    assert_eq!(s.timeout(), Some(Duration::from_secs(10)));
    let retry = s.retry.expect("retry policy");
    assert_eq!(retry.num_retries, 3);
    assert_eq!(retry.per_try_timeout, Some(Duration::from_secs(2)));
    for c in ["gateway-error", "connect-failure", "refused-stream"] {
        assert!(
            retry.retry_on.iter().any(|r| r == c),
            "{:?}",
            retry.retry_on
        );
    }

    // details: `end-user: test-…` from productpage aborts 100 % with 500.
    let s = select(
        &tables,
        &Req::new("details:9080", "/details/0").header("end-user", "test-1"),
        0,
    );
    let fault = s.fault.expect("fault");
    let (abort, pct) = fault.abort.expect("abort");
    assert_eq!(abort, FaultAbort::Http(500));
    assert_eq!(pct.percent(), 100.0);
    // /details mirrors 1.5 % to ratings, with no retries.
    let s = route_in(t, &Req::new("details:9080", "/details/0"), 0);
    assert!(s.fault.is_none());
    let mirrors = &s.forward.expect("forward").mirrors;
    assert_eq!(mirrors.len(), 1, "{mirrors:?}");
    assert!(mirrors[0].cluster.contains("ratings"), "{mirrors:?}");
    assert_eq!(mirrors[0].fraction.expect("fraction").percent(), 1.5);
    assert_eq!(s.retry.map_or(0, |r| r.num_retries), 0);
    // Anything else on details: timeout 1s.
    let s = route_in(t, &Req::new("details:9080", "/other"), 0);
    assert_eq!(s.timeout(), Some(Duration::from_secs(1)));
    assert_eq!(
        cluster(&s),
        "outbound|9080||details.default.svc.cluster.local"
    );
}

#[test]
fn route_pilot_gateway_features() {
    let (snapshot, _dir) = snapshot();
    let tables = tables(&snapshot, &ingress(&snapshot));

    let https = |path: &'static str| {
        let mut r = Req::new("bookinfo.example.com", path);
        r.scheme = "https";
        r
    };
    // /teapot → 418 "I'm a teapot".
    let s = select(&tables, &https("/teapot"), 0);
    match s.action {
        SelectedAction::DirectResponse(d) => {
            assert_eq!(d.status, 418);
            assert_eq!(d.body.as_deref(), Some(&b"I'm a teapot"[..]));
        }
        other => panic!("{other:?}"),
    }
    // /old → 308 to /productpage.
    let req = https("/old?x=1");
    let s = select(&tables, &req, 0);
    assert_eq!(s.response_status(), Some(308));
    let loc = s.redirect_location(&req.view(0)).unwrap();
    assert!(loc.ends_with("/productpage?x=1"), "{loc}");
    // /API/v2/… (case-insensitive) → productpage with /api/v1 rewrite, 5s, 4 retries, CORS, mirror.
    let req = https("/API/v2/products?x=1");
    let s = select(&tables, &req, 0);
    assert_eq!(
        cluster(&s),
        "outbound|9080||productpage.default.svc.cluster.local"
    );
    assert_eq!(
        s.rewritten_path(req.path).as_deref(),
        Some("/api/v1/products?x=1")
    );
    assert_eq!(s.timeout(), Some(Duration::from_secs(5)));
    let retry = s.retry.unwrap();
    assert_eq!(retry.num_retries, 4);
    assert_eq!(retry.per_try_timeout, Some(Duration::from_secs(1)));
    let cors = s.cors.expect("cors");
    assert_eq!(cors.allow_credentials, Some(true));
    assert!(cors.allow_methods.contains("POST"));
    let f = s.forward.unwrap();
    assert_eq!(f.mirrors[0].fraction.unwrap().percent(), 12.5);
    assert!(
        s.header_ops.iter().any(|h| h
            .request_add
            .iter()
            .any(|a| a.name == "x-forwarded-by" && a.value == "mizzen")),
        "{:?}",
        s.header_ops
    );
    // /faulty with x-test: a, debug=true, GET, no x-skip → fault 10 % delay 2 s, 0.5 % abort 503.
    let req = https("/faulty/x?debug=true").header("x-test", "a");
    let s = select(&tables, &req, 0);
    assert_eq!(
        cluster(&s),
        "outbound|9080|v1|ratings.default.svc.cluster.local"
    );
    let fault = s.fault.unwrap();
    let (delay, dp) = fault.delay.unwrap();
    assert_eq!(delay, Duration::from_secs(2));
    assert_eq!(dp.percent(), 10.0);
    let (abort, ap) = fault.abort.unwrap();
    assert_eq!(abort, FaultAbort::Http(503));
    assert_eq!(ap.percent(), 0.5);
    // x-skip: 1 (withoutHeaders) falls through to the 90/10 reviews split.
    let req = https("/faulty/x?debug=true")
        .header("x-test", "a")
        .header("x-skip", "1");
    let s = select(&tables, &req, 0);
    assert!(cluster(&s).contains("reviews"), "{:?}", s.action);
    // x-test: c fails the full-match regex ^(a|b)$.
    let req = https("/faulty/x?debug=true").header("x-test", "ab");
    assert!(cluster(&select(&tables, &req, 0)).contains("reviews"));
}

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use http::{HeaderMap, HeaderValue};

use super::*;

// ---------------------------------------------------------------- fixtures

fn s(v: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(v.to_owned())),
    }
}

fn st(fields: &[(&str, Value)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
    }
}

/// Node metadata as istio-agent writes it for `reviews-v2` in `bookinfo`.
fn reviews_node() -> Node {
    let labels = st(&[
        ("app", s("reviews")),
        ("version", s("v2")),
        ("pod-template-hash", s("5b64f47978")),
        ("security.istio.io/tlsMode", s("istio")),
        ("service.istio.io/canonical-name", s("reviews")),
        ("service.istio.io/canonical-revision", s("v2")),
    ]);
    let metadata = st(&[
        ("NAMESPACE", s("bookinfo")),
        ("WORKLOAD_NAME", s("reviews-v2")),
        (
            "LABELS",
            Value {
                kind: Some(Kind::StructValue(labels)),
            },
        ),
        ("CLUSTER_ID", s("Kubernetes")),
        ("MESH_ID", s("cluster.local")),
        ("SERVICE_ACCOUNT", s("bookinfo-reviews")),
        ("ISTIO_VERSION", s("1.24.0")),
        ("INTERCEPTION_MODE", s("REDIRECT")),
        (
            "POD_PORTS",
            s("[{\"containerPort\":9080,\"protocol\":\"TCP\"}]"),
        ),
        ("APP_CONTAINERS", s("reviews")),
    ]);
    Node {
        id: "sidecar~10.244.0.12~reviews-v2-5b64f47978-x7k2p.bookinfo~bookinfo.svc.cluster.local"
            .into(),
        cluster: "reviews.bookinfo".into(),
        metadata: Some(metadata),
        ..Default::default()
    }
}

fn productpage() -> Arc<Peer> {
    Arc::new(Peer {
        workload: "productpage-v1".into(),
        namespace: "bookinfo".into(),
        principal: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage".into(),
        app: "productpage".into(),
        version: "v1".into(),
        canonical_service: "productpage".into(),
        canonical_revision: "v1".into(),
        cluster: "Kubernetes".into(),
    })
}

fn ratings() -> Arc<Peer> {
    Arc::new(Peer {
        workload: "ratings-v1".into(),
        namespace: "bookinfo".into(),
        principal: "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings".into(),
        app: "ratings".into(),
        version: "v1".into(),
        canonical_service: "ratings".into(),
        canonical_revision: "v1".into(),
        cluster: "Kubernetes".into(),
    })
}

fn inbound(code: u16) -> RequestLabels {
    RequestLabels {
        reporter: Reporter::Destination,
        peer: productpage(),
        destination_service: "reviews.bookinfo.svc.cluster.local".into(),
        destination_service_name: "reviews".into(),
        destination_service_namespace: "bookinfo".into(),
        destination_port: 9080,
        request_protocol: Protocol::Http,
        response_code: code,
        grpc_response_status: None,
        response_flags: "-".into(),
        connection_security_policy: Security::MutualTls,
    }
}

fn outbound(code: u16, flags: &str) -> RequestLabels {
    RequestLabels {
        reporter: Reporter::Source,
        peer: ratings(),
        destination_service: "ratings.bookinfo.svc.cluster.local".into(),
        destination_service_name: "ratings".into(),
        destination_service_namespace: "bookinfo".into(),
        destination_port: 9080,
        request_protocol: Protocol::Http,
        response_code: code,
        grpc_response_status: None,
        response_flags: flags.into(),
        connection_security_policy: Security::MutualTls,
    }
}

// ---------------------------------------------------- exposition parsing

#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, k: &str) -> &str {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{} has no label {k}: {:?}", self.name, self.labels))
    }
    fn names(&self) -> Vec<&str> {
        self.labels.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// Parses Prometheus text: `# TYPE` lines into a map, samples into a list.
fn parse(text: &str) -> (HashMap<String, String>, Vec<Sample>) {
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE line");
            assert!(
                types.insert(name.to_owned(), ty.to_owned()).is_none(),
                "duplicate TYPE for {name}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let open = line.find('{').expect("labels");
        let name = line[..open].to_owned();
        let mut labels = Vec::new();
        let b = line.as_bytes();
        let mut i = open + 1;
        while b[i] != b'}' {
            let eq = i + line[i..].find('=').expect("=");
            let key = line[i..eq].to_owned();
            assert_eq!(b[eq + 1], b'"');
            let mut j = eq + 2;
            let mut val = String::new();
            while b[j] != b'"' {
                if b[j] == b'\\' {
                    val.push(match b[j + 1] {
                        b'n' => '\n',
                        c => c as char,
                    });
                    j += 2;
                } else {
                    let c = line[j..].chars().next().expect("char");
                    val.push(c);
                    j += c.len_utf8();
                }
            }
            labels.push((key, val));
            i = j + 1;
            if b[i] == b',' {
                i += 1;
            }
        }
        let value: f64 = line[i + 1..].trim().parse().expect("value");
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (types, samples)
}

fn render(t: &Telemetry) -> (HashMap<String, String>, Vec<Sample>) {
    let mut out = String::new();
    t.render_prometheus(&mut out);
    parse(&out)
}

fn find<'a>(samples: &'a [Sample], name: &str, pairs: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name && pairs.iter().all(|(k, v)| s.label(k) == *v))
        .collect()
}

const ISTIO_HTTP_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

// ------------------------------------------------------------ node labels

#[test]
fn local_workload_from_istio_agent_node() {
    let t = Telemetry::from_node(&reviews_node());
    let l = t.local();
    assert_eq!(l.proxy_type, ProxyType::Sidecar);
    assert_eq!(l.workload, "reviews-v2");
    assert_eq!(l.namespace, "bookinfo");
    assert_eq!(l.app, "reviews");
    assert_eq!(l.version, "v2");
    assert_eq!(l.canonical_service, "reviews");
    assert_eq!(l.canonical_revision, "v2");
    assert_eq!(l.cluster, "Kubernetes");
    assert_eq!(l.mesh_id, "cluster.local");
    assert_eq!(
        l.principal,
        "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews"
    );
    assert_eq!(t.reporter(true), Reporter::Destination);
    assert_eq!(t.reporter(false), Reporter::Source);
}

#[test]
fn label_fallbacks_follow_istio() {
    // Only the recommended Kubernetes labels: app and version come from them,
    // and so do the canonical name and revision.
    let labels = st(&[
        ("app.kubernetes.io/name", s("shop")),
        ("app.kubernetes.io/version", s("1.2")),
    ]);
    let node = Node {
        id: "sidecar~10.0.0.1~shop-abc.store~store.svc.cluster.local".into(),
        metadata: Some(st(&[
            ("WORKLOAD_NAME", s("shop")),
            (
                "LABELS",
                Value {
                    kind: Some(Kind::StructValue(labels)),
                },
            ),
        ])),
        ..Default::default()
    };
    let l = LocalWorkload::from_node(&node);
    assert_eq!(l.app, "shop");
    assert_eq!(l.version, "1.2");
    assert_eq!(l.canonical_service, "shop");
    assert_eq!(l.canonical_revision, "1.2");
    // NAMESPACE missing: taken from the node id.
    assert_eq!(l.namespace, "store");
    assert_eq!(l.cluster, "unknown");
    assert_eq!(l.principal, "unknown", "no SERVICE_ACCOUNT");

    // No labels at all: the canonical service is the workload name.
    let node = Node {
        id: "router~10.0.0.2~istio-ingressgateway-x.istio-system~istio-system.svc.cluster.local"
            .into(),
        metadata: Some(st(&[
            ("WORKLOAD_NAME", s("istio-ingressgateway")),
            ("NAMESPACE", s("istio-system")),
            ("SERVICE_ACCOUNT", s("istio-ingressgateway-service-account")),
            ("MESH_ID", s("example.org")),
        ])),
        ..Default::default()
    };
    let t = Telemetry::from_node(&node);
    let l = t.local();
    assert_eq!(l.proxy_type, ProxyType::Router);
    assert_eq!(l.app, "unknown");
    assert_eq!(l.version, "unknown");
    assert_eq!(l.canonical_service, "istio-ingressgateway");
    assert_eq!(l.canonical_revision, "latest");
    assert_eq!(
        l.principal,
        "spiffe://example.org/ns/istio-system/sa/istio-ingressgateway-service-account"
    );
    // Gateways report "source" in both directions.
    assert_eq!(t.reporter(true), Reporter::Source);
    assert_eq!(t.reporter(false), Reporter::Source);

    // An empty node: everything unknown, nothing panics.
    let l = LocalWorkload::from_node(&Node::default());
    assert_eq!(l.workload, "unknown");
    assert_eq!(l.namespace, "unknown");
    assert_eq!(l.canonical_revision, "latest");
}

#[test]
fn peer_from_exchanged_metadata() {
    let md = reviews_node().metadata.expect("metadata");
    let p = Peer::from_node_metadata(
        &md,
        "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
    );
    assert_eq!(p.workload, "reviews-v2");
    assert_eq!(p.namespace, "bookinfo");
    assert_eq!(p.app, "reviews");
    assert_eq!(p.canonical_revision, "v2");
    assert_eq!(p.cluster, "Kubernetes");
    assert!(p.principal.ends_with("/sa/bookinfo-reviews"));
}

// ----------------------------------------------------- reporter and labels

#[test]
fn inbound_request_reports_peer_as_source() {
    let t = Telemetry::from_node(&reviews_node());
    t.record_request(&inbound(200), Duration::from_millis(7), 0, 295);
    let (types, samples) = render(&t);
    assert_eq!(types["istio_requests_total"], "counter");
    let total = find(&samples, "istio_requests_total", &[]);
    assert_eq!(total.len(), 1);
    let s = total[0];
    assert_eq!(s.names(), ISTIO_HTTP_LABELS, "Istio's label order");
    let expect = [
        ("reporter", "destination"),
        ("source_workload", "productpage-v1"),
        ("source_canonical_service", "productpage"),
        ("source_canonical_revision", "v1"),
        ("source_workload_namespace", "bookinfo"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-productpage",
        ),
        ("source_app", "productpage"),
        ("source_version", "v1"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "reviews-v2"),
        ("destination_workload_namespace", "bookinfo"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
        ),
        ("destination_app", "reviews"),
        ("destination_version", "v2"),
        ("destination_service", "reviews.bookinfo.svc.cluster.local"),
        ("destination_canonical_service", "reviews"),
        ("destination_canonical_revision", "v2"),
        ("destination_service_name", "reviews"),
        ("destination_service_namespace", "bookinfo"),
        ("destination_cluster", "Kubernetes"),
        ("request_protocol", "http"),
        ("response_code", "200"),
        ("grpc_response_status", ""),
        ("response_flags", "-"),
        ("connection_security_policy", "mutual_tls"),
    ];
    for (k, v) in expect {
        assert_eq!(s.label(k), v, "{k}");
    }
    assert_eq!(s.value, 1.0);
}

#[test]
fn outbound_request_reports_peer_as_destination() {
    let t = Telemetry::from_node(&reviews_node());
    t.record_request(&outbound(503, "UF,URX"), Duration::from_millis(3), 10, 91);
    let (_, samples) = render(&t);
    let s = find(&samples, "istio_requests_total", &[])[0];
    assert_eq!(s.names(), ISTIO_HTTP_LABELS);
    let expect = [
        ("reporter", "source"),
        ("source_workload", "reviews-v2"),
        ("source_workload_namespace", "bookinfo"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-reviews",
        ),
        ("source_app", "reviews"),
        ("source_canonical_service", "reviews"),
        ("source_cluster", "Kubernetes"),
        ("destination_workload", "ratings-v1"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/bookinfo/sa/bookinfo-ratings",
        ),
        ("destination_app", "ratings"),
        ("destination_canonical_service", "ratings"),
        ("destination_service", "ratings.bookinfo.svc.cluster.local"),
        ("destination_service_name", "ratings"),
        ("response_code", "503"),
        ("response_flags", "UF,URX"),
        // Istio: the source reporter cannot know the server's policy.
        ("connection_security_policy", "unknown"),
    ];
    for (k, v) in expect {
        assert_eq!(s.label(k), v, "{k}");
    }
}

#[test]
fn unknown_peer_and_plaintext() {
    let t = Telemetry::from_node(&reviews_node());
    let mut l = inbound(200);
    l.peer = Peer::unknown();
    l.connection_security_policy = Security::None;
    l.destination_service = String::new();
    l.destination_service_name = String::new();
    l.response_flags = String::new();
    t.record_request(&l, Duration::ZERO, 0, 0);
    // The same request spelled with explicit "unknown"s is the same series.
    l.peer = Arc::new(Peer {
        workload: "unknown".into(),
        canonical_revision: "latest".into(),
        ..Peer::default()
    });
    l.response_flags = "-".into();
    l.destination_service = "reviews".into();
    t.record_request(&l, Duration::ZERO, 0, 0);
    assert_eq!(t.request_series_len(), 1);

    let (_, samples) = render(&t);
    let s = find(&samples, "istio_requests_total", &[])[0];
    assert_eq!(s.value, 2.0);
    assert_eq!(s.label("source_workload"), "unknown");
    assert_eq!(s.label("source_principal"), "unknown");
    assert_eq!(s.label("source_canonical_revision"), "latest");
    assert_eq!(s.label("destination_principal"), "unknown", "no mTLS");
    assert_eq!(s.label("connection_security_policy"), "none");
    // Inbound service falls back to the local canonical service.
    assert_eq!(s.label("destination_service"), "reviews");
    assert_eq!(s.label("destination_service_name"), "reviews");
    assert_eq!(s.label("response_flags"), "-");
}

#[test]
fn grpc_status_is_a_label_only_for_grpc() {
    let t = Telemetry::from_node(&reviews_node());
    let mut l = inbound(200);
    l.grpc_response_status = Some(0);
    t.record_request(&l, Duration::ZERO, 5, 5);
    l.request_protocol = Protocol::Grpc;
    t.record_request(&l, Duration::ZERO, 5, 5);
    l.grpc_response_status = Some(14);
    t.record_request(&l, Duration::ZERO, 5, 5);
    let (_, samples) = render(&t);
    let http = find(
        &samples,
        "istio_requests_total",
        &[("request_protocol", "http")],
    );
    assert_eq!(http.len(), 1);
    assert_eq!(http[0].label("grpc_response_status"), "");
    let grpc = find(
        &samples,
        "istio_requests_total",
        &[("request_protocol", "grpc")],
    );
    let mut statuses: Vec<_> = grpc
        .iter()
        .map(|s| s.label("grpc_response_status"))
        .collect();
    statuses.sort();
    assert_eq!(statuses, ["0", "14"]);
}

#[test]
fn label_values_are_escaped() {
    let t = Telemetry::from_node(&reviews_node());
    let mut l = outbound(200, "-");
    l.destination_service = "we\"ird\\host\nname".into();
    t.record_request(&l, Duration::ZERO, 0, 0);
    let (_, samples) = render(&t);
    let s = find(&samples, "istio_requests_total", &[])[0];
    assert_eq!(s.label("destination_service"), "we\"ird\\host\nname");
}

// ---------------------------------------------------------------- rendering

#[test]
fn histograms_render_like_envoy() {
    let t = Telemetry::from_node(&reviews_node());
    let durations_ms = [0u64, 1, 3, 7, 42, 120, 999, 1000, 4_000_000];
    let mut sum_ms = 0;
    let mut sum_resp = 0;
    for (i, ms) in durations_ms.iter().enumerate() {
        let resp = 10u64.pow(i as u32);
        sum_ms += ms;
        sum_resp += resp;
        t.record_request(&inbound(200), Duration::from_millis(*ms), 100, resp);
    }
    // Sub-millisecond precision is dropped, as Istio records whole milliseconds.
    t.record_request(&inbound(200), Duration::from_micros(1500), 100, 0);
    sum_ms += 1;
    let n = durations_ms.len() as f64 + 1.0;

    let (types, samples) = render(&t);
    for h in [
        "istio_request_duration_milliseconds",
        "istio_request_bytes",
        "istio_response_bytes",
    ] {
        assert_eq!(types[h], "histogram");
        let buckets = find(&samples, &format!("{h}_bucket"), &[]);
        let les: Vec<&str> = buckets.iter().map(|b| b.label("le")).collect();
        let mut want: Vec<String> = BUCKETS.iter().map(|b| b.to_string()).collect();
        want.push("+Inf".into());
        assert_eq!(les, want, "{h} bucket bounds");
        for w in buckets.windows(2) {
            assert!(w[0].value <= w[1].value, "{h} buckets are cumulative");
        }
        // Every bucket line carries the full label set plus `le`, last.
        assert_eq!(buckets[0].names()[..25], ISTIO_HTTP_LABELS);
        assert_eq!(buckets[0].names()[25], "le");
        let count = find(&samples, &format!("{h}_count"), &[]);
        assert_eq!(count.len(), 1);
        assert_eq!(count[0].value, n, "{h}_count");
        assert_eq!(buckets.last().expect("+Inf").value, n, "{h} +Inf");
    }
    let sum = |name: &str| find(&samples, name, &[])[0].value;
    assert_eq!(
        sum("istio_request_duration_milliseconds_sum"),
        sum_ms as f64
    );
    assert_eq!(sum("istio_request_bytes_sum"), 100.0 * n);
    assert_eq!(sum("istio_response_bytes_sum"), sum_resp as f64);
    assert_eq!(sum("istio_requests_total"), n);

    let le = |h: &str, le: &str| find(&samples, &format!("{h}_bucket"), &[("le", le)])[0].value;
    let d = "istio_request_duration_milliseconds";
    assert_eq!(le(d, "0.5"), 1.0, "0 ms");
    assert_eq!(le(d, "1"), 3.0, "1 ms, and 1.5 ms counted as 1");
    assert_eq!(le(d, "5"), 4.0, "3 ms");
    assert_eq!(le(d, "1000"), 9.0);
    assert_eq!(le(d, "3600000"), 9.0, "4e6 ms only in +Inf");
    assert_eq!(le("istio_response_bytes", "1"), 2.0, "1 byte and 0 bytes");
}

#[test]
fn exposition_order_and_types() {
    let t = Telemetry::from_node(&reviews_node());
    let mut out = String::new();
    t.render_prometheus(&mut out);
    assert!(out.is_empty(), "no series, no TYPE lines: {out}");

    t.record_request(&inbound(200), Duration::ZERO, 0, 0);
    t.record_tcp_open(&tcp(Reporter::Destination));
    t.render_prometheus(&mut out);
    let families: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .collect();
    assert_eq!(
        families,
        [
            "istio_requests_total counter",
            "istio_tcp_connections_closed_total counter",
            "istio_tcp_connections_opened_total counter",
            "istio_tcp_received_bytes_total counter",
            "istio_tcp_sent_bytes_total counter",
            "istio_request_bytes histogram",
            "istio_request_duration_milliseconds histogram",
            "istio_response_bytes histogram",
        ]
    );
    assert!(out.ends_with('\n'));
}

#[test]
fn same_labels_never_grow_the_map() {
    let t = Telemetry::from_node(&reviews_node());
    let labels = inbound(200);
    for i in 0..100_000u64 {
        t.record_request(&labels, Duration::from_millis(i % 50), i % 7, 1);
    }
    assert_eq!(t.request_series_len(), 1);

    // The handle API shares the same series.
    let series = t.request_series(&labels.key());
    for _ in 0..100_000 {
        series.record(200, None, "-", Duration::ZERO, 0, 0);
    }
    assert_eq!(series.len(), 1);
    assert_eq!(t.request_series_len(), 1);
    let (_, samples) = render(&t);
    assert_eq!(
        find(&samples, "istio_requests_total", &[])[0].value,
        200_000.0
    );

    // A new status makes exactly one more series.
    series.record(404, None, "NR", Duration::ZERO, 0, 0);
    assert_eq!(t.request_series_len(), 2);
}

#[test]
fn concurrent_recording_counts_everything() {
    let t = Telemetry::from_node(&reviews_node());
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || {
                let l = if i % 2 == 0 {
                    inbound(200)
                } else {
                    outbound(200, "-")
                };
                for _ in 0..10_000 {
                    t.record_request(&l, Duration::from_millis(1), 1, 1);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().expect("thread");
    }
    assert_eq!(t.request_series_len(), 2);
    let (_, samples) = render(&t);
    let total: f64 = find(&samples, "istio_requests_total", &[])
        .iter()
        .map(|s| s.value)
        .sum();
    assert_eq!(total, 40_000.0);
}

// --------------------------------------------------------------------- TCP

fn tcp(reporter: Reporter) -> TcpLabels {
    TcpLabels {
        reporter,
        peer: productpage(),
        destination_service: "mongodb.bookinfo.svc.cluster.local".into(),
        destination_service_name: "mongodb".into(),
        destination_service_namespace: "bookinfo".into(),
        response_flags: String::new(),
        connection_security_policy: Security::MutualTls,
    }
}

#[test]
fn tcp_metrics() {
    let t = Telemetry::from_node(&reviews_node());
    let l = tcp(Reporter::Destination);
    t.record_tcp_open(&l);
    t.record_tcp_open(&l);
    t.record_tcp_close(&l, 1000, 20);
    let series = t.tcp_series(&l);
    series.add_bytes(5, 6);
    series.close(0, 4);
    let mut failed = tcp(Reporter::Source);
    failed.response_flags = "UF".into();
    t.record_tcp_open(&failed);
    t.record_tcp_close(&failed, 0, 0);
    assert_eq!(t.tcp_series_len(), 2);
    assert_eq!(t.request_series_len(), 0);

    let (types, samples) = render(&t);
    for name in [
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
    ] {
        assert_eq!(types[name], "counter");
        assert_eq!(find(&samples, name, &[]).len(), 2, "{name}");
    }
    assert!(!types.contains_key("istio_requests_total"));
    let inbound = [("reporter", "destination")];
    let v = |name: &str| find(&samples, name, &inbound)[0].value;
    assert_eq!(v("istio_tcp_connections_opened_total"), 2.0);
    assert_eq!(v("istio_tcp_connections_closed_total"), 2.0);
    assert_eq!(v("istio_tcp_sent_bytes_total"), 1005.0);
    assert_eq!(v("istio_tcp_received_bytes_total"), 30.0);

    let s = find(&samples, "istio_tcp_sent_bytes_total", &inbound)[0];
    let mut want: Vec<&str> = ISTIO_HTTP_LABELS.to_vec();
    want.retain(|l| *l != "response_code" && *l != "grpc_response_status");
    assert_eq!(s.names(), want, "Istio's TCP label set");
    assert_eq!(s.label("request_protocol"), "tcp");
    assert_eq!(s.label("response_flags"), "-");
    assert_eq!(s.label("connection_security_policy"), "mutual_tls");
    assert_eq!(s.label("source_workload"), "productpage-v1");
    assert_eq!(s.label("destination_service_name"), "mongodb");

    let f = find(
        &samples,
        "istio_tcp_connections_closed_total",
        &[("reporter", "source")],
    )[0];
    assert_eq!(f.label("response_flags"), "UF");
    assert_eq!(f.label("destination_workload"), "productpage-v1");
    assert_eq!(f.value, 1.0);
}

mod log_and_trace;

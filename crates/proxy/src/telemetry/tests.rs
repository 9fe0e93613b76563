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

// -------------------------------------------------------------- access log

const ACCESS_LOG_FIELDS: [&str; 24] = [
    "start_time",
    "route_name",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "response_code_details",
    "connection_termination_details",
    "upstream_transport_failure_reason",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "upstream_host",
    "upstream_cluster",
    "upstream_local_address",
    "downstream_local_address",
    "downstream_remote_address",
    "requested_server_name",
];

#[test]
fn access_log_has_istio_default_fields() {
    let start = UNIX_EPOCH + Duration::from_millis(1_714_566_896_789);
    let mut e = AccessLogEntry::new(start);
    e.route_name = Some("default");
    e.method = Some("GET");
    e.path = Some("/reviews/0?q=\"x\"");
    e.protocol = Some("HTTP/1.1");
    e.response_code = 200;
    e.response_code_details = Some("via_upstream");
    e.bytes_received = 0;
    e.bytes_sent = 295;
    e.duration = Duration::from_micros(3900);
    e.upstream_service_time = Some(Duration::from_millis(2));
    e.user_agent = Some("curl/8.5.0");
    e.request_id = Some("4d28d003-690a-9111-8dfe-4674a728b71c");
    e.authority = Some("reviews:9080");
    e.upstream_host = Some("10.244.0.12:9080".parse().expect("addr"));
    e.upstream_cluster = Some("inbound|9080||");
    e.upstream_local_address = Some("127.0.0.6:43567".parse().expect("addr"));
    e.downstream_local_address = Some("10.244.0.12:9080".parse().expect("addr"));
    e.downstream_remote_address = Some("[fd00::7]:51234".parse().expect("addr"));
    e.requested_server_name = Some("outbound_.9080_._.reviews.bookinfo.svc.cluster.local");
    let line = access_log_json(&e);
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    let obj = v.as_object().expect("object");
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, ACCESS_LOG_FIELDS, "every field, in Istio's order");
    assert_eq!(v["start_time"], "2024-05-01T12:34:56.789Z");
    assert_eq!(v["path"], "/reviews/0?q=\"x\"");
    assert_eq!(v["response_code"], 200);
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["bytes_sent"], 295);
    assert_eq!(v["duration"], 3);
    assert_eq!(v["upstream_service_time"], "2");
    assert_eq!(v["downstream_remote_address"], "[fd00::7]:51234");
    assert!(v["x_forwarded_for"].is_null());
    assert!(v["connection_termination_details"].is_null());
    assert!(v["upstream_transport_failure_reason"].is_null());

    // A request that never reached an upstream.
    let mut e = AccessLogEntry::new(UNIX_EPOCH + Duration::from_secs(951_868_799));
    e.response_code = 404;
    e.response_flags = "NR";
    e.response_code_details = Some("route_not_found");
    e.user_agent = Some("");
    let v: serde_json::Value = serde_json::from_str(&access_log_json(&e)).expect("valid JSON");
    assert_eq!(
        v.as_object().expect("object").len(),
        ACCESS_LOG_FIELDS.len()
    );
    assert_eq!(v["start_time"], "2000-02-29T23:59:59.000Z");
    assert_eq!(v["response_flags"], "NR");
    for k in [
        "upstream_host",
        "upstream_cluster",
        "method",
        "user_agent",
        "route_name",
    ] {
        assert!(v[k].is_null(), "{k}");
    }
}

#[test]
fn access_log_escapes_control_characters() {
    let mut e = AccessLogEntry::new(SystemTime::UNIX_EPOCH);
    e.user_agent = Some("a\u{1}b\tc\\");
    let v: serde_json::Value = serde_json::from_str(&access_log_json(&e)).expect("valid JSON");
    assert_eq!(v["user_agent"], "a\u{1}b\tc\\");
    assert_eq!(v["start_time"], "1970-01-01T00:00:00.000Z");
}

// ------------------------------------------------------------------ tracing

/// A deterministic id source: 1, 2, 3, … times a large odd constant.
fn counter() -> impl FnMut() -> u64 {
    let mut n = 0u64;
    move || {
        n += 1;
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

fn get<'h>(h: &'h HeaderMap, name: &str) -> &'h str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .expect("ascii")
}

/// Both families describe the same trace and span.
fn assert_consistent(h: &HeaderMap, ctx: &TraceContext) {
    let tp: Vec<&str> = get(h, "traceparent").split('-').collect();
    assert_eq!(tp.len(), 4);
    assert_eq!(tp[0], "00");
    assert_eq!(tp[1], format!("{:032x}", ctx.trace_id));
    assert_eq!(tp[2], format!("{:016x}", ctx.span_id));
    assert_eq!(tp[3].len(), 2);
    let b3_trace = get(h, "x-b3-traceid");
    assert_eq!(
        u128::from_str_radix(b3_trace, 16).expect("hex"),
        ctx.trace_id
    );
    assert_eq!(get(h, "x-b3-spanid"), tp[2]);
    let sampled = u8::from_str_radix(tp[3], 16).expect("flags") & 1 == 1;
    assert_eq!(get(h, "x-b3-sampled"), if sampled { "1" } else { "0" });
    assert_eq!(sampled, ctx.sampled);
    match ctx.parent_span_id {
        Some(p) => assert_eq!(get(h, "x-b3-parentspanid"), format!("{p:016x}")),
        None => assert!(h.get("x-b3-parentspanid").is_none()),
    }
}

#[test]
fn starts_a_new_trace_in_both_formats() {
    let mut h = HeaderMap::new();
    h.insert("x-request-id", HeaderValue::from_static("abc-123"));
    let ctx = propagate_trace(&mut h, true, counter()).expect("generated");
    assert!(ctx.sampled);
    assert_eq!(ctx.parent_span_id, None);
    assert_ne!(ctx.trace_id, 0);
    assert_ne!(ctx.span_id, 0);
    assert_consistent(&h, &ctx);
    assert!(get(&h, "traceparent").ends_with("-01"));
    assert_eq!(get(&h, "x-b3-traceid").len(), 32);
    assert_eq!(get(&h, "x-request-id"), "abc-123", "x-request-id untouched");

    // Deterministic for a deterministic source.
    let mut h2 = HeaderMap::new();
    assert_eq!(propagate_trace(&mut h2, true, counter()), Some(ctx));
}

#[test]
fn no_context_and_no_generation_leaves_headers_alone() {
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static("garbage"));
    assert_eq!(propagate_trace(&mut h, false, counter()), None);
    assert_eq!(get(&h, "traceparent"), "garbage");
    assert!(h.get("x-b3-traceid").is_none());
}

#[test]
fn child_span_keeps_the_w3c_trace() {
    let mut h = HeaderMap::new();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    h.insert("traceparent", HeaderValue::from_static(parent));
    h.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
    h.insert("x-request-id", HeaderValue::from_static("rid"));
    let ctx = propagate_trace(&mut h, true, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(ctx.parent_span_id, Some(0x00f067aa0ba902b7));
    assert_ne!(ctx.span_id, 0x00f067aa0ba902b7);
    assert!(ctx.sampled);
    assert_consistent(&h, &ctx);
    assert!(get(&h, "traceparent").starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert_eq!(get(&h, "tracestate"), "congo=t61rcWkgMzE");
    assert_eq!(get(&h, "x-request-id"), "rid");

    // A second hop chains again: the parent is the previous child.
    let ctx2 = propagate_trace(&mut h, true, counter()).expect("continued");
    assert_eq!(ctx2.trace_id, ctx.trace_id);
    assert_eq!(ctx2.parent_span_id, Some(ctx.span_id));
    assert_consistent(&h, &ctx2);

    // Not sampled stays not sampled, in both families.
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
    );
    let ctx = propagate_trace(&mut h, true, counter()).expect("continued");
    assert!(!ctx.sampled);
    assert_consistent(&h, &ctx);
    assert!(get(&h, "traceparent").ends_with("-00"));
}

#[test]
fn child_span_from_b3_only() {
    let mut h = HeaderMap::new();
    h.insert("x-b3-traceid", HeaderValue::from_static("80f198ee56343ba8"));
    h.insert("x-b3-spanid", HeaderValue::from_static("e457b5a2e4d86bd1"));
    h.insert(
        "x-b3-parentspanid",
        HeaderValue::from_static("05e3ac9a4f6e3b90"),
    );
    h.insert("x-b3-sampled", HeaderValue::from_static("1"));
    let ctx = propagate_trace(&mut h, false, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x80f198ee56343ba8);
    assert_eq!(ctx.parent_span_id, Some(0xe457b5a2e4d86bd1));
    assert_consistent(&h, &ctx);
    // A 64-bit B3 trace id stays 64-bit in B3 and is zero-padded in W3C.
    assert_eq!(get(&h, "x-b3-traceid"), "80f198ee56343ba8");
    assert!(get(&h, "traceparent").starts_with("00-000000000000000080f198ee56343ba8-"));

    // Single-header b3 is read, and rewritten consistently.
    let mut h = HeaderMap::new();
    h.insert(
        "b3",
        HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
    );
    let ctx = propagate_trace(&mut h, true, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
    assert!(!ctx.sampled);
    assert_consistent(&h, &ctx);
    assert_eq!(
        get(&h, "b3"),
        format!(
            "80f198ee56343ba864fe8b2a57d3eff7-{:016x}-0-e457b5a2e4d86bd1",
            ctx.span_id
        )
    );
}

#[test]
fn malformed_traceparent_is_replaced() {
    for bad in [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // extra field in v00
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // short trace id
    ] {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(bad));
        let ctx = propagate_trace(&mut h, true, counter()).expect("new trace");
        assert_eq!(ctx.parent_span_id, None, "{bad}");
        assert_ne!(get(&h, "traceparent"), bad);
        assert_consistent(&h, &ctx);
    }

    // Malformed traceparent beside valid B3: B3 is continued, traceparent fixed.
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static("nonsense"));
    h.insert(
        "x-b3-traceid",
        HeaderValue::from_static("463ac35c9f6413ad48485a3953bb6124"),
    );
    h.insert("x-b3-spanid", HeaderValue::from_static("a2fb4a1d1a96d312"));
    let ctx = propagate_trace(&mut h, false, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x463ac35c9f6413ad48485a3953bb6124);
    assert_eq!(ctx.parent_span_id, Some(0xa2fb4a1d1a96d312));
    assert!(ctx.sampled, "absent x-b3-sampled means sampled");
    assert_consistent(&h, &ctx);

    // A later W3C version with extra fields is accepted and rewritten as 00.
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
    );
    let ctx = propagate_trace(&mut h, false, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_consistent(&h, &ctx);
}

#[test]
fn w3c_wins_over_disagreeing_b3() {
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    h.insert("x-b3-traceid", HeaderValue::from_static("1111111111111111"));
    h.insert("x-b3-spanid", HeaderValue::from_static("2222222222222222"));
    let ctx = propagate_trace(&mut h, true, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_consistent(&h, &ctx);
    assert_eq!(get(&h, "x-b3-traceid"), "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn zero_ids_from_the_random_source_are_skipped() {
    let mut vals = [0u64, 0, 5, 0, 6, 7].into_iter();
    let mut h = HeaderMap::new();
    let ctx = propagate_trace(&mut h, true, move || vals.next().unwrap_or(9)).expect("new");
    assert_eq!(ctx.trace_id, (5u128 << 64) | 6);
    assert_eq!(ctx.span_id, 7);
    assert_consistent(&h, &ctx);
}

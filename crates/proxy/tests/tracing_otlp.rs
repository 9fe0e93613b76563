//! Span export over OTLP (`envoy.tracers.opentelemetry`), end to end: the
//! real proxy (in-process `App`, static bootstrap) and the real `envoy` (the
//! oracle) run the same bootstrap, whose connection managers trace to a
//! static cluster pointing at a collector in this test (a real tonic gRPC
//! server implementing `TraceService`, recording what it receives), and
//! forward to an upstream that records the trace headers it gets.
//!
//! Both proxies must send one span per sampled request, continuing the
//! caller's W3C trace (trace id kept, the caller's span as parent, the span
//! id the one propagated upstream), with the span kind of the listener's
//! direction, `service.name` in the resource, the status code attribute and
//! an error status on 5xx; a listener sampling 0% sends nothing for new
//! traces.
//!
//! Needs `envoy` on PATH (or `ENVOY_BIN`); without it the test fails rather
//! than pass silently.

#[path = "support/side_by_side.rs"]
mod side_by_side;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use side_by_side::{Envoy, Mizzen, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// The listeners, in order: egress (OUTBOUND, 100%), ingress (INBOUND,
/// 100%, custom tags), never (0% random sampling).
const LISTENERS: [&str; 3] = ["egress", "ingress", "never"];

/// What the collector received, request by request.
type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

#[derive(Clone, Default)]
struct Collector {
    received: Received,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn collector() -> (SocketAddr, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = Collector::default();
    let received = Arc::clone(&c.received);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(c))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, received)
}

/// Trace headers the upstream received, by request path.
type UpstreamSeen = Arc<Mutex<HashMap<String, BTreeMap<String, String>>>>;

const TRACE_HEADERS: [&str; 7] = [
    "traceparent",
    "tracestate",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-envoy-decorator-operation",
];

/// An HTTP/1.1 upstream that records the trace headers of each request and
/// answers 200, 503 for paths under `/fail`, 404 for `/notfound`.
async fn upstream() -> (SocketAddr, UpstreamSeen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = UpstreamSeen::default();
    let seen2 = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = Arc::clone(&seen2);
            let svc = service_fn(move |req: Request<Incoming>| {
                let seen = Arc::clone(&seen);
                async move {
                    let (parts, body) = req.into_parts();
                    body.collect().await?;
                    let headers = TRACE_HEADERS
                        .iter()
                        .filter_map(|h| {
                            let v = parts.headers.get(*h)?.to_str().ok()?;
                            Some((h.to_string(), v.to_string()))
                        })
                        .collect();
                    let path = parts.uri.path().to_string();
                    let status = match path.as_str() {
                        p if p.starts_with("/fail") => 503,
                        "/notfound" => 404,
                        _ => 200,
                    };
                    seen.lock().unwrap().insert(path, headers);
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                    Ok::<_, hyper::Error>(resp)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn listener(name: &str, port: u16, direction: &str, tracing: &str, decorator: &str) -> String {
    format!(
        r#"
  - name: {name}
    traffic_direction: {direction}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          tracing:
{tracing}
            provider:
              name: envoy.tracers.opentelemetry
              typed_config:
                "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                grpc_service: {{ envoy_grpc: {{ cluster_name: otel-collector }} }}
                service_name: productpage.default
          route_config:
            name: {name}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: up }}{decorator}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
    )
}

/// The bootstrap both proxies run; ports zero for the in-process proxy.
fn bootstrap(up: SocketAddr, collector: SocketAddr, admin: u16, ports: [u16; 3]) -> String {
    let full = "            random_sampling: { value: 100 }";
    let tags = r#"            custom_tags:
            - tag: mesh
              literal: { value: mizzen-test }
            - tag: user
              request_header: { name: x-user, default_value: nobody }
            - tag: home
              environment: { name: MIZZEN_TRACING_TEST_UNSET, default_value: none }"#;
    format!(
        r#"
node: {{ id: sidecar~10.0.0.1~productpage-v1.default~default.svc.cluster.local, cluster: productpage.default }}
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:{}{}{}
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up_port} }} }}
  - name: otel-collector
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{ http2_protocol_options: {{}} }}
    load_assignment:
      cluster_name: otel-collector
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: 127.0.0.1, port_value: {collector_port} }} }}
"#,
        listener("egress", ports[0], "OUTBOUND", full, ""),
        listener(
            "ingress",
            ports[1],
            "INBOUND",
            &format!("{full}\n{tags}"),
            ""
        ),
        listener(
            "never",
            ports[2],
            "OUTBOUND",
            "            random_sampling: { value: 0 }",
            ""
        ),
        up_port = up.port(),
        collector_port = collector.port(),
    )
}

async fn start_mizzen(up: SocketAddr, collector: SocketAddr) -> Mizzen {
    side_by_side::start_mizzen(&bootstrap(up, collector, 0, [0, 0, 0]), LISTENERS, WAIT).await
}

/// The real Envoy on the same bootstrap.
async fn start_envoy(up: SocketAddr, collector: SocketAddr) -> Envoy {
    let ports = [free_port(), free_port(), free_port()];
    side_by_side::start(&bootstrap(up, collector, free_port(), ports), ports).await
}

/// Sends a GET with `headers` and returns the response status.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut head = format!("GET {path} HTTP/1.1\r\nhost: reviews:9080\r\nconnection: close\r\n");
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("the response ends")
        .expect("read");
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

/// One exported span, flattened for comparison.
#[derive(Debug, Clone)]
struct SeenSpan {
    service_name: String,
    name: String,
    kind: i32,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    status: i32,
    attributes: BTreeMap<String, String>,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn value(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn spans(received: &Received) -> Vec<SeenSpan> {
    let mut out = Vec::new();
    for req in received.lock().unwrap().iter() {
        for rs in &req.resource_spans {
            let service_name = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| value(&kv.value))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push(SeenSpan {
                        service_name: service_name.clone(),
                        name: s.name.clone(),
                        kind: s.kind,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        status: s.status.as_ref().map_or(0, |s| s.code),
                        attributes: s
                            .attributes
                            .iter()
                            .map(|kv| (kv.key.clone(), value(&kv.value)))
                            .collect(),
                    });
                }
            }
        }
    }
    out
}

/// Waits until the collector holds `n` spans (flushes happen every 5 s).
async fn wait_spans(received: &Received, n: usize) -> Vec<SeenSpan> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let s = spans(received);
        if s.len() >= n || tokio::time::Instant::now() > deadline {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const T1: &str = "0af7651916cd43dd8448eb211c80319c";
const S1: &str = "b7ad6b7169203331";

/// What one implementation did: the spans by request path, and the trace
/// headers the upstream received by path.
struct Outcome {
    spans: BTreeMap<String, SeenSpan>,
    upstream: HashMap<String, BTreeMap<String, String>>,
}

/// A request: listener, path, headers and the expected status.
type Case<'a> = (SocketAddr, &'a str, Vec<(&'a str, &'a str)>, u16);

/// Sends the scenario's requests through `l` and collects what the
/// collector and the upstream saw (after the exporter's flush).
async fn scenario(l: [SocketAddr; 3], received: &Received, seen: &UpstreamSeen) -> Outcome {
    let [egress, ingress, never] = l;
    let sampled = format!("00-{T1}-{S1}-01");
    let unsampled = format!("00-{T1}-{S1}-00");
    let cases: Vec<Case<'_>> = vec![
        (egress, "/w3c", vec![("traceparent", &sampled)], 200),
        (
            egress,
            "/b3",
            vec![
                ("x-b3-traceid", T1),
                ("x-b3-spanid", S1),
                ("x-b3-sampled", "1"),
            ],
            200,
        ),
        (
            ingress,
            "/fail",
            vec![("traceparent", &sampled), ("x-user", "jason")],
            503,
        ),
        (egress, "/notfound", vec![], 404),
        (
            egress,
            "/w3c-unsampled",
            vec![("traceparent", &unsampled)],
            200,
        ),
        (
            egress,
            "/bad-request-id",
            vec![("x-request-id", "abc")],
            200,
        ),
        (
            egress,
            "/bad-traceparent",
            vec![("traceparent", "00-zz-1-01")],
            200,
        ),
        (never, "/never-none", vec![], 200),
        (never, "/never-w3c", vec![("traceparent", &sampled)], 200),
    ];
    for (addr, path, headers, status) in &cases {
        assert_eq!(get(*addr, path, headers).await, *status, "{path}");
    }
    // Four sampled requests; the flush timer (5 s) sends them, then one more
    // timer period shows nothing else comes.
    let first = wait_spans(received, 4).await;
    tokio::time::sleep(Duration::from_millis(5500)).await;
    let all = spans(received);
    assert_eq!(first.len(), all.len(), "late spans: {all:#?}");
    let mut spans = BTreeMap::new();
    for s in all {
        let url = s.attributes.get("http.url").cloned().unwrap_or_default();
        let path = url
            .rsplit_once("9080")
            .map_or(url.clone(), |(_, p)| p.to_string());
        assert!(spans.insert(path, s).is_none(), "two spans for one request");
    }
    let upstream = seen.lock().unwrap().clone();
    Outcome { spans, upstream }
}

/// The span id of the `traceparent` the upstream received for `path`.
fn upstream_span(o: &Outcome, path: &str) -> (String, String, String) {
    let tp = &o.upstream[path]["traceparent"];
    let parts: Vec<&str> = tp.split('-').collect();
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

/// The assertions both implementations must pass.
fn check(who: &str, o: &Outcome) {
    let paths: Vec<&String> = o.spans.keys().collect();
    assert_eq!(
        paths,
        ["/b3", "/fail", "/notfound", "/w3c"],
        "{who}: one span per sampled request"
    );
    for (path, s) in &o.spans {
        assert_eq!(s.service_name, "productpage.default", "{who} {path}");
        let (trace, span, flags) = upstream_span(o, path);
        assert_eq!(
            (&s.trace_id, &s.span_id),
            (&trace, &span),
            "{who} {path}: propagated"
        );
        assert_eq!(flags, "01", "{who} {path}");
    }
    let w3c = &o.spans["/w3c"];
    assert_eq!(
        (w3c.trace_id.as_str(), w3c.parent_span_id.as_str()),
        (T1, S1),
        "{who}"
    );
    assert_eq!(w3c.kind, 3, "{who}: egress spans are CLIENT");
    assert_eq!(w3c.name, "egress reviews:9080", "{who}");
    assert_eq!(w3c.attributes["http.status_code"], "200", "{who}");
    assert_eq!(w3c.status, 0, "{who}");
    // B3 is not read by the OpenTelemetry tracer: a new trace, B3 untouched.
    let b3 = &o.spans["/b3"];
    assert_ne!(b3.trace_id, T1, "{who}");
    assert_eq!(b3.parent_span_id, "", "{who}");
    assert_eq!(o.upstream["/b3"]["x-b3-spanid"], S1, "{who}");
    let notfound = &o.spans["/notfound"];
    assert_eq!(
        notfound.status, 2,
        "{who}: 4xx is an error on a CLIENT span"
    );
    assert!(!notfound.attributes.contains_key("error"), "{who}");
    let fail = &o.spans["/fail"];
    assert_eq!(
        (fail.trace_id.as_str(), fail.parent_span_id.as_str()),
        (T1, S1),
        "{who}"
    );
    assert_eq!(fail.kind, 2, "{who}: ingress spans are SERVER");
    assert_eq!(fail.name, "ingress", "{who}");
    assert_eq!(fail.status, 2, "{who}: 5xx is an error");
    assert_eq!(fail.attributes["http.status_code"], "503", "{who}");
    assert_eq!(fail.attributes["error"], "true", "{who}");
    assert_eq!(fail.attributes["mesh"], "mizzen-test", "{who}");
    assert_eq!(fail.attributes["user"], "jason", "{who}");
    assert_eq!(fail.attributes["home"], "none", "{who}");
    // Not sampled: propagated with the flag off, nothing reported.
    for path in ["/w3c-unsampled", "/never-w3c"] {
        let (trace, _, flags) = upstream_span(o, path);
        assert_eq!((trace.as_str(), flags.as_str()), (T1, "00"), "{who} {path}");
    }
    for path in ["/never-none", "/bad-request-id"] {
        assert_eq!(upstream_span(o, path).2, "00", "{who} {path}");
    }
    assert!(
        !o.upstream["/bad-traceparent"].contains_key("traceparent")
            || o.upstream["/bad-traceparent"]["traceparent"] == "00-zz-1-01",
        "{who}: a malformed traceparent is passed as it came"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn otlp_spans_match_envoy() {
    let (ours_col, ours_received) = collector().await;
    let (envoy_col, envoy_received) = collector().await;
    let (ours_up, ours_seen) = upstream().await;
    let (envoy_up, envoy_seen) = upstream().await;
    let mizzen = start_mizzen(ours_up, ours_col).await;
    let envoy = start_envoy(envoy_up, envoy_col).await;
    let (ours, theirs) = tokio::join!(
        scenario(mizzen.listeners, &ours_received, &ours_seen),
        scenario(envoy.listeners, &envoy_received, &envoy_seen),
    );
    check("envoy", &theirs);
    check("mizzen", &ours);
    // The same attribute names as Envoy, span by span, and the same status.
    for (path, t) in &theirs.spans {
        let o = &ours.spans[path];
        let keys = |s: &SeenSpan| s.attributes.keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(o), keys(t), "attribute names of {path}: ours, Envoy's");
        for k in [
            "http.method",
            "http.url",
            "http.status_code",
            "http.protocol",
            "component",
            "upstream_cluster",
            "response_flags",
            "response_size",
            "request_size",
            "node_id",
            "peer.address",
            "user_agent",
            "downstream_cluster",
            "zone",
        ] {
            assert_eq!(o.attributes.get(k), t.attributes.get(k), "{path}: {k}");
        }
        assert_eq!(
            (o.kind, o.status, &o.name),
            (t.kind, t.status, &t.name),
            "{path}"
        );
    }
    drop(envoy);
}

#[tokio::test]
async fn otlp_config_refusals_name_the_field() {
    let (col, _) = collector().await;
    let (up, _) = upstream().await;
    let good = bootstrap(up, col, 0, [0, 0, 0]);
    let cases = [
        (
            "service_name: productpage.default",
            "service_name: productpage.default\n                sampler: { name: s, typed_config: { \"@type\": type.googleapis.com/google.protobuf.Struct } }",
            "tracing.provider.typed_config.sampler",
        ),
        (
            "random_sampling: { value: 0 }",
            "random_sampling: { value: 0 }\n            spawn_upstream_span: true",
            "tracing.spawn_upstream_span",
        ),
        (
            "grpc_service: { envoy_grpc: { cluster_name: otel-collector } }",
            "http_service: { http_uri: { uri: \"http://c/v1/traces\", cluster: otel-collector, timeout: 1s } }",
            "tracing.provider.typed_config.http_service",
        ),
        (
            "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig\n                grpc_service: { envoy_grpc: { cluster_name: otel-collector } }\n                service_name: productpage.default",
            "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig\n                collector_cluster: otel-collector\n                collector_endpoint: /api/v2/spans\n                collector_endpoint_version: HTTP_JSON",
            "only envoy.tracers.opentelemetry",
        ),
    ];
    for (from, to, want) in cases {
        assert!(good.contains(from), "{from}");
        let yaml = good.replacen(from, to, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bootstrap.yaml");
        std::fs::write(&path, yaml).unwrap();
        let err = match proxy::bootstrap::Bootstrap::load(&path, None) {
            Err(e) => e.to_string(),
            Ok(b) => b
                .static_listeners
                .into_iter()
                .filter_map(|l| proxy::listener::compile(Arc::new(l)).err())
                .flatten()
                .collect::<Vec<_>>()
                .join("; "),
        };
        assert!(!err.is_empty(), "accepted: {to}");
        assert!(err.contains(want), "{want} not in: {err}");
    }
}

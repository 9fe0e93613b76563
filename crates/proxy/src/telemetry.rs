//! Telemetry: Istio's standard metrics, its default JSON access log, trace
//! header propagation and span reporting over OTLP, as a library the data
//! path calls. It owns the counters and their Prometheus text, the spans and
//! their exporters; it does not own the admin endpoint (which appends
//! [`Telemetry::render_prometheus`] to `/stats/prometheus`), the access log
//! sink, or the cluster spans are sent to (the caller resolves it).
//!
//! Top-down, a request goes through:
//! - [`Telemetry::from_node`], once at start: this proxy's workload labels from
//!   istio-agent's node metadata ([`labels::LocalWorkload`]);
//! - [`trace::propagate_trace`] on the request headers: start or continue a W3C
//!   `traceparent` + B3 trace context — or, when the connection manager has
//!   `tracing` (Envoy's OpenTelemetry tracer), [`span::TracingConfig::start`]:
//!   the sampling decision, a W3C-only child context and the request's
//!   [`span::ActiveSpan`], finished when the response body ends and sent to
//!   the connection manager's [`otlp::Exporter`] (batched OTLP/gRPC export,
//!   counted in [`Telemetry::otlp_stats`]);
//! - [`Telemetry::request_series`] once per (route, cluster, peer), then
//!   [`RequestSeries::record`] per request — or [`Telemetry::record_request`]
//!   with the full [`RequestLabels`] when no handle is kept;
//! - [`access_log::access_log_json`] for the access log line;
//! - [`Telemetry::render_prometheus`] when `/stats/prometheus` is scraped.
//!
//! TCP proxying uses [`Telemetry::tcp_series`] / [`Telemetry::record_tcp_open`] /
//! [`Telemetry::record_tcp_close`].
//!
//! ## Hot path and why the text is rendered by hand
//! Series are interned in a sharded map keyed by a keyed hash of the *rendered*
//! label values ([`metrics`]): recording a label set seen before takes one shard
//! read lock, a hash of the labels and a comparison, then six relaxed atomic adds,
//! and allocates nothing. With a [`RequestSeries`] handle kept by the caller the
//! hash and lock go away too: a lock-free (`arc-swap`) scan of the few
//! (status, gRPC status, flags) combinations seen, and the atomics. A new label
//! set allocates once (its owned key and pre-rendered label text).
//! `prometheus-client` was not used: its `Family` looks series up by an owned
//! label set, which means building (allocating) that set on every request, and
//! it encodes labels at every scrape; here the label text is rendered once per
//! series and a scrape is string concatenation. The trade-off: no per-thread
//! counters, so one very hot series shares its cache lines between cores, and
//! cardinality is unbounded, as in Istio (a Host header that names a new
//! service makes a new series).

pub mod access_log;
pub mod labels;
pub mod metrics;
pub mod otlp;
pub mod span;
pub mod trace;

#[cfg(test)]
mod tests;

use std::hash::RandomState;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;

pub use access_log::{AccessLogEntry, access_log_json, write_access_log_json};
pub use labels::{
    LocalWorkload, Peer, Protocol, ProxyType, Reporter, RequestKey, RequestLabels, Security,
    TcpLabels,
};
pub use metrics::{BUCKETS, RequestSeries, TcpSeries};
pub use trace::{TraceContext, propagate_trace};

use metrics::{KeyView, SeriesMap, hash_resolved};

/// This proxy's Istio telemetry: its workload labels and every metric series.
/// Cheap to clone (one `Arc`); share one per proxy.
#[derive(Clone)]
pub struct Telemetry {
    inner: Arc<Inner>,
}

struct Inner {
    local: LocalWorkload,
    node_id: String,
    zone: String,
    otlp: Arc<otlp::OtlpStats>,
    hasher: RandomState,
    requests: SeriesMap<RequestSeries>,
    tcp: SeriesMap<TcpSeries>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("local", &self.inner.local)
            .field("request_series", &self.request_series_len())
            .field("tcp_series", &self.tcp_series_len())
            .finish()
    }
}

impl Telemetry {
    /// Derives this proxy's workload labels from the bootstrap node (istio-agent
    /// metadata: `NAMESPACE`, `WORKLOAD_NAME`, `LABELS`, `CLUSTER_ID`, `MESH_ID`,
    /// `SERVICE_ACCOUNT`; node id `sidecar~…` or `router~…`).
    pub fn from_node(node: &Node) -> Telemetry {
        let zone = node.locality.as_ref().map(|l| l.zone.clone());
        Telemetry::build(
            LocalWorkload::from_node(node),
            node.id.clone(),
            zone.unwrap_or_default(),
        )
    }

    /// Telemetry for an explicitly described local workload.
    pub fn new(local: LocalWorkload) -> Telemetry {
        Telemetry::build(local, String::new(), String::new())
    }

    fn build(local: LocalWorkload, node_id: String, zone: String) -> Telemetry {
        Telemetry {
            inner: Arc::new(Inner {
                local,
                node_id,
                zone,
                otlp: Arc::default(),
                hasher: RandomState::new(),
                requests: SeriesMap::new(),
                tcp: SeriesMap::new(),
            }),
        }
    }

    /// This proxy's own workload labels.
    pub fn local(&self) -> &LocalWorkload {
        &self.inner.local
    }

    /// The bootstrap node's id (the `node_id` span attribute).
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// The node's locality zone (the `zone` span attribute).
    pub fn zone(&self) -> &str {
        &self.inner.zone
    }

    /// The span exporters' counters (`tracing.opentelemetry.*`).
    pub fn otlp_stats(&self) -> &Arc<otlp::OtlpStats> {
        &self.inner.otlp
    }

    /// The reporter for traffic in one direction: a sidecar reports inbound
    /// traffic as `destination` and outbound as `source`; a gateway (`router`)
    /// always reports `source`, as Istio does.
    pub fn reporter(&self, inbound: bool) -> Reporter {
        match (self.inner.local.proxy_type, inbound) {
            (ProxyType::Sidecar, true) => Reporter::Destination,
            _ => Reporter::Source,
        }
    }

    /// The series for one stable label set, created on first use. Keep the
    /// handle (per route, cluster and peer) and call [`RequestSeries::record`].
    pub fn request_series(&self, key: &RequestKey) -> Arc<RequestSeries> {
        let view = KeyView {
            reporter: key.reporter,
            peer: &key.peer,
            service: &key.destination_service,
            service_name: &key.destination_service_name,
            service_namespace: &key.destination_service_namespace,
            protocol: Some(key.request_protocol),
            flags: "",
            security: key.connection_security_policy,
        };
        let r = view.resolve(&self.inner.local);
        let grpc = key.request_protocol == Protocol::Grpc;
        self.inner.requests.get_arc(
            hash_resolved(&self.inner.hasher, &r),
            |s| s.matches(&r),
            || RequestSeries::new(&r, grpc),
        )
    }

    /// Records one completed HTTP/gRPC request into `istio_requests_total`,
    /// `istio_request_duration_milliseconds`, `istio_request_bytes` and
    /// `istio_response_bytes`. Allocates only the first time a label set is seen.
    pub fn record_request(
        &self,
        labels: &RequestLabels,
        duration: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let view = KeyView {
            reporter: labels.reporter,
            peer: &labels.peer,
            service: &labels.destination_service,
            service_name: &labels.destination_service_name,
            service_namespace: &labels.destination_service_namespace,
            protocol: Some(labels.request_protocol),
            flags: "",
            security: labels.connection_security_policy,
        };
        let r = view.resolve(&self.inner.local);
        let grpc = labels.request_protocol == Protocol::Grpc;
        self.inner.requests.with(
            hash_resolved(&self.inner.hasher, &r),
            |s| s.matches(&r),
            || RequestSeries::new(&r, grpc),
            |s| {
                s.record(
                    labels.response_code,
                    labels.grpc_response_status,
                    &labels.response_flags,
                    duration,
                    request_bytes,
                    response_bytes,
                )
            },
        );
    }

    fn tcp_view<'a>(labels: &'a TcpLabels) -> KeyView<'a> {
        KeyView {
            reporter: labels.reporter,
            peer: &labels.peer,
            service: &labels.destination_service,
            service_name: &labels.destination_service_name,
            service_namespace: &labels.destination_service_namespace,
            protocol: None,
            flags: &labels.response_flags,
            security: labels.connection_security_policy,
        }
    }

    fn with_tcp(&self, labels: &TcpLabels, f: impl FnOnce(&TcpSeries)) {
        let r = Self::tcp_view(labels).resolve(&self.inner.local);
        self.inner.tcp.with(
            hash_resolved(&self.inner.hasher, &r),
            |s| s.matches(&r),
            || TcpSeries::new(&r),
            f,
        );
    }

    /// The TCP series for one label set, created on first use; keep it for the
    /// connection's life to report bytes periodically with [`TcpSeries::add_bytes`].
    pub fn tcp_series(&self, labels: &TcpLabels) -> Arc<TcpSeries> {
        let r = Self::tcp_view(labels).resolve(&self.inner.local);
        self.inner.tcp.get_arc(
            hash_resolved(&self.inner.hasher, &r),
            |s| s.matches(&r),
            || TcpSeries::new(&r),
        )
    }

    /// Counts an opened TCP connection (`istio_tcp_connections_opened_total`).
    pub fn record_tcp_open(&self, labels: &TcpLabels) {
        self.with_tcp(labels, TcpSeries::open);
    }

    /// Counts a closed TCP connection and its bytes: `sent` downstream
    /// (`istio_tcp_sent_bytes_total`) and `received` from downstream
    /// (`istio_tcp_received_bytes_total`).
    pub fn record_tcp_close(&self, labels: &TcpLabels, sent: u64, received: u64) {
        self.with_tcp(labels, |s| s.close(sent, received));
    }

    /// Prometheus text exposition of every series, as Envoy with Istio's stats
    /// filter prints it on `:15090/stats/prometheus` (the admin body appends it).
    pub fn render_prometheus(&self, out: &mut String) {
        metrics::render(&self.inner.requests, &self.inner.tcp, out);
    }

    /// Number of distinct HTTP label sets (full sets, status and flags included).
    pub fn request_series_len(&self) -> usize {
        let mut n = 0;
        self.inner.requests.for_each(|s| n += s.len());
        n
    }

    /// Number of distinct TCP label sets.
    pub fn tcp_series_len(&self) -> usize {
        let mut n = 0;
        self.inner.tcp.for_each(|_| n += 1);
        n
    }
}

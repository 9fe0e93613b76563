//! OTLP/gRPC span export: the exporter behind one connection manager's
//! OpenTelemetry tracer ([`super::span`]). It owns the span buffer, the
//! batching and the gRPC calls to the collector; it does not own span
//! building or sampling, nor the cluster it sends to (the caller gives a
//! [`Resolve`] that picks an endpoint of the named cluster at each flush).
//!
//! Spans are handed over without waiting ([`Exporter::send`]): a bounded
//! channel of `max_cache_size` (Envoy's default 1024) spans; when it is
//! full the span is dropped and counted. A task batches them and calls
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` when
//! [`MIN_FLUSH_SPANS`] have gathered or every [`FLUSH_INTERVAL`] (Envoy's
//! runtime defaults `tracing.opentelemetry.min_flush_spans` = 5 and
//! `tracing.opentelemetry.flush_interval_ms` = 5000), over plaintext HTTP/2
//! to the cluster's endpoint. A failed export keeps the spans for the next
//! flush, up to `max_cache_size`. The task ends, after a last flush, when the
//! connection manager that owns the exporter is dropped.
//!
//! Counters ([`OtlpStats`], shared by every exporter of the proxy) use
//! Envoy's names where Envoy has them: `tracing.opentelemetry.spans_sent`,
//! `tracing.opentelemetry.timer_flushed`; `spans_dropped` and
//! `export_failed` are this proxy's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

/// Spans that make a flush before the timer (Envoy's `min_flush_spans`).
pub const MIN_FLUSH_SPANS: usize = 5;
/// How often buffered spans are flushed (Envoy's `flush_interval_ms`).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// The export call's timeout when the `grpc_service` has none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Picks the collector's address from a cluster name at export time, or
/// says why it cannot (no such cluster, no healthy host, TLS).
pub type Resolve = Arc<dyn Fn(&str) -> Result<SocketAddr, String> + Send + Sync>;

/// The tracer's span counters, under `tracing.opentelemetry.`.
#[derive(Debug, Default)]
pub struct OtlpStats {
    /// `spans_sent`: spans the collector accepted.
    pub spans_sent: AtomicU64,
    /// `timer_flushed`: flush timer runs.
    pub timer_flushed: AtomicU64,
    /// `spans_dropped`: spans lost to a full buffer.
    pub spans_dropped: AtomicU64,
    /// `export_failed`: export calls that failed.
    pub export_failed: AtomicU64,
}

impl OtlpStats {
    /// `(name, value)` pairs, all counters.
    pub fn render(&self, out: &mut Vec<(String, u64)>) {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (name, c) in [
            ("spans_sent", &self.spans_sent),
            ("timer_flushed", &self.timer_flushed),
            ("spans_dropped", &self.spans_dropped),
            ("export_failed", &self.export_failed),
        ] {
            out.push((format!("tracing.opentelemetry.{name}"), get(c)));
        }
    }
}

/// Where and how spans are exported (from `OpenTelemetryConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterConfig {
    /// `grpc_service.envoy_grpc.cluster_name`.
    pub cluster: String,
    /// `service_name` (default `unknown_service:envoy`).
    pub service_name: String,
    /// `max_cache_size` (default 1024).
    pub max_cache_size: usize,
    /// `grpc_service.timeout` (absent: 5 s).
    pub timeout: Option<Duration>,
    /// `set_telemetry_sdk_resource_attributes` (default true).
    pub sdk_attributes: bool,
    /// `set_service_name_resource_attribute` (default true).
    pub service_name_attribute: bool,
    /// `set_instrumentation_scope` (default true).
    pub scope: bool,
}

/// The sending side of one exporter; its task ends when every clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: mpsc::Sender<Span>,
    stats: Arc<OtlpStats>,
}

impl Exporter {
    /// Starts the export task on the current Tokio runtime.
    pub fn start(config: ExporterConfig, resolve: Resolve, stats: Arc<OtlpStats>) -> Exporter {
        let (tx, rx) = mpsc::channel(config.max_cache_size.max(1));
        tokio::spawn(run(rx, config, resolve, Arc::clone(&stats)));
        Exporter { tx, stats }
    }

    /// Queues a finished span; drops (and counts) it when the buffer is full.
    pub fn send(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.stats.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A string attribute.
pub fn kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// This proxy's version, as the SDK and scope version.
fn version() -> String {
    format!("mizzen/{}", env!("CARGO_PKG_VERSION"))
}

/// The export request for `spans`: one resource (`service.name` and the
/// telemetry SDK attributes, as configured) and one scope (`envoy`).
pub fn request(config: &ExporterConfig, spans: Vec<Span>) -> ExportTraceServiceRequest {
    let mut attributes = Vec::new();
    if config.sdk_attributes {
        attributes.push(kv("telemetry.sdk.version", version()));
        attributes.push(kv("telemetry.sdk.name", "envoy"));
        attributes.push(kv("telemetry.sdk.language", "rust"));
    }
    if config.service_name_attribute {
        attributes.push(kv("service.name", config.service_name.clone()));
    }
    let scope = config.scope.then(|| InstrumentationScope {
        name: "envoy".into(),
        version: version(),
        ..InstrumentationScope::default()
    });
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope,
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// The export task: batch, flush on count or timer, keep failed batches
/// up to the cache size, flush once more at the end.
async fn run(
    mut rx: mpsc::Receiver<Span>,
    config: ExporterConfig,
    resolve: Resolve,
    stats: Arc<OtlpStats>,
) {
    let mut client = Client::default();
    let mut buffer: Vec<Span> = Vec::new();
    let mut timer =
        tokio::time::interval_at(tokio::time::Instant::now() + FLUSH_INTERVAL, FLUSH_INTERVAL);
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            span = rx.recv() => match span {
                Some(span) => {
                    buffer.push(span);
                    if buffer.len() >= MIN_FLUSH_SPANS {
                        client.flush(&mut buffer, &config, &resolve, &stats).await;
                    }
                }
                None => {
                    client.flush(&mut buffer, &config, &resolve, &stats).await;
                    return;
                }
            },
            _ = timer.tick() => {
                stats.timer_flushed.fetch_add(1, Ordering::Relaxed);
                client.flush(&mut buffer, &config, &resolve, &stats).await;
            }
        }
    }
}

/// The gRPC client of the last collector address.
#[derive(Default)]
struct Client {
    current: Option<(SocketAddr, TraceServiceClient<Channel>)>,
}

impl Client {
    async fn flush(
        &mut self,
        buffer: &mut Vec<Span>,
        config: &ExporterConfig,
        resolve: &Resolve,
        stats: &OtlpStats,
    ) {
        if buffer.is_empty() {
            return;
        }
        let n = buffer.len() as u64;
        let result = match self.client(config, resolve) {
            Ok(client) => {
                let mut req = tonic::Request::new(request(config, buffer.clone()));
                req.set_timeout(config.timeout.unwrap_or(DEFAULT_TIMEOUT));
                client.export(req).await.map_err(|s| s.to_string())
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => {
                stats.spans_sent.fetch_add(n, Ordering::Relaxed);
                buffer.clear();
            }
            Err(e) => {
                stats.export_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    cluster = %config.cluster,
                    "OTLP span export failed ({n} spans kept for the next flush): {e}"
                );
                // Keep the newest spans, up to the cache size.
                let excess = buffer.len().saturating_sub(config.max_cache_size);
                if excess > 0 {
                    buffer.drain(..excess);
                    stats
                        .spans_dropped
                        .fetch_add(excess as u64, Ordering::Relaxed);
                }
                self.current = None;
            }
        }
    }

    fn client(
        &mut self,
        config: &ExporterConfig,
        resolve: &Resolve,
    ) -> Result<&mut TraceServiceClient<Channel>, String> {
        let addr = resolve(&config.cluster)?;
        if self.current.as_ref().is_none_or(|(a, _)| *a != addr) {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(1));
            self.current = Some((addr, TraceServiceClient::new(endpoint.connect_lazy())));
        }
        match self.current.as_mut() {
            Some((_, c)) => Ok(c),
            None => Err("no collector client".into()),
        }
    }
}

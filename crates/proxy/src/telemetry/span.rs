//! Span reporting for a connection manager with `tracing` (Envoy's
//! `envoy.tracers.opentelemetry`): the compiled `tracing` block
//! ([`TracingConfig`], from [`compile`]), the sampling decision, and the
//! span of one request ([`ActiveSpan`]) from its headers to its end, when it
//! goes to the exporter ([`super::otlp`]). It does not own the exporter's
//! batching or the request path (the connection manager calls
//! [`TracingConfig::start`] on the request headers before routing and
//! [`ActiveSpan::finish`] when the response body ends).
//!
//! As Envoy 1.40 does:
//! - the decision (`tracing.random_sampling`, `client_sampling` with
//!   `x-client-trace-id`, `x-envoy-force-trace` from an internal address,
//!   then `overall_sampling`) is taken from, and stamped into, the UUID
//!   `x-request-id` (its 15th character: `9` sampled, `a` forced, `b`
//!   client, `4` not traced); a request id already stamped keeps its
//!   decision; without a UUID request id the request is not traced;
//! - the parent comes from `traceparent` only (B3 is neither read nor
//!   written); a malformed `traceparent` means no span and no propagation;
//!   the span is sampled when the decision says so and the parent (if any)
//!   is sampled; `traceparent`/`tracestate` carry the proxy's span upstream
//!   (unless `no_context_propagation`);
//! - name `ingress`, or `egress HOST`; kind SERVER for an inbound (or
//!   unspecified) listener, CLIENT for an outbound one;
//! - attributes `component`, `node_id`, `zone`, `guid:x-request-id`,
//!   `guid:x-client-trace-id`, `http.url` (path cut at
//!   `max_path_tag_length`, default 256), `http.method`, `http.protocol`,
//!   `downstream_cluster`, `user_agent`, `peer.address`, `request_size`,
//!   `response_size`, `http.status_code`, `response_flags`,
//!   `upstream_cluster`, `upstream_cluster.name`, `error` on 5xx, and the
//!   custom tags; status ERROR on 5xx, and on 4xx for a CLIENT span.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
use envoy_types::pb::envoy::config::trace::v3::OpenTelemetryConfig;
use envoy_types::pb::envoy::config::trace::v3::tracing::http::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::tracing::v3::custom_tag;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};
use prost::Message;

use super::otlp::{Exporter, ExporterConfig, OtlpStats, Resolve, kv};
use super::trace::{TraceContext, W3cParent, child_context, parse_w3c, write_w3c};

const OTEL_TYPE: &str = "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig";

/// A compiled HCM `tracing` block.
#[derive(Debug)]
pub struct TracingConfig {
    /// `client_sampling`, in hundredths of a percent (default 10000).
    pub client_sampling: u32,
    /// `random_sampling`, in hundredths of a percent (default 10000).
    pub random_sampling: u32,
    /// `overall_sampling`, in hundredths of a percent (default 10000).
    pub overall_sampling: u32,
    /// `max_path_tag_length` (default 256).
    pub max_path_tag_length: usize,
    /// `custom_tags`.
    pub custom_tags: Vec<CustomTag>,
    /// The listener is outbound: the span is `egress HOST`, kind CLIENT.
    pub egress: bool,
    /// Whether `traceparent` is written upstream (not `no_context_propagation`).
    pub propagate: bool,
    /// Where spans go; none without `grpc_service` (spans are not reported).
    pub exporter: Option<ExporterConfig>,
    started: OnceLock<Exporter>,
}

/// One custom tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CustomTag {
    /// A fixed value (`literal`, and `environment` read at compile time).
    Literal(String, String),
    /// A request header's value, or the default (none: no attribute).
    Header(String, HeaderName, Option<String>),
}

fn percent(p: Option<&envoy_types::pb::envoy::r#type::v3::Percent>) -> u32 {
    p.map_or(10_000, |p| {
        (p.value.clamp(0.0, 100.0) * 100.0).round() as u32
    })
}

/// Compiles the `tracing` block of a connection manager on a listener of
/// `traffic_direction` (0 unspecified, 1 inbound, 2 outbound). Errors name
/// the field under `tracing`.
pub fn compile(t: &Tracing, traffic_direction: i32) -> Result<TracingConfig, Vec<String>> {
    let mut errors = Vec::new();
    if t.spawn_upstream_span.is_some_and(|b| b.value) {
        errors.push("spawn_upstream_span: upstream spans are not supported".to_string());
    }
    if t.verbose {
        errors.push("verbose: span logs for stream events are not supported".to_string());
    }
    if !t.operation.is_empty() {
        errors.push("operation: formatted operation names are not supported".to_string());
    }
    if !t.upstream_operation.is_empty() {
        errors.push("upstream_operation: upstream spans are not supported".to_string());
    }
    let mut custom_tags = Vec::new();
    for (i, c) in t.custom_tags.iter().enumerate() {
        match &c.r#type {
            Some(custom_tag::Type::Literal(l)) => {
                custom_tags.push(CustomTag::Literal(c.tag.clone(), l.value.clone()))
            }
            Some(custom_tag::Type::Environment(e)) => {
                let v = std::env::var(&e.name)
                    .ok()
                    .unwrap_or_else(|| e.default_value.clone());
                if !v.is_empty() {
                    custom_tags.push(CustomTag::Literal(c.tag.clone(), v));
                }
            }
            Some(custom_tag::Type::RequestHeader(h)) => match HeaderName::try_from(&h.name) {
                Ok(name) => custom_tags.push(CustomTag::Header(
                    c.tag.clone(),
                    name,
                    Some(h.default_value.clone()).filter(|d| !d.is_empty()),
                )),
                Err(_) => errors.push(format!(
                    "custom_tags[{i}].request_header.name: `{}` is not a header name",
                    h.name
                )),
            },
            Some(custom_tag::Type::Metadata(_)) => errors.push(format!(
                "custom_tags[{i}].metadata: metadata tags are not supported"
            )),
            Some(custom_tag::Type::Value(_)) => errors.push(format!(
                "custom_tags[{i}].value: formatted tag values are not supported"
            )),
            None => errors.push(format!("custom_tags[{i}]: no tag type")),
        }
    }
    let exporter = match provider(t) {
        Ok(e) => e,
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(TracingConfig {
        client_sampling: percent(t.client_sampling.as_ref()),
        random_sampling: percent(t.random_sampling.as_ref()),
        overall_sampling: percent(t.overall_sampling.as_ref()),
        max_path_tag_length: t.max_path_tag_length.map_or(256, |v| v.value as usize),
        custom_tags,
        egress: traffic_direction == 2,
        propagate: !t.no_context_propagation,
        exporter,
        started: OnceLock::new(),
    })
}

/// The `provider`: only `envoy.tracers.opentelemetry` over `envoy_grpc`.
fn provider(t: &Tracing) -> Result<Option<ExporterConfig>, Vec<String>> {
    let Some(p) = &t.provider else {
        return Err(vec![
            "provider: missing; only envoy.tracers.opentelemetry is supported".into(),
        ]);
    };
    let any = match &p.config_type {
        Some(ConfigType::TypedConfig(any)) if any.type_url == OTEL_TYPE => any,
        Some(ConfigType::TypedConfig(any)) => {
            return Err(vec![format!(
                "provider.typed_config ({}, {}): only envoy.tracers.opentelemetry \
                 (OpenTelemetryConfig) is supported",
                p.name, any.type_url
            )]);
        }
        None => return Err(vec![format!("provider.typed_config ({}): missing", p.name)]),
    };
    let c = OpenTelemetryConfig::decode(any.value.as_slice())
        .map_err(|e| vec![format!("provider.typed_config: {e}")])?;
    let mut errors = Vec::new();
    let field = "provider.typed_config";
    if c.http_service.is_some() {
        errors.push(format!(
            "{field}.http_service: OTLP over HTTP is not supported; use grpc_service"
        ));
    }
    if c.exporter.is_some() {
        errors.push(format!(
            "{field}.exporter: custom exporters are not supported"
        ));
    }
    if !c.resource_detectors.is_empty() {
        errors.push(format!(
            "{field}.resource_detectors: resource detectors are not supported"
        ));
    }
    if c.sampler.is_some() {
        errors.push(format!(
            "{field}.sampler: samplers are not supported (the connection manager's \
             sampling applies)"
        ));
    }
    let mut cluster = None;
    let mut timeout = None;
    if let Some(g) = &c.grpc_service {
        if !g.initial_metadata.is_empty() {
            errors.push(format!(
                "{field}.grpc_service.initial_metadata: not supported"
            ));
        }
        if g.retry_policy.is_some() {
            errors.push(format!("{field}.grpc_service.retry_policy: not supported"));
        }
        timeout = g.timeout.as_ref().map(crate::cluster::duration);
        match &g.target_specifier {
            Some(TargetSpecifier::EnvoyGrpc(e)) if !e.cluster_name.is_empty() => {
                if !e.authority.is_empty() || e.retry_policy.is_some() {
                    errors.push(format!(
                        "{field}.grpc_service.envoy_grpc: authority and retry_policy are \
                         not supported"
                    ));
                }
                cluster = Some(e.cluster_name.clone());
            }
            Some(TargetSpecifier::EnvoyGrpc(_)) => errors.push(format!(
                "{field}.grpc_service.envoy_grpc.cluster_name: missing"
            )),
            Some(TargetSpecifier::GoogleGrpc(_)) => errors.push(format!(
                "{field}.grpc_service.google_grpc: not supported; use envoy_grpc with a cluster"
            )),
            None => errors.push(format!(
                "{field}.grpc_service: no target; use envoy_grpc with a cluster"
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(cluster.map(|cluster| ExporterConfig {
        cluster,
        service_name: if c.service_name.is_empty() {
            "unknown_service:envoy".into()
        } else {
            c.service_name.clone()
        },
        max_cache_size: c.max_cache_size.map_or(1024, |v| v.value as usize),
        timeout: timeout.filter(|t: &Duration| !t.is_zero()),
        sdk_attributes: c
            .set_telemetry_sdk_resource_attributes
            .is_none_or(|b| b.value),
        service_name_attribute: c
            .set_service_name_resource_attribute
            .is_none_or(|b| b.value),
        scope: c.set_instrumentation_scope.is_none_or(|b| b.value),
    }))
}

/// Why a request is (not) traced, as Envoy stamps it into `x-request-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Not traced (`4`).
    NotTraceable,
    /// Random sampling (`9`).
    Sampling,
    /// `x-envoy-force-trace` (`a`).
    ServiceForced,
    /// `x-client-trace-id` (`b`).
    ClientForced,
}

impl Reason {
    fn mark(self) -> u8 {
        match self {
            Reason::NotTraceable => b'4',
            Reason::Sampling => b'9',
            Reason::ServiceForced => b'a',
            Reason::ClientForced => b'b',
        }
    }
}

/// The UUID's bytes, when `id` is a UUID (8-4-4-4-12 hex digits).
fn uuid(id: &str) -> Option<[u8; 36]> {
    let b: [u8; 36] = id.as_bytes().try_into().ok()?;
    let ok = b.iter().enumerate().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => *c == b'-',
        _ => c.is_ascii_hexdigit(),
    });
    ok.then_some(b)
}

/// A new UUID v4 request id.
pub fn request_id(mut random: impl FnMut() -> u64) -> String {
    let (a, b) = (random(), random());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        ((b >> 48) & 0x3fff) | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

impl TracingConfig {
    /// Envoy's tracing decision for a request, stamped into its
    /// `x-request-id`. `internal`: the peer is an internal address (only then
    /// is `x-envoy-force-trace` honoured). `random` draws the client sampling.
    pub fn decide(&self, headers: &mut HeaderMap, internal: bool, random: u64) -> Reason {
        let Some(mut id) = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .and_then(uuid)
        else {
            return Reason::NotTraceable;
        };
        // The first 32 bits of the UUID: stable across the hops of a request.
        let hash = std::str::from_utf8(&id[..8])
            .ok()
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0)
            % 10_000;
        let mut reason = match id[14] {
            b'9' => Reason::Sampling,
            b'a' => Reason::ServiceForced,
            b'b' => Reason::ClientForced,
            _ => Reason::NotTraceable,
        };
        if reason == Reason::NotTraceable {
            if headers.contains_key("x-client-trace-id")
                && random % 10_000 < u64::from(self.client_sampling)
            {
                reason = Reason::ClientForced;
            } else if internal && headers.contains_key("x-envoy-force-trace") {
                reason = Reason::ServiceForced;
            } else if hash < u64::from(self.random_sampling) {
                reason = Reason::Sampling;
            }
        }
        if reason != Reason::NotTraceable && hash >= u64::from(self.overall_sampling) {
            reason = Reason::NotTraceable;
        }
        if id[14] != reason.mark() && (reason != Reason::NotTraceable || id[14] != b'4') {
            id[14] = reason.mark();
            if let Ok(v) = HeaderValue::from_bytes(&id) {
                headers.insert("x-request-id", v);
            }
        }
        reason
    }

    /// The exporter, started on first use.
    fn exporter(
        &self,
        resolve: impl FnOnce() -> Resolve,
        stats: &Arc<OtlpStats>,
    ) -> Option<&Exporter> {
        let config = self.exporter.as_ref()?;
        Some(
            self.started
                .get_or_init(|| Exporter::start(config.clone(), resolve(), Arc::clone(stats))),
        )
    }

    /// Starts the span of a request: takes the decision, continues the
    /// caller's W3C context and writes the proxy's span into the request
    /// headers. Returns the span to finish when it is sampled and reported.
    pub fn start(
        &self,
        req: &mut http::request::Parts,
        info: &StartInfo<'_>,
        resolve: impl FnOnce() -> Resolve,
    ) -> Option<Box<ActiveSpan>> {
        let headers = &mut req.headers;
        let parent = parse_w3c(headers).ok()?;
        if info.generate_request_id
            && !headers.contains_key("x-request-id")
            && let Ok(v) = HeaderValue::from_str(&request_id(|| fastrand::u64(..)))
        {
            headers.insert("x-request-id", v);
        }
        let traced = self.decide(headers, info.internal, fastrand::u64(..)) != Reason::NotTraceable;
        let sampled = traced && parent.as_ref().is_none_or(|p| p.sampled);
        let ctx = child_context(parent.as_ref(), sampled, || fastrand::u64(..));
        let tracestate = parent.as_ref().and_then(|p| p.tracestate.clone());
        if self.propagate {
            write_w3c(headers, &ctx, tracestate.as_deref());
        }
        if !sampled {
            return None;
        }
        let exporter = self.exporter(resolve, info.stats)?;
        Some(Box::new(self.span(req, info, ctx, parent, exporter)))
    }

    fn span(
        &self,
        req: &http::request::Parts,
        info: &StartInfo<'_>,
        ctx: TraceContext,
        parent: Option<W3cParent>,
        exporter: &Exporter,
    ) -> ActiveSpan {
        let h = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let host = req
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| h("host"))
            .unwrap_or_default();
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let path = match path.char_indices().nth(self.max_path_tag_length) {
            Some((i, _)) => &path[..i],
            None => path,
        };
        let scheme = h("x-forwarded-proto").unwrap_or("http");
        let mut attributes = vec![kv("node_id", info.node_id), kv("zone", info.zone)];
        if let Some(id) = h("x-request-id") {
            attributes.push(kv("guid:x-request-id", id));
        }
        if let Some(id) = h("x-client-trace-id") {
            attributes.push(kv("guid:x-client-trace-id", id));
        }
        attributes.extend([
            kv("http.url", format!("{scheme}://{host}{path}")),
            kv("http.method", req.method.as_str()),
            kv(
                "downstream_cluster",
                h("x-envoy-downstream-service-cluster").unwrap_or("-"),
            ),
            kv("user_agent", h("user-agent").unwrap_or("-")),
            kv(
                "http.protocol",
                if req.version == http::Version::HTTP_2 {
                    "HTTP/2"
                } else {
                    "HTTP/1.1"
                },
            ),
            kv("peer.address", info.peer.to_string()),
        ]);
        for tag in &self.custom_tags {
            match tag {
                CustomTag::Literal(k, v) => attributes.push(kv(k, v.clone())),
                CustomTag::Header(k, name, default) => {
                    let v = req
                        .headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .or(default.as_deref());
                    if let Some(v) = v {
                        attributes.push(kv(k, v));
                    }
                }
            }
        }
        let name = if self.egress {
            format!("egress {host}")
        } else {
            "ingress".to_string()
        };
        ActiveSpan {
            ctx,
            tracestate: parent.and_then(|p| p.tracestate),
            name,
            egress: self.egress,
            start: SystemTime::now(),
            attributes,
            cluster: None,
            tx: exporter.clone(),
        }
    }
}

/// What [`TracingConfig::start`] needs from the connection and the proxy.
#[derive(Debug)]
pub struct StartInfo<'a> {
    /// The downstream peer's address.
    pub peer: IpAddr,
    /// Whether the peer is internal (`x-envoy-force-trace` is honoured).
    pub internal: bool,
    /// The connection manager generates missing request ids.
    pub generate_request_id: bool,
    /// The bootstrap node's id (`node_id`).
    pub node_id: &'a str,
    /// The node's locality zone (`zone`).
    pub zone: &'a str,
    /// The proxy's tracer counters.
    pub stats: &'a Arc<OtlpStats>,
}

/// A sampled request's span, until its response ends.
#[derive(Debug)]
pub struct ActiveSpan {
    /// The span's context (the one propagated upstream).
    pub ctx: TraceContext,
    tracestate: Option<String>,
    name: String,
    egress: bool,
    start: SystemTime,
    attributes: Vec<KeyValue>,
    cluster: Option<String>,
    tx: Exporter,
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl ActiveSpan {
    /// Records the upstream cluster the request was routed to.
    pub fn set_cluster(&mut self, cluster: Option<String>) {
        self.cluster = cluster;
    }

    /// Ends the span with the response's outcome and sends it to the exporter.
    pub fn finish(self, status: u16, flags: &str, request_bytes: u64, response_bytes: u64) {
        let span = self.build(
            status,
            flags,
            request_bytes,
            response_bytes,
            SystemTime::now(),
        );
        self.tx.send(span);
    }

    /// The OTLP span as it ends at `end`.
    pub fn build(
        &self,
        status: u16,
        flags: &str,
        request_bytes: u64,
        response_bytes: u64,
        end: SystemTime,
    ) -> Span {
        let mut attributes = self.attributes.clone();
        attributes.push(kv("request_size", request_bytes.to_string()));
        attributes.push(kv("component", "proxy"));
        if let Some(c) = &self.cluster {
            attributes.push(kv("upstream_cluster", c.clone()));
            attributes.push(kv("upstream_cluster.name", c.clone()));
        }
        attributes.push(kv("http.status_code", status.to_string()));
        attributes.push(kv("response_size", response_bytes.to_string()));
        attributes.push(kv("response_flags", flags));
        let error = status >= 500 || status == 0;
        if error {
            attributes.push(kv("error", "true"));
        }
        let kind = if self.egress {
            span::SpanKind::Client
        } else {
            span::SpanKind::Server
        };
        // OpenTelemetry's HTTP conventions, as Envoy applies them: 5xx is an
        // error; 4xx too on a CLIENT span.
        let failed = error || (self.egress && status >= 400);

        Span {
            trace_id: self.ctx.trace_id.to_be_bytes().to_vec(),
            span_id: self.ctx.span_id.to_be_bytes().to_vec(),
            parent_span_id: self
                .ctx
                .parent_span_id
                .map(|p| p.to_be_bytes().to_vec())
                .unwrap_or_default(),
            trace_state: self.tracestate.clone().unwrap_or_default(),
            name: self.name.clone(),
            kind: kind as i32,
            start_time_unix_nano: nanos(self.start),
            end_time_unix_nano: nanos(end),
            attributes,
            status: failed.then(|| Status {
                code: status::StatusCode::Error as i32,
                ..Status::default()
            }),
            ..Span::default()
        }
    }
}

#[cfg(test)]
mod tests;

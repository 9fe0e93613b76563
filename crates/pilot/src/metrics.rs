//! Pilot's Prometheus metrics, named as Istio's (`pilot/pkg/xds/monitoring.go`):
//! `pilot_xds` (connected proxies), `pilot_xds_pushes{type}`,
//! `pilot_total_xds_rejects{type}`, `pilot_xds_expired_nonce{type}`,
//! `pilot_xds_push_time{type}` and `pilot_proxy_convergence_time`; and
//! `pilot_total_rejected_configs` for config refused by validation. The `type`
//! label holds Istio's short type names (`cds`, `eds`, `lds`, `rds`, `sds`).
//! In Kubernetes mode, [`KubeEventMetrics`]: `pilot_k8s_reg_events{type,event}`
//! (registry kinds: `Services`, `EndpointSlice`, `Pods`, `Namespaces`,
//! `ServiceAccounts`, `Secrets`) and `pilot_k8s_cfg_events{type,event}` (Istio
//! kinds by name), `event` being `add`, `update`, `updatesame` (nothing pilot
//! reads changed) or `delete`, as istiod counts its informers' events.
//!
//! prometheus-client writes counters in OpenMetrics form, so the exposition
//! names of the counters carry a `_total` suffix (`pilot_xds_pushes_total`), as
//! galley's do.

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::RejectionCounter;

/// Istio's buckets for `pilot_proxy_convergence_time` (seconds).
pub const CONVERGENCE_BUCKETS: [f64; 8] = [0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

/// Istio's buckets for `pilot_xds_push_time` (seconds).
pub const PUSH_TIME_BUCKETS: [f64; 8] = [0.01, 0.1, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0];

/// The `type` label: an xDS type in Istio's short form.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// `cds`, `eds`, `lds`, `rds`, `sds`, or the last segment of an unknown type URL.
    pub r#type: String,
}

impl TypeLabels {
    /// The label for a type URL.
    pub fn of(type_url: &str) -> Self {
        TypeLabels {
            r#type: crate::xds::ads::short_type(type_url).to_string(),
        }
    }
}

fn push_time_histogram() -> Histogram {
    Histogram::new(PUSH_TIME_BUCKETS)
}

/// `pilot_xds_pushes` and `pilot_xds_push_time` of one type ([`Metrics::push_metrics`]).
#[derive(Debug, Clone)]
pub struct PushMetrics {
    /// `pilot_xds_pushes{type}`.
    pub pushes: Counter,
    /// `pilot_xds_push_time{type}`.
    pub push_time: Histogram,
}

impl PushMetrics {
    /// Counts one response and how long it took.
    pub fn record(&self, seconds: f64) {
        self.pushes.inc();
        self.push_time.observe(seconds);
    }
}

/// Pilot's metrics; cheap to clone (every field shares its storage).
#[derive(Clone)]
pub struct Metrics {
    /// `pilot_xds`: proxies connected over ADS right now.
    pub connected: Gauge,
    /// `pilot_xds_pushes{type}`: responses sent, per type.
    pub pushes: Family<TypeLabels, Counter>,
    /// `pilot_total_xds_rejects{type}`: responses a proxy NACKed, per type.
    pub rejects: Family<TypeLabels, Counter>,
    /// `pilot_xds_expired_nonce{type}`: requests ignored because their nonce was
    /// not the latest sent for the type.
    pub expired_nonce: Family<TypeLabels, Counter>,
    /// `pilot_xds_push_time{type}`: time to generate and send one response (s).
    pub push_time: Family<TypeLabels, Histogram, fn() -> Histogram>,
    /// `pilot_proxy_convergence_time`: from a snapshot being seen by a connection
    /// to the proxy ACKing every type pushed for it (s).
    pub convergence: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            connected: Gauge::default(),
            pushes: Family::default(),
            rejects: Family::default(),
            expired_nonce: Family::default(),
            push_time: Family::new_with_constructor(push_time_histogram),
            convergence: Histogram::new(CONVERGENCE_BUCKETS),
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("connected", &self.connected.get())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// New metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "pilot_xds",
            "Number of proxies connected to this pilot over ADS",
            m.connected.clone(),
        );
        registry.register(
            "pilot_xds_pushes",
            "xDS responses sent, by type",
            m.pushes.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "xDS responses rejected (NACKed) by proxies, by type",
            m.rejects.clone(),
        );
        registry.register(
            "pilot_xds_expired_nonce",
            "xDS requests ignored because they carried a stale nonce, by type",
            m.expired_nonce.clone(),
        );
        registry.register(
            "pilot_xds_push_time",
            "Seconds to generate and send one xDS response, by type",
            m.push_time.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Seconds from a new snapshot to the proxy acknowledging everything pushed for it",
            m.convergence.clone(),
        );
        m
    }

    /// The push counter and time histogram of `type_url`, for a connection to
    /// keep and record into without looking the labels up on every response.
    pub fn push_metrics(&self, type_url: &str) -> PushMetrics {
        let labels = TypeLabels::of(type_url);
        PushMetrics {
            pushes: self.pushes.get_or_create(&labels).clone(),
            push_time: self.push_time.get_or_create(&labels).clone(),
        }
    }

    /// Counts one response sent for `type_url` and how long it took.
    pub fn record_push(&self, type_url: &str, seconds: f64) {
        self.push_metrics(type_url).record(seconds);
    }

    /// Counts one NACK for `type_url`.
    pub fn record_reject(&self, type_url: &str) {
        self.rejects.get_or_create(&TypeLabels::of(type_url)).inc();
    }

    /// Counts one request ignored for its stale nonce.
    pub fn record_expired_nonce(&self, type_url: &str) {
        self.expired_nonce
            .get_or_create(&TypeLabels::of(type_url))
            .inc();
    }
}

/// The `type` and `event` labels of the Kubernetes event counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// The kind, as istiod names it (`Services`, `Pods`; `VirtualService`).
    pub r#type: String,
    /// `add`, `update`, `updatesame` or `delete`.
    pub event: String,
}

/// The Kubernetes source's watch events, counted per kind as istiod does
/// (`pilot_k8s_reg_events`, `pilot_k8s_cfg_events`). Objects of initial lists
/// and relists are not events; only what watches deliver after them is.
#[derive(Debug, Clone, Default)]
pub struct KubeEventMetrics {
    /// `pilot_k8s_reg_events{type,event}`: Services, EndpointSlices, Pods,
    /// Namespaces, ServiceAccounts, Secrets.
    pub registry: Family<EventLabels, Counter>,
    /// `pilot_k8s_cfg_events{type,event}`: Istio kinds.
    pub config: Family<EventLabels, Counter>,
}

impl KubeEventMetrics {
    /// New counters, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = KubeEventMetrics::default();
        registry.register(
            "pilot_k8s_reg_events",
            "Events from the Kubernetes registry (Services, EndpointSlices, Pods, ...)",
            m.registry.clone(),
        );
        registry.register(
            "pilot_k8s_cfg_events",
            "Events from Kubernetes config (Istio resources)",
            m.config.clone(),
        );
        m
    }

    /// The counter of `event` on `kind` (a kind's name: `Service`,
    /// `VirtualService`).
    pub fn counter(&self, kind: &str, event: &str) -> Counter {
        let registry_type = match kind {
            "Service" => Some("Services"),
            "EndpointSlice" => Some("EndpointSlice"),
            "Pod" => Some("Pods"),
            "Namespace" => Some("Namespaces"),
            "ServiceAccount" => Some("ServiceAccounts"),
            "Secret" => Some("Secrets"),
            _ => None,
        };
        let (family, r#type) = match registry_type {
            Some(t) => (&self.registry, t),
            None => (&self.config, kind),
        };
        family
            .get_or_create(&EventLabels {
                r#type: r#type.to_string(),
                event: event.to_string(),
            })
            .clone()
    }
}

/// `pilot_total_rejected_configs`: resource versions refused by validation, read
/// from the config store's counter at scrape time.
#[derive(Debug, Clone)]
struct RejectedConfigs(RejectionCounter);

impl EncodeMetric for RejectedConfigs {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.0.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

/// Registers `pilot_total_rejected_configs`, backed by the config store's count
/// of rejected resource versions.
pub fn register_config_rejections(registry: &mut Registry, counter: RejectionCounter) {
    registry.register(
        "pilot_total_rejected_configs",
        "Config resource versions pilot refused (failed validation); the last good version stays",
        RejectedConfigs(counter),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_follow_istio() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.record_push(crate::xds::CLUSTER, 0.002);
        m.record_reject(crate::xds::ENDPOINT);
        m.connected.inc();
        m.convergence.observe(0.2);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("pilot_xds 1"), "{text}");
        assert!(
            text.contains("pilot_xds_pushes_total{type=\"cds\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pilot_total_xds_rejects_total{type=\"eds\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pilot_proxy_convergence_time_bucket{le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pilot_xds_push_time_bucket{le=\"0.01\",type=\"cds\"} 1"),
            "{text}"
        );
    }
}

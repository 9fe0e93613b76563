//! Galley's Prometheus metrics, named as Istio's: `galley_validation_passed` and
//! `galley_validation_failed`, labelled by group, version and resource (plural).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of the validation counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabels {
    /// API group (`networking.istio.io`).
    pub group: String,
    /// API version (`v1`).
    pub version: String,
    /// Resource plural (`virtualservices`), or the lower-cased kind when unknown.
    pub resource: String,
}

/// Labels of the failure counter: the resource and why.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailedLabels {
    /// API group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Resource plural.
    pub resource: String,
    /// `invalid_resource` (rules), `decode_error` (schema) or `invalid_request`.
    pub reason: String,
}

/// The counters, shared by the gRPC service and the webhook.
#[derive(Clone, Default)]
pub struct Metrics {
    /// Resources that passed validation.
    pub passed: Family<ResourceLabels, Counter>,
    /// Resources that failed validation.
    pub failed: Family<FailedLabels, Counter>,
}

impl Metrics {
    /// New counters, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "galley_validation_passed",
            "Resources that passed validation",
            m.passed.clone(),
        );
        registry.register(
            "galley_validation_failed",
            "Resources that failed validation",
            m.failed.clone(),
        );
        m
    }

    /// Counts one validated resource.
    pub fn record(&self, api_version: &str, kind: &str, ok: bool, reason: &str) {
        let (group, version) = common::resource::split_api_version(api_version);
        let resource = common::resource::IstioKind::find(group, kind)
            .map(|k| k.plural().to_string())
            .unwrap_or_else(|| kind.to_ascii_lowercase());
        if ok {
            self.passed
                .get_or_create(&ResourceLabels {
                    group: group.into(),
                    version: version.into(),
                    resource,
                })
                .inc();
        } else {
            self.failed
                .get_or_create(&FailedLabels {
                    group: group.into(),
                    version: version.into(),
                    resource,
                    reason: reason.into(),
                })
                .inc();
        }
    }
}

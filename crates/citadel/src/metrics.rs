//! Citadel's Prometheus metrics, named as Istio's CA names them.
//!
//! `citadel_server_csr_count` (every signing request received),
//! `citadel_server_success_cert_issuance_count`, `citadel_server_csr_parsing_err_count`,
//! `citadel_server_authentication_failure_count`, `citadel_server_csr_sign_err_count`
//! (signing or ledger failures) and `citadel_server_root_cert_expiry_timestamp` (unix
//! seconds). Served in OpenMetrics text, where counters carry a `_total` suffix
//! (`citadel_server_csr_count_total`), as everywhere in Mizzen.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The CA's counters and gauges; cheap to clone (they share their values).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Signing requests received.
    pub csr_count: Counter,
    /// Certificates issued.
    pub success_cert_issuance_count: Counter,
    /// Requests whose CSR was refused (malformed, bad signature, bad key, bad SANs).
    pub csr_parsing_err_count: Counter,
    /// Requests whose caller was not authenticated.
    pub authentication_failure_count: Counter,
    /// Requests that failed while signing or recording.
    pub csr_sign_err_count: Counter,
    /// When the root certificate expires, unix seconds.
    pub root_cert_expiry_timestamp: Gauge,
}

impl Metrics {
    /// New metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "citadel_server_csr_count",
            "Signing requests received",
            m.csr_count.clone(),
        );
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "Certificates issued",
            m.success_cert_issuance_count.clone(),
        );
        registry.register(
            "citadel_server_csr_parsing_err_count",
            "Signing requests refused for their CSR",
            m.csr_parsing_err_count.clone(),
        );
        registry.register(
            "citadel_server_authentication_failure_count",
            "Signing requests whose caller was not authenticated",
            m.authentication_failure_count.clone(),
        );
        registry.register(
            "citadel_server_csr_sign_err_count",
            "Signing requests that failed while signing or recording",
            m.csr_sign_err_count.clone(),
        );
        registry.register(
            "citadel_server_root_cert_expiry_timestamp",
            "Unix time when the root certificate expires",
            m.root_cert_expiry_timestamp.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_istio() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.csr_count.inc();
        m.root_cert_expiry_timestamp.set(1_900_000_000);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("citadel_server_csr_count_total 1"), "{text}");
        assert!(text.contains("citadel_server_success_cert_issuance_count_total 0"));
        assert!(text.contains("citadel_server_csr_parsing_err_count_total 0"));
        assert!(text.contains("citadel_server_authentication_failure_count_total 0"));
        assert!(text.contains("citadel_server_root_cert_expiry_timestamp 1900000000"));
    }
}

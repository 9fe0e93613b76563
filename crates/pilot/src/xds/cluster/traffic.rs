//! A DestinationRule traffic policy applied to one outbound cluster, as Istio's
//! `applyTrafficPolicy`: connection pool → circuit breakers and HTTP protocol
//! options, HTTP/2 upgrade, outlier detection, then the load balancer and the
//! locality load balancing config.

use common::istio::networking::{
    ConnectionPoolSettings, ConsistentHashLb, H2UpgradePolicy, LoadBalancerSettings,
    OutlierDetection as IstioOutlier, SimpleLb, TcpSettings,
};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster, OutlierDetection, UpstreamConnectionOptions,
    circuit_breakers::Thresholds,
    cluster::{
        ClusterDiscoveryType, CommonLbConfig, DiscoveryType, LbConfig, LbPolicy, MaglevLbConfig,
        RingHashLbConfig,
        common_lb_config::{LocalityConfigSpecifier, LocalityWeightedLbConfig},
    },
};
use envoy_types::pb::envoy::config::core::v3::{
    Http1ProtocolOptions, Http2ProtocolOptions, HttpProtocolOptions as CommonHttpOptions,
    TcpKeepalive,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    HttpProtocolOptions,
    http_protocol_options::{
        ExplicitHttpConfig, UpstreamProtocolOptions, UseDownstreamHttpConfig,
        explicit_http_config::ProtocolConfig,
    },
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Any, UInt64Value};

use crate::model::Protocol;
use crate::xds::endpoint::locality::LocalityLb;
use crate::xds::route::util::{any, istio_duration, positive, u32v};

/// The key of the upstream HTTP protocol options in
/// `typed_extension_protocol_options`.
pub const HTTP_PROTOCOL_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

/// Istio's circuit breaker defaults: every limit at `u32::MAX` (Envoy's own
/// defaults, such as 3 retries, are too low during pod churn), remaining
/// capacity tracked.
pub fn default_thresholds() -> Thresholds {
    Thresholds {
        max_connections: u32v(u32::MAX),
        max_pending_requests: u32v(u32::MAX),
        max_requests: u32v(u32::MAX),
        max_retries: u32v(u32::MAX),
        track_remaining: true,
        ..Default::default()
    }
}

/// The upstream protocol a cluster speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// Whatever Envoy's default is (HTTP/1.1), no explicit options.
    Default,
    /// HTTP/2 (gRPC and `http2` ports, or `h2UpgradePolicy: UPGRADE`).
    Http2,
    /// The downstream's protocol (`useClientProtocol`, PassthroughCluster).
    Downstream,
}

/// Applies a connection pool (defaults when `None`) to `cluster`: connect
/// timeout, circuit breaker thresholds, TCP keepalive, and the HTTP protocol
/// options (idle timeout, max requests per connection, max connection
/// duration, HTTP/2, client protocol). For inbound clusters too.
pub fn apply_connection_pool(
    cluster: &mut Cluster,
    pool: Option<&ConnectionPoolSettings>,
    protocol: Protocol,
) {
    let mut threshold = default_thresholds();
    let mut common = CommonHttpOptions::default();
    let mut has_common = false;
    let mut max_concurrent_streams = None;
    let mut upstream = if matches!(protocol, Protocol::Http2 | Protocol::Grpc) {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Default
    };
    if let Some(http) = pool.and_then(|p| p.http.as_ref()) {
        if let Some(v) = positive(http.http2_max_requests) {
            threshold.max_requests = u32v(v);
        }
        if let Some(v) = positive(http.http1_max_pending_requests) {
            threshold.max_pending_requests = u32v(v);
        }
        if let Some(v) = positive(http.max_retries) {
            threshold.max_retries = u32v(v);
        }
        if let Some(d) = &http.idle_timeout {
            common.idle_timeout = Some(istio_duration(d));
            has_common = true;
        }
        if let Some(v) = positive(http.max_requests_per_connection) {
            common.max_requests_per_connection = u32v(v);
            has_common = true;
        }
        max_concurrent_streams = positive(http.max_concurrent_streams);
        match http.h2_upgrade_policy {
            Some(H2UpgradePolicy::Upgrade) => upstream = UpstreamProtocol::Http2,
            Some(H2UpgradePolicy::DoNotUpgrade) | Some(H2UpgradePolicy::Default) | None => {}
        }
        if http.use_client_protocol == Some(true) {
            upstream = UpstreamProtocol::Downstream;
        }
    }
    if let Some(tcp) = pool.and_then(|p| p.tcp.as_ref()) {
        if let Some(d) = &tcp.connect_timeout {
            cluster.connect_timeout = Some(istio_duration(d));
        }
        if let Some(v) = positive(tcp.max_connections) {
            threshold.max_connections = u32v(v);
        }
        if let Some(d) = &tcp.max_connection_duration {
            common.max_connection_duration = Some(istio_duration(d));
            has_common = true;
        }
        if common.idle_timeout.is_none()
            && let Some(d) = &tcp.idle_timeout
        {
            common.idle_timeout = Some(istio_duration(d));
            has_common = true;
        }
        apply_tcp_keepalive(cluster, tcp);
    }
    cluster.circuit_breakers = Some(CircuitBreakers {
        thresholds: vec![threshold],
        ..Default::default()
    });
    let options = protocol_options(
        upstream,
        has_common.then_some(common),
        max_concurrent_streams,
    );
    if let Some(options) = options {
        cluster
            .typed_extension_protocol_options
            .insert(HTTP_PROTOCOL_OPTIONS.to_string(), options);
    }
}

/// `typed_extension_protocol_options` entry for `upstream`, or `None` when
/// nothing differs from Envoy's defaults.
pub fn protocol_options(
    upstream: UpstreamProtocol,
    common: Option<CommonHttpOptions>,
    max_concurrent_streams: Option<u32>,
) -> Option<Any> {
    let protocol = match upstream {
        UpstreamProtocol::Default if common.is_none() => return None,
        UpstreamProtocol::Default => {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::HttpProtocolOptions(
                    Http1ProtocolOptions::default(),
                )),
            })
        }
        UpstreamProtocol::Http2 => {
            UpstreamProtocolOptions::ExplicitHttpConfig(ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(Http2ProtocolOptions {
                    max_concurrent_streams: max_concurrent_streams.and_then(u32v),
                    ..Default::default()
                })),
            })
        }
        UpstreamProtocol::Downstream => {
            UpstreamProtocolOptions::UseDownstreamProtocolConfig(UseDownstreamHttpConfig {
                http_protocol_options: Some(Http1ProtocolOptions::default()),
                http2_protocol_options: Some(Http2ProtocolOptions {
                    max_concurrent_streams: max_concurrent_streams.and_then(u32v),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }
    };
    Some(any(&HttpProtocolOptions {
        common_http_protocol_options: common,
        upstream_protocol_options: Some(protocol),
        ..Default::default()
    }))
}

fn apply_tcp_keepalive(cluster: &mut Cluster, tcp: &TcpSettings) {
    let Some(k) = &tcp.tcp_keepalive else {
        return;
    };
    let secs = |d: &common::istio::types::Duration| {
        u32v(
            u32::try_from(d.as_std().as_secs())
                .unwrap_or(u32::MAX)
                .max(1),
        )
    };
    cluster.upstream_connection_options = Some(UpstreamConnectionOptions {
        tcp_keepalive: Some(TcpKeepalive {
            keepalive_probes: k.probes.and_then(u32v),
            keepalive_time: k.time.as_ref().and_then(secs),
            keepalive_interval: k.interval.as_ref().and_then(secs),
        }),
        ..Default::default()
    });
}

/// Outlier detection as Istio maps it: success-rate ejection off; consecutive
/// 5xx and gateway errors enforced at 100% when non-zero; the deprecated
/// `consecutiveErrors` stands in for `consecutive5xxErrors`; the panic
/// threshold set to `minHealthPercent` (0, i.e. disabled, when unset).
pub fn apply_outlier_detection(cluster: &mut Cluster, outlier: Option<&IstioOutlier>) {
    let Some(o) = outlier else {
        return;
    };
    let enforcing = |v: u32| u32v(if v > 0 { 100 } else { 0 });
    let mut out = OutlierDetection {
        enforcing_success_rate: u32v(0),
        ..Default::default()
    };
    let five_xx = o
        .consecutive_5xx_errors
        .or_else(|| o.consecutive_errors.filter(|v| *v >= 0).map(|v| v as u32));
    if let Some(v) = five_xx {
        out.consecutive_5xx = u32v(v);
        out.enforcing_consecutive_5xx = enforcing(v);
    }
    if let Some(v) = o.consecutive_gateway_errors {
        out.consecutive_gateway_failure = u32v(v);
        out.enforcing_consecutive_gateway_failure = enforcing(v);
    }
    out.interval = o.interval.as_ref().map(istio_duration);
    out.base_ejection_time = o.base_ejection_time.as_ref().map(istio_duration);
    if let Some(v) = positive(o.max_ejection_percent) {
        out.max_ejection_percent = u32v(v.min(100));
    }
    if o.split_external_local_origin_errors == Some(true) {
        out.split_external_local_origin_errors = true;
        if let Some(v) = o.consecutive_local_origin_failures.filter(|v| *v > 0) {
            out.consecutive_local_origin_failure = u32v(v);
            out.enforcing_consecutive_local_origin_failure = u32v(100);
        }
        out.enforcing_local_origin_success_rate = u32v(0);
    }
    cluster.outlier_detection = Some(out);
    let min_health = o.min_health_percent.unwrap_or(0);
    if min_health >= 0 {
        cluster
            .common_lb_config
            .get_or_insert_with(CommonLbConfig::default)
            .healthy_panic_threshold = Some(Percent {
            value: f64::from(min_health.min(100)),
        });
    }
}

/// The load balancer: `simple` (LEAST_REQUEST by default, Istio's), PASSTHROUGH
/// turning the cluster into ORIGINAL_DST, then consistent hashing (ring hash or
/// Maglev). ORIGINAL_DST clusters always use CLUSTER_PROVIDED.
pub fn apply_load_balancer(cluster: &mut Cluster, lb: Option<&LoadBalancerSettings>) {
    if is_original_dst(cluster) {
        cluster.lb_policy = LbPolicy::ClusterProvided as i32;
        return;
    }
    let simple = lb.and_then(|l| l.simple).unwrap_or_default();
    cluster.lb_policy = match simple {
        SimpleLb::RoundRobin => LbPolicy::RoundRobin,
        SimpleLb::Random => LbPolicy::Random,
        SimpleLb::Passthrough => {
            cluster.cluster_discovery_type = Some(ClusterDiscoveryType::Type(
                DiscoveryType::OriginalDst as i32,
            ));
            cluster.load_assignment = None;
            cluster.eds_cluster_config = None;
            LbPolicy::ClusterProvided
        }
        SimpleLb::LeastConn | SimpleLb::LeastRequest | SimpleLb::Unspecified => {
            LbPolicy::LeastRequest
        }
    } as i32;
    if simple == SimpleLb::Passthrough {
        return;
    }
    if let Some(hash) = lb.and_then(|l| l.consistent_hash.as_ref()) {
        apply_consistent_hash(cluster, hash);
    }
}

fn apply_consistent_hash(cluster: &mut Cluster, hash: &ConsistentHashLb) {
    if let Some(maglev) = &hash.maglev {
        cluster.lb_policy = LbPolicy::Maglev as i32;
        cluster.lb_config = maglev.table_size.filter(|s| *s != 0).map(|s| {
            LbConfig::MaglevLbConfig(MaglevLbConfig {
                table_size: Some(UInt64Value { value: s }),
            })
        });
    } else if let Some(ring) = &hash.ring_hash {
        cluster.lb_policy = LbPolicy::RingHash as i32;
        cluster.lb_config = ring.minimum_ring_size.filter(|s| *s != 0).map(ring_hash);
    } else {
        cluster.lb_policy = LbPolicy::RingHash as i32;
        let size = hash.minimum_ring_size.filter(|s| *s != 0).unwrap_or(1024);
        cluster.lb_config = Some(ring_hash(size));
    }
}

fn ring_hash(minimum: u64) -> LbConfig {
    LbConfig::RingHashLbConfig(RingHashLbConfig {
        minimum_ring_size: Some(UInt64Value { value: minimum }),
        ..Default::default()
    })
}

/// Istio's locality settings on the cluster: `locality_weighted_lb_config`
/// when `distribute` is set, or failover applies with explicit `failover` or
/// `failoverPriority` entries ([`LocalityLb::weighted_config`]). Istio also
/// adds an empty `common_lb_config` otherwise, which changes nothing in Envoy
/// and is left out. Not for ORIGINAL_DST clusters (no localities there).
pub fn apply_locality_lb(cluster: &mut Cluster, lb: LocalityLb<'_>) {
    if lb.weighted_config() && !is_original_dst(cluster) {
        cluster
            .common_lb_config
            .get_or_insert_with(CommonLbConfig::default)
            .locality_config_specifier = Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(
            LocalityWeightedLbConfig::default(),
        ));
    }
}

/// Whether the cluster's discovery type is ORIGINAL_DST.
pub fn is_original_dst(cluster: &Cluster) -> bool {
    matches!(
        cluster.cluster_discovery_type,
        Some(ClusterDiscoveryType::Type(t)) if t == DiscoveryType::OriginalDst as i32
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::istio::networking::HttpSettings;

    #[test]
    fn connection_pool_becomes_circuit_breakers() {
        let mut c = Cluster::default();
        let pool = ConnectionPoolSettings {
            tcp: Some(TcpSettings {
                max_connections: Some(1),
                connect_timeout: Some("250ms".parse().unwrap()),
                ..Default::default()
            }),
            http: Some(HttpSettings {
                http1_max_pending_requests: Some(2),
                http2_max_requests: Some(3),
                max_retries: Some(4),
                max_requests_per_connection: Some(1),
                ..Default::default()
            }),
        };
        apply_connection_pool(&mut c, Some(&pool), Protocol::Http);
        let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
        assert_eq!(t.max_connections.unwrap().value, 1);
        assert_eq!(t.max_pending_requests.unwrap().value, 2);
        assert_eq!(t.max_requests.unwrap().value, 3);
        assert_eq!(t.max_retries.unwrap().value, 4);
        assert_eq!(c.connect_timeout.unwrap().nanos, 250_000_000);
        assert!(
            c.typed_extension_protocol_options
                .contains_key(HTTP_PROTOCOL_OPTIONS)
        );
    }

    #[test]
    fn defaults_are_istios() {
        let mut c = Cluster::default();
        apply_connection_pool(&mut c, None, Protocol::Http);
        let t = &c.circuit_breakers.as_ref().unwrap().thresholds[0];
        assert_eq!(t.max_retries.unwrap().value, u32::MAX);
        assert!(c.typed_extension_protocol_options.is_empty());
        apply_load_balancer(&mut c, None);
        assert_eq!(c.lb_policy, LbPolicy::LeastRequest as i32);
    }

    #[test]
    fn outlier_detection_mapping() {
        let mut c = Cluster::default();
        let o = IstioOutlier {
            consecutive_errors: Some(7),
            consecutive_gateway_errors: Some(0),
            interval: Some("1s".parse().unwrap()),
            base_ejection_time: Some("30s".parse().unwrap()),
            max_ejection_percent: Some(100),
            ..Default::default()
        };
        apply_outlier_detection(&mut c, Some(&o));
        let od = c.outlier_detection.as_ref().unwrap();
        assert_eq!(od.consecutive_5xx.unwrap().value, 7);
        assert_eq!(od.enforcing_consecutive_5xx.unwrap().value, 100);
        assert_eq!(od.enforcing_consecutive_gateway_failure.unwrap().value, 0);
        assert_eq!(od.max_ejection_percent.unwrap().value, 100);
        assert_eq!(od.interval.unwrap().seconds, 1);
        assert_eq!(
            c.common_lb_config
                .unwrap()
                .healthy_panic_threshold
                .unwrap()
                .value,
            0.0
        );
    }
}

//! Connection pool rules, shared by DestinationRule traffic policies and Sidecar
//! inbound listeners: no negative limits, valid durations, and no client protocol
//! with a forced HTTP/2 upgrade.

use common::istio::networking::{ConnectionPoolSettings, H2UpgradePolicy};

use super::super::checks;
use super::super::field::Field;
use super::util;

/// Validates `connectionPool`.
pub(super) fn connection_pool(f: &mut Field<'_>, cp: &ConnectionPoolSettings) {
    if cp.http.is_none() && cp.tcp.is_none() {
        f.error("is empty: set tcp or http settings, or remove it");
        return;
    }
    if let Some(h) = &cp.http {
        let mut fh = f.at("http");
        for (field, v) in [
            ("http1MaxPendingRequests", h.http1_max_pending_requests),
            ("http2MaxRequests", h.http2_max_requests),
            ("maxRequestsPerConnection", h.max_requests_per_connection),
            ("maxRetries", h.max_retries),
            ("maxConcurrentStreams", h.max_concurrent_streams),
        ] {
            if let Some(v) = v {
                util::non_negative(&mut fh.at(field), i64::from(v));
            }
        }
        if let Some(d) = &h.idle_timeout {
            util::duration_or_zero(&mut fh.at("idleTimeout"), d);
        }
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && h.use_client_protocol == Some(true)
        {
            fh.at("useClientProtocol").error(
                "cannot be true when h2UpgradePolicy is UPGRADE: one keeps the client's protocol, the other forces HTTP/2; keep one",
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            let mut fk = fh.at("http2KeepAlive");
            if let Some(d) = &ka.interval {
                checks::istio_duration(&mut fk.at("interval"), d);
            }
            if let Some(d) = &ka.timeout {
                checks::istio_duration(&mut fk.at("timeout"), d);
            }
        }
    }
    if let Some(t) = &cp.tcp {
        let mut ft = f.at("tcp");
        if let Some(v) = t.max_connections {
            util::non_negative(&mut ft.at("maxConnections"), i64::from(v));
        }
        if let Some(d) = &t.connect_timeout {
            checks::istio_duration(&mut ft.at("connectTimeout"), d);
        }
        if let Some(d) = &t.max_connection_duration {
            checks::istio_duration(&mut ft.at("maxConnectionDuration"), d);
        }
        if let Some(d) = &t.idle_timeout {
            util::duration_or_zero(&mut ft.at("idleTimeout"), d);
        }
        if let Some(ka) = &t.tcp_keepalive {
            let mut fk = ft.at("tcpKeepalive");
            if let Some(d) = &ka.time {
                checks::istio_duration(&mut fk.at("time"), d);
            }
            if let Some(d) = &ka.interval {
                checks::istio_duration(&mut fk.at("interval"), d);
            }
        }
    }
}

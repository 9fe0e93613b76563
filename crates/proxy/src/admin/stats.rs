//! `/stats`: the proxy's statistics under Envoy's names, from the server state
//! and the xDS client's counters ([`crate::xds::XdsStats`] and each type's
//! ACK/NACK counts), rendered as Envoy renders them.
//!
//! Envoy's names: `server.state` (0 LIVE, 1 DRAINING, 2 PRE_INITIALIZING),
//! `server.live`, `server.uptime`, `server.concurrency`,
//! `control_plane.connected_state`, `cluster_manager.cds.update_{attempt,success,rejected}`,
//! `cluster_manager.{active,warming}_clusters`,
//! `listener_manager.lds.update_{attempt,success,rejected}`,
//! `listener_manager.total_listeners_{active,warming}`. Envoy keeps EDS, RDS and
//! SDS counters per resource; here they are per type under `mizzen.xds.<type>.`,
//! with the client's connection counters under `mizzen.xds.`.
//!
//! Formats: text (`name: value`, sorted, Envoy's default), JSON
//! (`{"stats":[{"name","value"}]}`) and Prometheus text (`envoy_` prefix, dots
//! as underscores, a `# TYPE` line each).

use std::sync::atomic::Ordering;

use serde_json::json;

use super::{Admin, ServerState};
use crate::xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, short_type};

/// Whether a statistic only grows or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// One statistic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// Envoy's dotted name.
    pub name: String,
    /// Its value.
    pub value: u64,
    /// Counter or gauge.
    pub kind: Kind,
}

fn stat(name: impl Into<String>, value: u64, kind: Kind) -> Stat {
    Stat {
        name: name.into(),
        value,
        kind,
    }
}

/// Every statistic now, sorted by name.
pub fn collect(admin: &Admin) -> Vec<Stat> {
    use Kind::{Counter, Gauge};
    let c = admin.context();
    let state = c.store.load();
    let xs = c.store.stats();
    let server_state = admin.state();
    let mut all = vec![
        stat("server.state", server_state as u64, Gauge),
        stat(
            "server.live",
            u64::from(server_state == ServerState::Live),
            Gauge,
        ),
        stat("server.uptime", admin.uptime_secs(), Gauge),
        stat("server.concurrency", c.config.workers() as u64, Gauge),
        stat(
            "control_plane.connected_state",
            u64::from(xs.connected.load(Ordering::Relaxed)),
            Gauge,
        ),
        stat(
            "cluster_manager.active_clusters",
            (c.bootstrap.static_clusters.len() + state.clusters.len()) as u64,
            Gauge,
        ),
        stat(
            "cluster_manager.warming_clusters",
            state.warming_clusters.len() as u64,
            Gauge,
        ),
        stat(
            "listener_manager.total_listeners_active",
            (c.bootstrap.static_listeners.len() + state.listeners.len()) as u64,
            Gauge,
        ),
        stat(
            "listener_manager.total_listeners_warming",
            state.warming_listeners.len() as u64,
            Gauge,
        ),
    ];
    for (prefix, type_url) in [
        ("cluster_manager.cds".to_owned(), CLUSTER),
        ("listener_manager.lds".to_owned(), LISTENER),
        (format!("mizzen.xds.{}", short_type(ENDPOINT)), ENDPOINT),
        (format!("mizzen.xds.{}", short_type(ROUTE)), ROUTE),
        (format!("mizzen.xds.{}", short_type(SECRET)), SECRET),
    ] {
        let ts = state.type_state(type_url);
        all.push(stat(
            format!("{prefix}.update_attempt"),
            ts.acks + ts.nacks,
            Counter,
        ));
        all.push(stat(format!("{prefix}.update_success"), ts.acks, Counter));
        all.push(stat(format!("{prefix}.update_rejected"), ts.nacks, Counter));
    }
    // Envoy counts RDS per route configuration (under the connection
    // manager's stat prefix) and EDS per cluster; the client counts per type,
    // so each name carries its type's counts.
    let dp = c.data_path.current();
    let eds = state.type_state(ENDPOINT);
    let rds = state.type_state(ROUTE);
    let mut rds_names = std::collections::BTreeSet::new();
    for l in dp.listeners.values() {
        for chain in l.chains.iter().chain(l.default_chain.iter()) {
            if let crate::listener::NetworkFilter::Http(hcm) = &chain.filter
                && let crate::listener::RouteSource::Rds(name) = &hcm.routes
            {
                rds_names.insert(format!("http.{}.rds.{name}", hcm.stat_prefix));
            }
        }
    }
    for prefix in rds_names {
        all.push(stat(format!("{prefix}.update_success"), rds.acks, Counter));
        all.push(stat(
            format!("{prefix}.update_rejected"),
            rds.nacks,
            Counter,
        ));
    }
    let mut cluster_stats = Vec::new();
    for cluster in dp.clusters.iter() {
        cluster
            .stats
            .render(&cluster.name, &cluster.hosts(), &mut cluster_stats);
        if cluster.is_eds() {
            let prefix = format!("cluster.{}", cluster.name);
            all.push(stat(format!("{prefix}.update_success"), eds.acks, Counter));
            all.push(stat(
                format!("{prefix}.update_rejected"),
                eds.nacks,
                Counter,
            ));
        }
    }
    let mut http = Vec::new();
    for (prefix, s) in c.data_path.all_http_stats() {
        s.render(&prefix, &mut http);
    }
    // Network RBAC filters: `PREFIX rbac.*`.
    let mut rbac = Vec::new();
    for (prefix, s) in c.data_path.all_rbac_stats() {
        s.render(&format!("{prefix}rbac."), &mut rbac);
    }
    http.extend(rbac.into_iter().map(|(n, v)| (n, v, false)));
    // The OpenTelemetry tracer's counters (`tracing.opentelemetry.*`).
    let mut otlp = Vec::new();
    c.data_path.telemetry.otlp_stats().render(&mut otlp);
    all.extend(
        otlp.into_iter()
            .map(|(name, value)| stat(name, value, Counter)),
    );
    all.extend(
        http.into_iter()
            .map(|(name, value, gauge)| stat(name, value, if gauge { Gauge } else { Counter })),
    );
    all.extend(cluster_stats.into_iter().map(|(name, value)| {
        let kind = if name.ends_with("_active") || name.contains(".membership_") {
            Gauge
        } else {
            Counter
        };
        stat(name, value, kind)
    }));
    for (name, counter) in [
        ("connects", &xs.connects),
        ("connect_failures", &xs.connect_failures),
        ("disconnects", &xs.disconnects),
        ("updates_accepted", &xs.updates_accepted),
        ("updates_rejected", &xs.updates_rejected),
        ("resources_rejected", &xs.resources_rejected),
    ] {
        all.push(stat(
            format!("mizzen.xds.{name}"),
            counter.load(Ordering::Relaxed),
            Counter,
        ));
    }
    all.sort_by(|a, b| a.name.cmp(&b.name));
    all
}

/// Envoy's text format: `name: value` lines.
pub fn text(all: &[Stat]) -> String {
    all.iter()
        .map(|s| format!("{}: {}\n", s.name, s.value))
        .collect()
}

/// Envoy's `?format=json`.
pub fn json(all: &[Stat]) -> serde_json::Value {
    json!({
        "stats": all
            .iter()
            .map(|s| json!({ "name": s.name, "value": s.value }))
            .collect::<Vec<_>>()
    })
}

/// Prometheus text: `envoy_` prefix, dots as underscores.
pub fn prometheus(all: &[Stat]) -> String {
    all.iter()
        .map(|s| {
            let name = format!("envoy_{}", s.name.replace(['.', '-'], "_"));
            let kind = match s.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
            };
            format!("# TYPE {name} {kind}\n{name} {}\n", s.value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_envoy() {
        let all = vec![
            stat("control_plane.connected_state", 1, Kind::Gauge),
            stat("cluster_manager.cds.update_success", 3, Kind::Counter),
        ];
        assert_eq!(
            text(&all),
            "control_plane.connected_state: 1\ncluster_manager.cds.update_success: 3\n"
        );
        let prom = prometheus(&all);
        assert!(prom.contains("# TYPE envoy_control_plane_connected_state gauge\n"));
        assert!(prom.contains("envoy_cluster_manager_cds_update_success 3\n"));
        assert_eq!(
            json(&all)["stats"][1]["name"],
            "cluster_manager.cds.update_success"
        );
    }
}

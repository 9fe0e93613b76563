//! Which bootstrap fields the proxy honours, ignores or refuses (the table in
//! [`crate::bootstrap`]), and the extraction of the admin address and the ADS target.
//!
//! Fields are classified on the bootstrap's canonical JSON (proto field names, only
//! the fields that are set), so every field is named exactly as Envoy's
//! documentation names it and a field missing from the tables is refused.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use common::envoy_json;
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap as EnvoyBootstrap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::api_config_source::ApiType;
use envoy_types::pb::envoy::config::core::v3::grpc_service::TargetSpecifier;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::config::core::v3::{Address, ApiConfigSource};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use prost::Message as _;
use serde_json::Value;

use super::{AdsTarget, BOOTSTRAP_TYPE, Endpoint, Refusal};

/// What the proxy does with a bootstrap field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Read and honoured (nested fields may have their own table or checks).
    Used,
    /// Accepted, warned about, and ignored; the text says what it is about.
    Ignored(&'static str),
    /// The bootstrap is refused while it is set; the text says why.
    Refused(&'static str),
}

use Treatment::{Ignored, Refused, Used};

const STATS: &str = "statistics settings are not applied";
const NOT_ROUTING: &str = "it does not change routing";

/// Top-level fields of `envoy.config.bootstrap.v3.Bootstrap`.
pub const TOP_LEVEL: &[(&str, Treatment)] = &[
    ("node", Used),
    ("static_resources", Used),
    ("dynamic_resources", Used),
    ("admin", Used),
    ("stats_config", Ignored(STATS)),
    ("stats_sinks", Ignored(STATS)),
    ("stats_flush_interval", Ignored(STATS)),
    ("stats_flush_on_admin", Ignored(STATS)),
    ("stats_eviction_interval", Ignored(STATS)),
    ("deferred_stat_options", Ignored(STATS)),
    ("stats_server_version_override", Ignored(STATS)),
    ("enable_dispatcher_stats", Ignored(STATS)),
    ("tracing", Ignored("tracing is not done yet")),
    ("layered_runtime", Ignored("there are no runtime flags")),
    ("overload_manager", Ignored("there is no overload manager")),
    ("cluster_manager", Ignored(NOT_ROUTING)),
    ("watchdog", Ignored(NOT_ROUTING)),
    ("watchdogs", Ignored(NOT_ROUTING)),
    ("fatal_actions", Ignored(NOT_ROUTING)),
    (
        "bootstrap_extensions",
        Ignored("no bootstrap extensions are loaded"),
    ),
    ("flags_path", Ignored(NOT_ROUTING)),
    ("node_context_params", Ignored("xDS-TP names are not used")),
    ("inline_headers", Ignored(NOT_ROUTING)),
    (
        "dns_resolution_config",
        Ignored("the system resolver is used"),
    ),
    (
        "typed_dns_resolver_config",
        Ignored("the system resolver is used"),
    ),
    (
        "use_tcp_for_dns_lookups",
        Ignored("the system resolver is used"),
    ),
    ("default_regex_engine", Ignored("the regex engine is fixed")),
    ("perf_tracing_file_path", Ignored(NOT_ROUTING)),
    (
        "application_log_config",
        Ignored("use --log-format and --log-level"),
    ),
    ("grpc_async_client_manager_config", Ignored(NOT_ROUTING)),
    ("memory_allocator_manager", Ignored(NOT_ROUTING)),
    ("enable_worker_cpu_affinity", Ignored(NOT_ROUTING)),
    (
        "hds_config",
        Refused("(health discovery service) is not supported by mizzen proxy; remove it"),
    ),
    (
        "config_sources",
        Refused("(xDS-TP config sources) is not supported by mizzen proxy; remove it"),
    ),
    (
        "default_config_source",
        Refused("(xDS-TP config sources) is not supported by mizzen proxy; remove it"),
    ),
    (
        "certificate_provider_instances",
        Refused("is not supported by mizzen proxy (certificates come from SDS); remove it"),
    ),
    (
        "default_socket_interface",
        Refused("is not supported by mizzen proxy; remove it"),
    ),
    (
        "header_prefix",
        Refused("is not supported by mizzen proxy (headers keep the x-envoy- prefix); remove it"),
    ),
    (
        "xds_delegate_extension",
        Refused("is not supported by mizzen proxy; remove it"),
    ),
    (
        "xds_config_tracker_extension",
        Refused("is not supported by mizzen proxy; remove it"),
    ),
    (
        "listener_manager",
        Refused("is not supported by mizzen proxy; remove it"),
    ),
];

/// Fields of `admin`.
pub const ADMIN: &[(&str, Treatment)] = &[
    ("address", Used),
    ("access_log", Ignored("admin requests are not logged")),
    ("access_log_path", Ignored("admin requests are not logged")),
    ("profile_path", Ignored("there is no profiler")),
    (
        "socket_options",
        Ignored("admin socket options are not applied"),
    ),
    (
        "ignore_global_conn_limit",
        Ignored("there is no global connection limit"),
    ),
    (
        "allow_paths",
        Refused(
            "is not supported by mizzen proxy (the admin listener would serve every path, not only these); remove it",
        ),
    ),
];

/// Fields of `static_resources`.
pub const STATIC_RESOURCES: &[(&str, Treatment)] = &[
    ("clusters", Used),
    ("listeners", Used),
    (
        "secrets",
        Refused(
            "is not supported by mizzen proxy (certificates come from SDS over ADS); remove it",
        ),
    ),
];

/// Fields of `dynamic_resources`.
pub const DYNAMIC_RESOURCES: &[(&str, Treatment)] = &[
    ("ads_config", Used),
    ("lds_config", Used),
    ("cds_config", Used),
    (
        "lds_resources_locator",
        Refused("(xDS-TP) is not supported by mizzen proxy; use lds_config with `ads: {}`"),
    ),
    (
        "cds_resources_locator",
        Refused("(xDS-TP) is not supported by mizzen proxy; use cds_config with `ads: {}`"),
    ),
];

/// Fields of `dynamic_resources.lds_config` / `cds_config` (a ConfigSource) that may
/// be set beside `ads`.
const ADS_CONFIG_SOURCE: &[&str] = &["ads", "resource_api_version", "initial_fetch_timeout"];

/// The result of a successful check.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    /// `admin.address`.
    pub admin: Option<SocketAddr>,
    /// The ADS server.
    pub ads: Option<AdsTarget>,
    /// One sentence per ignored field.
    pub warnings: Vec<String>,
}

#[derive(Default)]
struct Checker {
    warnings: Vec<String>,
    refusals: Vec<Refusal>,
}

impl Checker {
    fn refuse(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.refusals.push(Refusal {
            field: field.into(),
            reason: reason.into(),
        });
    }

    fn warn(&mut self, field: &str, why: &str) {
        self.warnings.push(format!(
            "bootstrap field `{field}` is ignored by mizzen proxy ({why}); it can stay"
        ));
    }

    /// Classifies every field set in `value` (an object) with `table`.
    fn table(&mut self, prefix: &str, value: Option<&Value>, table: &[(&str, Treatment)]) {
        let Some(Value::Object(fields)) = value else {
            return;
        };
        for key in fields.keys() {
            let path = join(prefix, key);
            match table.iter().find(|(name, _)| name == key) {
                Some((_, Used)) => {}
                Some((_, Ignored(why))) => self.warn(&path, why),
                Some((_, Refused(why))) => self.refuse(path, *why),
                None => self.refuse(
                    path,
                    "is not known to mizzen proxy (not in its support table); remove it",
                ),
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Checks `raw` against the support tables and extracts the admin address and the
/// ADS target; every refused field is returned at once.
pub fn check(raw: &EnvoyBootstrap) -> Result<Checked, Vec<Refusal>> {
    let mut c = Checker::default();
    let json = match envoy_json::to_json(BOOTSTRAP_TYPE, raw) {
        Ok(json) => json,
        Err(err) => {
            return Err(vec![Refusal {
                field: String::new(),
                reason: format!("cannot be inspected: {err}"),
            }]);
        }
    };
    c.table("", Some(&json), TOP_LEVEL);
    c.table("admin", json.get("admin"), ADMIN);
    c.table(
        "static_resources",
        json.get("static_resources"),
        STATIC_RESOURCES,
    );
    let dynamic = json.get("dynamic_resources");
    c.table("dynamic_resources", dynamic, DYNAMIC_RESOURCES);
    for source in ["lds_config", "cds_config"] {
        if let Some(Value::Object(fields)) = dynamic.and_then(|d| d.get(source)) {
            if !fields.contains_key("ads") {
                c.refuse(
                    format!("dynamic_resources.{source}"),
                    "must be `ads: {}`: mizzen proxy reads listeners and clusters over ADS only",
                );
                continue;
            }
            for key in fields
                .keys()
                .filter(|k| !ADS_CONFIG_SOURCE.contains(&k.as_str()))
            {
                c.refuse(
                    format!("dynamic_resources.{source}.{key}"),
                    "is not supported by mizzen proxy; leave only `ads: {}` (and resource_api_version, initial_fetch_timeout)",
                );
            }
        }
    }
    extract_with(c, raw)
}

/// The admin address and ADS target of a bootstrap [`check`] has already accepted
/// (read in a child process by [`super::isolated`]), without the field tables:
/// this part needs no descriptor pool. `warnings` are the child's.
pub fn extract(raw: &EnvoyBootstrap, warnings: Vec<String>) -> Result<Checked, Vec<Refusal>> {
    extract_with(
        Checker {
            warnings,
            refusals: Vec::new(),
        },
        raw,
    )
}

fn extract_with(mut c: Checker, raw: &EnvoyBootstrap) -> Result<Checked, Vec<Refusal>> {
    unique_names(&mut c, raw);
    let admin = admin(&mut c, raw);
    let ads = ads(&mut c, raw);
    if ads.is_some() {
        let node = raw.node.clone().unwrap_or_default();
        if node.id.is_empty() {
            c.refuse(
                "node.id",
                "is required when ADS is configured: set it in the bootstrap or with --service-node",
            );
        }
        if node.cluster.is_empty() {
            c.refuse(
                "node.cluster",
                "is required when ADS is configured: set it in the bootstrap or with --service-cluster",
            );
        }
    }
    if c.refusals.is_empty() {
        Ok(Checked {
            admin,
            ads,
            warnings: c.warnings,
        })
    } else {
        Err(c.refusals)
    }
}

fn unique_names(c: &mut Checker, raw: &EnvoyBootstrap) {
    let Some(statics) = &raw.static_resources else {
        return;
    };
    let mut seen = HashMap::new();
    for (i, cluster) in statics.clusters.iter().enumerate() {
        if let Some(first) = seen.insert(cluster.name.as_str(), i) {
            c.refuse(
                format!("static_resources.clusters[{i}].name"),
                format!(
                    "repeats the name {:?} of static_resources.clusters[{first}]; cluster names must be unique",
                    cluster.name
                ),
            );
        }
    }
    let mut seen = HashMap::new();
    for (i, listener) in statics.listeners.iter().enumerate() {
        if listener.name.is_empty() {
            continue;
        }
        if let Some(first) = seen.insert(listener.name.as_str(), i) {
            c.refuse(
                format!("static_resources.listeners[{i}].name"),
                format!(
                    "repeats the name {:?} of static_resources.listeners[{first}]; listener names must be unique",
                    listener.name
                ),
            );
        }
    }
}

fn admin(c: &mut Checker, raw: &EnvoyBootstrap) -> Option<SocketAddr> {
    let address = raw.admin.as_ref()?.address.as_ref()?;
    match &address.address {
        Some(AddressKind::SocketAddress(sa)) => {
            let Ok(ip) = sa.address.parse::<IpAddr>() else {
                c.refuse(
                    "admin.address.socket_address.address",
                    format!(
                        "must be an IP address (got {:?}), as Envoy requires for listeners",
                        sa.address
                    ),
                );
                return None;
            };
            let port = port(c, "admin.address.socket_address", &sa.port_specifier)?;
            Some(SocketAddr::new(ip, port))
        }
        Some(AddressKind::Pipe(_)) => {
            c.refuse(
                "admin.address.pipe",
                "is not supported by mizzen proxy; use a socket_address",
            );
            None
        }
        Some(AddressKind::EnvoyInternalAddress(_)) => {
            c.refuse(
                "admin.address.envoy_internal_address",
                "is not supported by mizzen proxy; use a socket_address",
            );
            None
        }
        None => None,
    }
}

fn port(c: &mut Checker, at: &str, spec: &Option<PortSpecifier>) -> Option<u16> {
    match spec {
        Some(PortSpecifier::PortValue(p)) => match u16::try_from(*p) {
            Ok(p) => Some(p),
            Err(_) => {
                c.refuse(format!("{at}.port_value"), format!("{p} is not a port"));
                None
            }
        },
        Some(PortSpecifier::NamedPort(_)) => {
            c.refuse(
                format!("{at}.named_port"),
                "is not supported by mizzen proxy; use port_value",
            );
            None
        }
        None => Some(0),
    }
}

fn ads(c: &mut Checker, raw: &EnvoyBootstrap) -> Option<AdsTarget> {
    let base = "dynamic_resources.ads_config";
    let Some(config) = raw
        .dynamic_resources
        .as_ref()
        .and_then(|d| d.ads_config.as_ref())
    else {
        let uses_ads = raw
            .dynamic_resources
            .as_ref()
            .is_some_and(|d| d.lds_config.is_some() || d.cds_config.is_some());
        if uses_ads {
            c.refuse(
                base,
                "is required: lds_config/cds_config say `ads: {}` but no ADS server is configured",
            );
        }
        return None;
    };
    let delta = match ApiType::try_from(config.api_type) {
        Ok(ApiType::Grpc | ApiType::AggregatedGrpc) => false,
        Ok(ApiType::DeltaGrpc | ApiType::AggregatedDeltaGrpc) => true,
        Ok(ApiType::Rest) => {
            c.refuse(
                format!("{base}.api_type"),
                "REST is not supported for ADS; use GRPC or DELTA_GRPC",
            );
            return None;
        }
        _ => {
            c.refuse(
                format!("{base}.api_type"),
                "must be GRPC, DELTA_GRPC, AGGREGATED_GRPC or AGGREGATED_DELTA_GRPC",
            );
            return None;
        }
    };
    let cluster_name = ads_cluster_name(c, base, config)?;
    let clusters = raw
        .static_resources
        .as_ref()
        .map(|s| s.clusters.as_slice())
        .unwrap_or_default();
    let Some((i, cluster)) = clusters
        .iter()
        .enumerate()
        .find(|(_, cl)| cl.name == cluster_name)
    else {
        c.refuse(
            format!("{base}.grpc_services[0].envoy_grpc.cluster_name"),
            format!(
                "names cluster {cluster_name:?}, which is not in static_resources.clusters; add it there with the ADS server's address"
            ),
        );
        return None;
    };
    let at = format!("static_resources.clusters[{i}]");
    let address = ads_endpoint(c, &at, cluster)?;
    let tls = ads_tls(c, &at, cluster);
    if !cluster.transport_socket_matches.is_empty() {
        c.warn(
            &format!("{at}.transport_socket_matches"),
            "the ADS connection uses transport_socket",
        );
    }
    Some(AdsTarget {
        cluster: cluster_name,
        address,
        tls: tls?,
        delta,
        set_node_on_first_message_only: config.set_node_on_first_message_only,
    })
}

fn ads_cluster_name(c: &mut Checker, base: &str, config: &ApiConfigSource) -> Option<String> {
    if !config.cluster_names.is_empty() {
        c.refuse(
            format!("{base}.cluster_names"),
            "is for REST sources; name the cluster in grpc_services[0].envoy_grpc.cluster_name",
        );
    }
    let Some(service) = config.grpc_services.first() else {
        c.refuse(
            format!("{base}.grpc_services"),
            "needs one entry with envoy_grpc.cluster_name naming a static cluster",
        );
        return None;
    };
    if config.grpc_services.len() > 1 {
        c.warn(
            &format!("{base}.grpc_services[1]"),
            "only the first gRPC service is used, as in Envoy",
        );
    }
    match &service.target_specifier {
        Some(TargetSpecifier::EnvoyGrpc(grpc)) if !grpc.cluster_name.is_empty() => {
            Some(grpc.cluster_name.clone())
        }
        Some(TargetSpecifier::GoogleGrpc(_)) => {
            c.refuse(
                format!("{base}.grpc_services[0].google_grpc"),
                "is not supported by mizzen proxy; use envoy_grpc with a static cluster",
            );
            None
        }
        _ => {
            c.refuse(
                format!("{base}.grpc_services[0].envoy_grpc.cluster_name"),
                "is required: name the static cluster of the ADS server",
            );
            None
        }
    }
}

fn ads_endpoint(c: &mut Checker, at: &str, cluster: &Cluster) -> Option<Endpoint> {
    match &cluster.cluster_discovery_type {
        None => {}
        Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(*t) {
            Ok(DiscoveryType::Static | DiscoveryType::StrictDns | DiscoveryType::LogicalDns) => {}
            _ => {
                c.refuse(
                    format!("{at}.type"),
                    "must be STATIC, STRICT_DNS or LOGICAL_DNS for the ADS cluster",
                );
                return None;
            }
        },
        Some(ClusterDiscoveryType::ClusterType(_)) => {
            c.refuse(
                format!("{at}.cluster_type"),
                "is not supported for the ADS cluster; use type STATIC, STRICT_DNS or LOGICAL_DNS",
            );
            return None;
        }
    }
    let endpoints: Vec<(String, &Address)> = cluster
        .load_assignment
        .iter()
        .flat_map(|la| la.endpoints.iter().enumerate())
        .flat_map(|(e, locality)| {
            locality
                .lb_endpoints
                .iter()
                .enumerate()
                .filter_map(move |(l, lb)| match &lb.host_identifier {
                    Some(HostIdentifier::Endpoint(ep)) => ep.address.as_ref().map(|a| {
                        (
                            format!("{at}.load_assignment.endpoints[{e}].lb_endpoints[{l}].endpoint.address"),
                            a,
                        )
                    }),
                    _ => None,
                })
        })
        .collect();
    let Some((path, address)) = endpoints.first() else {
        c.refuse(
            format!("{at}.load_assignment"),
            "needs an endpoint with the ADS server's address (socket_address or pipe)",
        );
        return None;
    };
    if endpoints.len() > 1 {
        c.warn(
            &endpoints[1].0,
            "only the first endpoint of the ADS cluster is used",
        );
    }
    match &address.address {
        Some(AddressKind::SocketAddress(sa)) => {
            if sa.address.is_empty() {
                c.refuse(
                    format!("{path}.socket_address.address"),
                    "is required: the ADS server's IP address or host name",
                );
                return None;
            }
            let port = port(c, &format!("{path}.socket_address"), &sa.port_specifier)?;
            if port == 0 {
                c.refuse(
                    format!("{path}.socket_address.port_value"),
                    "is required: the ADS server's port",
                );
                return None;
            }
            Some(Endpoint::Tcp {
                host: sa.address.clone(),
                port,
            })
        }
        Some(AddressKind::Pipe(pipe)) => Some(Endpoint::Pipe(PathBuf::from(&pipe.path))),
        _ => {
            c.refuse(
                path.clone(),
                "must be a socket_address or a pipe for the ADS cluster",
            );
            None
        }
    }
}

/// `Some(None)`: plaintext; `Some(Some(tls))`: TLS; `None`: refused.
fn ads_tls(c: &mut Checker, at: &str, cluster: &Cluster) -> Option<Option<UpstreamTlsContext>> {
    let Some(socket) = &cluster.transport_socket else {
        return Some(None);
    };
    let Some(ConfigType::TypedConfig(any)) = &socket.config_type else {
        c.refuse(
            format!("{at}.transport_socket.typed_config"),
            "is required: an UpstreamTlsContext, or no transport_socket for plaintext",
        );
        return None;
    };
    let type_name = any.type_url.rsplit('/').next().unwrap_or_default();
    match type_name {
        "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext" => {
            match UpstreamTlsContext::decode(any.value.as_slice()) {
                Ok(tls) => Some(Some(tls)),
                Err(err) => {
                    c.refuse(
                        format!("{at}.transport_socket.typed_config"),
                        format!("does not decode as an UpstreamTlsContext: {err}"),
                    );
                    None
                }
            }
        }
        "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer" => Some(None),
        other => {
            c.refuse(
                format!("{at}.transport_socket.typed_config"),
                format!(
                    "has type {other}, which the ADS connection does not support; use an UpstreamTlsContext or no transport_socket"
                ),
            );
            None
        }
    }
}

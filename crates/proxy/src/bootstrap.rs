//! Envoy's bootstrap file, read the way Envoy 1.40 reads it, and the typed view the
//! rest of the proxy uses.
//!
//! It owns reading `-c FILE` (and `--config-yaml`), decoding it strictly into Envoy's
//! own `envoy.config.bootstrap.v3.Bootstrap`, deciding which fields the proxy honours,
//! and finding the ADS server. It does not connect anywhere (`xds` does) nor build
//! listeners or clusters from the static resources (the data plane will).
//!
//! A bootstrap travels:
//! 1. [`Bootstrap::load`] reads the file: JSON when the name ends in `.json`
//!    (serde_json, precise line and column), YAML otherwise (serde-saphyr); `.pb` and
//!    `.pb_text` are refused;
//! 2. the document is decoded with [`common::envoy_json::from_json`] (proto3 JSON:
//!    unknown fields and unknown `@type`s refused, errors naming the field path);
//! 3. `--config-yaml` is decoded the same way and merged over it with protobuf
//!    MergeFrom semantics, exactly as Envoy merges it (fields it sets win, messages
//!    merge, repeated fields are appended);
//! 4. `--service-node` / `--service-cluster` replace `node.id` / `node.cluster`;
//! 5. [`policy`] checks every field set against the table below, collects warnings,
//!    and extracts the admin address and the [`AdsTarget`].
//!
//! # Support table
//!
//! Field paths are Envoy's (proto field names). A field not listed at all is
//! refused, so that nothing new is ignored silently.
//!
//! | field | treatment |
//! | --- | --- |
//! | `node` (all of it: `id`, `cluster`, `metadata`, `locality`, ...) | used; sent to the ADS server. `id` and `cluster` are required when ADS is configured (as in Envoy); `--service-node`/`--service-cluster` override them |
//! | `admin.address` (`socket_address` with an IP) | used: the admin listener. A `pipe` address is refused |
//! | `admin.access_log`, `access_log_path`, `profile_path`, `socket_options`, `ignore_global_conn_limit` | warned and ignored |
//! | `admin.allow_paths` | refused (dropping it would serve more admin paths than asked) |
//! | `dynamic_resources.ads_config` | used: `api_type` `GRPC`/`AGGREGATED_GRPC` (state of the world) or `DELTA_GRPC`/`AGGREGATED_DELTA_GRPC` (delta); `REST` refused. The first `grpc_services[]` must be `envoy_grpc` naming a static cluster; `google_grpc` is refused; further services are warned about |
//! | `dynamic_resources.lds_config`, `cds_config` | only `ads: {}` (with `resource_api_version`, `initial_fetch_timeout`); a path, REST or gRPC source of its own is refused. Both are subscribed over ADS whatever they say |
//! | `dynamic_resources.lds_resources_locator`, `cds_resources_locator` | refused (xDS-TP) |
//! | `static_resources.clusters` | kept (the ADS cluster is read from here: `STATIC`, `STRICT_DNS` or `LOGICAL_DNS`, first endpoint of `load_assignment`, `socket_address` or `pipe`; `transport_socket` raw buffer or `UpstreamTlsContext`). Names must be unique |
//! | `static_resources.listeners` | kept for the data plane |
//! | `static_resources.secrets` | refused (certificates come from SDS) |
//! | `stats_config`, `stats_sinks`, `stats_flush_interval`, `stats_flush_on_admin`, `stats_eviction_interval`, `deferred_stat_options`, `stats_server_version_override`, `enable_dispatcher_stats` | warned and ignored (statistics) |
//! | `tracing`, `layered_runtime`, `overload_manager`, `cluster_manager`, `watchdog`, `watchdogs`, `fatal_actions`, `bootstrap_extensions`, `flags_path`, `node_context_params`, `inline_headers`, `dns_resolution_config`, `typed_dns_resolver_config`, `use_tcp_for_dns_lookups`, `default_regex_engine`, `perf_tracing_file_path`, `application_log_config`, `grpc_async_client_manager_config`, `memory_allocator_manager`, `enable_worker_cpu_affinity` | warned and ignored (they do not change routing) |
//! | `hds_config`, `config_sources`, `default_config_source`, `certificate_provider_instances`, `default_socket_interface`, `header_prefix`, `xds_delegate_extension`, `xds_config_tracker_extension`, `listener_manager` | refused |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use common::envoy_json::{self, EnvoyJsonError};
use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap as EnvoyBootstrap;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::UpstreamTlsContext;
use prost::Message as _;

use crate::config::Config;

pub mod isolated;
pub mod policy;

#[cfg(test)]
mod tests;

/// The full name of Envoy's bootstrap message.
pub const BOOTSTRAP_TYPE: &str = "envoy.config.bootstrap.v3.Bootstrap";

/// What the proxy takes from the bootstrap, plus the whole message.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    /// This proxy's node, with the `--service-node`/`--service-cluster` overrides.
    pub node: Node,
    /// The admin listener's address (`admin.address`), if the bootstrap has one.
    pub admin: Option<SocketAddr>,
    /// Where listeners, routes, clusters and endpoints come from (ADS), if
    /// configured.
    pub ads: Option<AdsTarget>,
    /// `static_resources.clusters`, including the ADS cluster.
    pub static_clusters: Vec<Cluster>,
    /// `static_resources.listeners`.
    pub static_listeners: Vec<Listener>,
    /// The merged bootstrap message as read (overrides applied to `node`).
    pub raw: EnvoyBootstrap,
    /// Fields that were accepted but are ignored, one sentence each.
    pub warnings: Vec<String>,
}

/// The ADS server: `dynamic_resources.ads_config` resolved through its static
/// cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct AdsTarget {
    /// The static cluster `ads_config.grpc_services[0].envoy_grpc.cluster_name`.
    pub cluster: String,
    /// The cluster's first endpoint.
    pub address: Endpoint,
    /// The cluster's `transport_socket`, when it is TLS.
    pub tls: Option<UpstreamTlsContext>,
    /// Delta xDS (`DELTA_GRPC`, `AGGREGATED_DELTA_GRPC`) rather than state of the
    /// world (`GRPC`, `AGGREGATED_GRPC`).
    pub delta: bool,
    /// `ads_config.set_node_on_first_message_only`.
    pub set_node_on_first_message_only: bool,
}

/// An upstream endpoint address as Envoy's bootstrap spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `socket_address`: an IP or a DNS name (`STRICT_DNS`/`LOGICAL_DNS` clusters),
    /// and a port.
    Tcp {
        /// IP address or host name.
        host: String,
        /// Port.
        port: u16,
    },
    /// `pipe`: a Unix domain socket path (istio-agent's `./etc/istio/proxy/XDS`).
    Pipe(PathBuf),
}

impl Endpoint {
    /// The socket address when the host is an IP literal.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Tcp { host, port } => host
                .parse::<std::net::IpAddr>()
                .ok()
                .map(|ip| SocketAddr::new(ip, *port)),
            Endpoint::Pipe(_) => None,
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
            Endpoint::Pipe(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Command-line replacements of node fields (Envoy's `--service-node`,
/// `--service-cluster`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeOverrides {
    /// Replaces `node.id`.
    pub id: Option<String>,
    /// Replaces `node.cluster`.
    pub cluster: Option<String>,
}

/// One bootstrap field the proxy will not run with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Envoy's field path (`dynamic_resources.ads_config.api_type`).
    pub field: String,
    /// Why, and what to do instead.
    pub reason: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bootstrap field `{}` {}", self.field, self.reason)
    }
}

/// Why the bootstrap could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The file could not be read.
    #[error("cannot read bootstrap file {}: {source}; check -c/--config-path", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file's format is one Envoy reads but the proxy does not.
    #[error(
        "bootstrap file {}: binary and text protobuf bootstraps are not supported; write it as YAML or JSON",
        path.display()
    )]
    Format {
        /// The file.
        path: PathBuf,
    },
    /// The text is not valid YAML or JSON.
    #[error("{origin}{}: not valid {format}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
    Syntax {
        /// The file name, or `--config-yaml`.
        origin: String,
        /// `YAML` or `JSON`.
        format: &'static str,
        /// The line of the error, when known (1-based).
        line: Option<u64>,
        /// The parser's message.
        message: String,
    },
    /// The document is empty or not a mapping.
    #[error(
        "{origin}: a bootstrap must be a mapping with fields such as node, admin, static_resources"
    )]
    NotAMapping {
        /// The file name, or `--config-yaml`.
        origin: String,
    },
    /// The document does not decode as an Envoy bootstrap.
    #[error("{origin}: not a valid Envoy bootstrap: {source}; fix or remove that field")]
    Invalid {
        /// The file name, or `--config-yaml`.
        origin: String,
        /// The decoding error, naming the field path.
        #[source]
        source: EnvoyJsonError,
    },
    /// Fields the proxy does not support, or inconsistent ADS settings.
    #[error("{origin}: {}", list(refusals))]
    Refused {
        /// The file name.
        origin: String,
        /// Every refused field, in document order.
        refusals: Vec<Refusal>,
    },
    /// The child process that read the bootstrap ([`isolated`]) refused it; the
    /// text is that process's error, word for word.
    #[error("{0}")]
    Reported(String),
}

/// One refusal on the same line; several as an indented list.
fn list(refusals: &[Refusal]) -> String {
    match refusals {
        [one] => one.to_string(),
        many => many.iter().fold(
            format!(
                "{} bootstrap fields mizzen proxy will not run with:",
                many.len()
            ),
            |acc, r| format!("{acc}\n  - {r}"),
        ),
    }
}

impl BootstrapError {
    /// The field paths this error is about (for refusals and decode errors).
    pub fn fields(&self) -> Vec<String> {
        match self {
            BootstrapError::Refused { refusals, .. } => {
                refusals.iter().map(|r| r.field.clone()).collect()
            }
            BootstrapError::Invalid { source, .. } if !source.path().is_empty() => {
                vec![source.path().to_owned()]
            }
            _ => Vec::new(),
        }
    }
}

impl Bootstrap {
    /// Reads the bootstrap at `path`, merges `overlay` (`--config-yaml`) over it and
    /// checks it, without node overrides.
    pub fn load(path: &Path, overlay: Option<&str>) -> Result<Bootstrap, BootstrapError> {
        Bootstrap::load_with(path, overlay, &NodeOverrides::default())
    }

    /// The bootstrap the flags describe: `-c`, `--config-yaml`, `--service-node`,
    /// `--service-cluster`.
    pub fn from_config(config: &Config) -> Result<Bootstrap, BootstrapError> {
        let overrides = NodeOverrides {
            id: config.service_node.clone(),
            cluster: config.service_cluster.clone(),
        };
        Bootstrap::load_with(
            &config.config_path,
            config.config_yaml.as_deref(),
            &overrides,
        )
    }

    /// [`Bootstrap::load`] with `--service-node`/`--service-cluster` overrides.
    pub fn load_with(
        path: &Path,
        overlay: Option<&str>,
        overrides: &NodeOverrides,
    ) -> Result<Bootstrap, BootstrapError> {
        let origin = path.display().to_string();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "pb" | "pb_text") {
            return Err(BootstrapError::Format {
                path: path.to_owned(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| BootstrapError::Read {
            path: path.to_owned(),
            source,
        })?;
        let value = if ext == "json" {
            parse_json(&origin, &text)?
        } else {
            parse_yaml(&origin, &text)?
        };
        let mut raw = decode(&origin, &value)?;
        if let Some(overlay) = overlay {
            let origin = "--config-yaml";
            let patch = decode(origin, &parse_yaml(origin, overlay)?)?;
            raw = merge(&raw, &patch).map_err(|source| BootstrapError::Invalid {
                origin: origin.to_owned(),
                source,
            })?;
        }
        Bootstrap::from_proto(&origin, raw, overrides)
    }

    /// Checks an already decoded bootstrap (`origin` names it in errors) and builds
    /// the typed view.
    pub fn from_proto(
        origin: &str,
        mut raw: EnvoyBootstrap,
        overrides: &NodeOverrides,
    ) -> Result<Bootstrap, BootstrapError> {
        let node = raw.node.get_or_insert_with(Node::default);
        if let Some(id) = &overrides.id {
            node.id.clone_from(id);
        }
        if let Some(cluster) = &overrides.cluster {
            node.cluster.clone_from(cluster);
        }
        let checked = policy::check(&raw).map_err(|refusals| BootstrapError::Refused {
            origin: origin.to_owned(),
            refusals,
        })?;
        Ok(Bootstrap::assemble(raw, checked))
    }

    /// A bootstrap that [`Bootstrap::from_proto`] accepted in another process
    /// ([`isolated`]): node overrides applied and `warnings` collected there. Only
    /// the admin address and the ADS target are extracted again, which needs no
    /// descriptor pool.
    pub fn from_accepted(
        origin: &str,
        raw: EnvoyBootstrap,
        warnings: Vec<String>,
    ) -> Result<Bootstrap, BootstrapError> {
        let checked =
            policy::extract(&raw, warnings).map_err(|refusals| BootstrapError::Refused {
                origin: origin.to_owned(),
                refusals,
            })?;
        Ok(Bootstrap::assemble(raw, checked))
    }

    fn assemble(raw: EnvoyBootstrap, checked: policy::Checked) -> Bootstrap {
        let statics = raw.static_resources.clone().unwrap_or_default();
        Bootstrap {
            node: raw.node.clone().unwrap_or_default(),
            admin: checked.admin,
            ads: checked.ads,
            static_clusters: statics.clusters,
            static_listeners: statics.listeners,
            raw,
            warnings: checked.warnings,
        }
    }

    /// One line for the log: node, admin, ADS server and mode, static resources.
    pub fn summary(&self) -> String {
        let admin = self
            .admin
            .map_or_else(|| "none".to_owned(), |a| a.to_string());
        let ads = match &self.ads {
            Some(ads) => format!(
                "{} via cluster {} ({}, {})",
                ads.address,
                ads.cluster,
                if ads.delta {
                    "delta"
                } else {
                    "state of the world"
                },
                if ads.tls.is_some() {
                    "TLS"
                } else {
                    "plaintext"
                },
            ),
            None => "none".to_owned(),
        };
        format!(
            "node {:?} cluster {:?}; admin {admin}; ADS {ads}; {} static cluster(s), {} static listener(s)",
            self.node.id,
            self.node.cluster,
            self.static_clusters.len(),
            self.static_listeners.len(),
        )
    }
}

fn parse_json(origin: &str, text: &str) -> Result<serde_json::Value, BootstrapError> {
    serde_json::from_str(text).map_err(|err| BootstrapError::Syntax {
        origin: origin.to_owned(),
        format: "JSON",
        line: Some(err.line() as u64).filter(|l| *l > 0),
        message: err.to_string(),
    })
}

fn parse_yaml(origin: &str, text: &str) -> Result<serde_json::Value, BootstrapError> {
    serde_saphyr::from_str::<serde_json::Value>(text).map_err(|err| BootstrapError::Syntax {
        origin: origin.to_owned(),
        format: "YAML",
        line: err.location().map(|l| l.line()).filter(|l| *l > 0),
        message: err.to_string(),
    })
}

fn decode(origin: &str, value: &serde_json::Value) -> Result<EnvoyBootstrap, BootstrapError> {
    if !value.is_object() {
        return Err(BootstrapError::NotAMapping {
            origin: origin.to_owned(),
        });
    }
    envoy_json::from_json(BOOTSTRAP_TYPE, value).map_err(|source| BootstrapError::Invalid {
        origin: origin.to_owned(),
        source,
    })
}

/// Protobuf MergeFrom, as Envoy applies `--config-yaml`: decoding the
/// concatenation of two encodings merges the second into the first.
fn merge(base: &EnvoyBootstrap, patch: &EnvoyBootstrap) -> Result<EnvoyBootstrap, EnvoyJsonError> {
    let mut bytes = base.encode_to_vec();
    patch
        .encode(&mut bytes)
        .map_err(|err| EnvoyJsonError::Invalid {
            type_name: BOOTSTRAP_TYPE.to_owned(),
            path: String::new(),
            message: err.to_string(),
        })?;
    EnvoyBootstrap::decode(bytes.as_slice()).map_err(|source| EnvoyJsonError::Decode {
        type_name: BOOTSTRAP_TYPE.to_owned(),
        source,
    })
}

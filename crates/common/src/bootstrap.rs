//! The Envoy bootstrap a sidecar (or gateway) starts with, as istio-agent
//! writes it: the node (id `sidecar~IP~POD.NS~NS.svc.cluster.local`, `router~…`
//! for a gateway, and Istio's metadata),
//! ADS to pilot through the static `xds-grpc` cluster, and the admin interface.
//! With an SDS socket (a stock Envoy beside `proxy agent`) it also has the
//! `sds-grpc` cluster, a pipe to that socket, where pilot's TLS contexts ask for
//! the `default` and `ROOTCA` secrets. Mizzen's proxy needs no `sds-grpc`: it
//! gets its certificate from the CA itself.
//!
//! Pilot's address may be an IP (a `STATIC` cluster) or a DNS name such as
//! `pilot.istio-system.svc:15010` (a `STRICT_DNS` cluster, as in a pod).
//!
//! Both data planes read the same JSON (Envoy picks the format by the `.json`
//! extension).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde_json::{Value, json};

/// Who the sidecar is and where its control plane is.
#[derive(Debug, Clone)]
pub struct Sidecar {
    /// The pod's name.
    pub pod: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's IP.
    pub ip: IpAddr,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// The pod's service account.
    pub service_account: String,
    /// Pilot's ADS address.
    pub xds: XdsAddress,
    /// Delta xDS (`DELTA_GRPC`, Istio's default) rather than state of the world.
    pub delta: bool,
    /// Envoy's admin address (Istio: 127.0.0.1:15000).
    pub admin: SocketAddr,
    /// istio-agent's SDS socket, for a stock Envoy; `None` for Mizzen's proxy.
    pub sds_socket: Option<PathBuf>,
    /// A gateway (`router~…`) rather than a sidecar.
    pub router: bool,
    /// For a stock Envoy: Istio's health port (15021), a static listener whose
    /// `/healthz/ready` answers with Envoy's own admin `/ready` (200 once the
    /// first xDS round is in), as Istio's bootstrap routes it to the agent,
    /// which asks Envoy. Mizzen's proxy serves the port itself
    /// (`--health-addr`).
    pub health_port: Option<u16>,
    /// Whether the pod's traffic is captured (iptables, Istio's `REDIRECT`).
    /// Without capture the node says `INTERCEPTION_MODE: NONE`, so pilot
    /// serves only the listeners the pod's Sidecar binds, and the health
    /// listener binds the pod's IP rather than every address, so pods
    /// sharing a network (loopback addresses on one host) do not collide.
    pub capture: bool,
    /// Extra node metadata, e.g. istio-agent's `ISTIO_META_*` environment
    /// with the prefix removed; the fields above win over these.
    pub metadata: BTreeMap<String, String>,
}

/// Pilot's ADS address: an IP or a DNS name, and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdsAddress {
    /// IP address or DNS name.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl XdsAddress {
    /// Whether the host is an IP literal (else a DNS name).
    pub fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }
}

impl From<SocketAddr> for XdsAddress {
    fn from(addr: SocketAddr) -> XdsAddress {
        XdsAddress {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

impl std::str::FromStr for XdsAddress {
    type Err = String;

    /// `host:port`, `ip:port` or `[ipv6]:port`.
    fn from_str(s: &str) -> Result<XdsAddress, String> {
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(addr.into());
        }
        let bad = || format!("{s:?} is not HOST:PORT (e.g. pilot.istio-system.svc:15010)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(bad)?;
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !valid {
            return Err(bad());
        }
        Ok(XdsAddress {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for XdsAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Sidecar {
    /// The node id pilot reads the proxy's type, IP and pod from.
    pub fn node_id(&self) -> String {
        format!(
            "{kind}~{ip}~{pod}.{ns}~{ns}.svc.cluster.local",
            kind = if self.router { "router" } else { "sidecar" },
            ip = self.ip,
            pod = self.pod,
            ns = self.namespace
        )
    }

    /// The service cluster (`app.namespace`, as istio-agent names it).
    pub fn cluster(&self) -> String {
        let app = self
            .labels
            .get("app")
            .cloned()
            .unwrap_or_else(|| self.pod.clone());
        format!("{app}.{}", self.namespace)
    }

    /// The bootstrap, as JSON.
    pub fn bootstrap(&self) -> Value {
        let mut xds = static_cluster(
            "xds-grpc",
            json!({"socket_address": {"address": self.xds.host, "port_value": self.xds.port}}),
        );
        if !self.xds.is_ip() {
            xds["type"] = json!("STRICT_DNS");
        }
        let mut clusters = vec![xds];
        if let Some(socket) = &self.sds_socket {
            clusters.push(static_cluster(
                "sds-grpc",
                json!({"pipe": {"path": socket.display().to_string()}}),
            ));
        }
        let mut listeners = Vec::new();
        if let Some(port) = self.health_port {
            clusters.push(static_cluster(
                "agent-admin",
                json!({"socket_address": {"address": self.admin.ip().to_string(), "port_value": self.admin.port()}}),
            ));
            // The admin interface speaks HTTP/1.1.
            if let Some(c) = clusters.last_mut().and_then(|c| c.as_object_mut()) {
                c.remove("typed_extension_protocol_options");
            }
            let bind = if self.capture {
                "0.0.0.0".to_string()
            } else {
                self.ip.to_string()
            };
            listeners.push(health_listener(&bind, port));
        }
        let mut metadata: serde_json::Map<String, Value> = self
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        for (k, v) in [
            ("NAMESPACE", json!(self.namespace)),
            ("LABELS", json!(self.labels)),
            ("INSTANCE_IPS", json!(self.ip.to_string())),
            ("SERVICE_ACCOUNT", json!(self.service_account)),
            ("WORKLOAD_NAME", json!(self.pod)),
            ("CLUSTER_ID", json!("Kubernetes")),
            (
                "INTERCEPTION_MODE",
                json!(if self.capture { "REDIRECT" } else { "NONE" }),
            ),
        ] {
            metadata.insert(k.into(), v);
        }
        json!({
            "node": {
                "id": self.node_id(),
                "cluster": self.cluster(),
                "metadata": metadata,
            },
            "dynamic_resources": {
                "ads_config": {
                    "api_type": if self.delta { "DELTA_GRPC" } else { "GRPC" },
                    "transport_api_version": "V3",
                    "set_node_on_first_message_only": true,
                    "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}],
                },
                "cds_config": {"ads": {}, "resource_api_version": "V3"},
                "lds_config": {"ads": {}, "resource_api_version": "V3"},
            },
            "static_resources": {"clusters": clusters, "listeners": listeners},
            "admin": {
                "address": {"socket_address": {
                    "address": self.admin.ip().to_string(),
                    "port_value": self.admin.port(),
                }},
            },
        })
    }
}

/// The health listener on `bind:port`: `/healthz/ready` → the admin's `/ready`.
fn health_listener(bind: &str, port: u16) -> Value {
    json!({
        "name": "health",
        "address": {"socket_address": {"address": bind, "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "health",
                "route_config": {"virtual_hosts": [{
                    "name": "health",
                    "domains": ["*"],
                    "routes": [{
                        "match": {"path": "/healthz/ready"},
                        "route": {"cluster": "agent-admin", "prefix_rewrite": "/ready"},
                    }],
                }]},
                "http_filters": [{
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }],
            },
        }]}],
    })
}

/// A static HTTP/2 cluster with one endpoint at `address`.
fn static_cluster(name: &str, address: Value) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            },
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sidecar(sds: Option<&str>) -> Sidecar {
        Sidecar {
            pod: "reviews-v2".into(),
            namespace: "default".into(),
            ip: "10.77.0.5".parse().unwrap(),
            labels: [("app", "reviews"), ("version", "v2")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            service_account: "bookinfo-reviews".into(),
            xds: "10.77.0.1:15010".parse().unwrap(),
            metadata: BTreeMap::new(),
            delta: true,
            admin: "127.0.0.1:15000".parse().unwrap(),
            sds_socket: sds.map(PathBuf::from),
            router: false,
            health_port: None,
            capture: true,
        }
    }

    #[test]
    fn without_capture_the_node_says_so_and_health_binds_the_pod_ip() {
        let mut envoy = sidecar(Some("/run/pod/sds.sock"));
        envoy.health_port = Some(15021);
        assert_eq!(
            envoy.bootstrap()["node"]["metadata"]["INTERCEPTION_MODE"],
            "REDIRECT"
        );
        envoy.capture = false;
        let b = envoy.bootstrap();
        assert_eq!(b["node"]["metadata"]["INTERCEPTION_MODE"], "NONE");
        assert_eq!(
            b["static_resources"]["listeners"][0]["address"]["socket_address"]["address"],
            "10.77.0.5"
        );
    }

    #[test]
    fn the_node_is_named_as_istio_agent_names_it() {
        let b = sidecar(None).bootstrap();
        assert_eq!(
            b["node"]["id"],
            "sidecar~10.77.0.5~reviews-v2.default~default.svc.cluster.local"
        );
        assert_eq!(b["node"]["cluster"], "reviews.default");
        assert_eq!(b["node"]["metadata"]["LABELS"]["version"], "v2");
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 1, "no sds-grpc without a socket");
        assert_eq!(
            clusters[0]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"],
            15010
        );
    }

    #[test]
    fn a_health_port_routes_ready_to_the_admin() {
        let mut envoy = sidecar(Some("/run/pod/sds.sock"));
        envoy.health_port = Some(15021);
        let b = envoy.bootstrap();
        let listener = &b["static_resources"]["listeners"][0];
        assert_eq!(listener["address"]["socket_address"]["port_value"], 15021);
        let route = &listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
            [0]["routes"][0];
        assert_eq!(route["route"]["prefix_rewrite"], "/ready");
        let admin = &b["static_resources"]["clusters"][2];
        assert_eq!(admin["name"], "agent-admin");
        assert!(admin.get("typed_extension_protocol_options").is_none());
        assert_eq!(
            sidecar(None).bootstrap()["static_resources"]["listeners"],
            json!([])
        );
    }

    #[test]
    fn a_gateway_is_a_router() {
        let mut gw = sidecar(None);
        gw.router = true;
        assert!(
            gw.node_id().starts_with("router~10.77.0.5~"),
            "{}",
            gw.node_id()
        );
    }

    #[test]
    fn an_sds_socket_adds_the_sds_grpc_pipe() {
        let b = sidecar(Some("/run/pod/sds.sock")).bootstrap();
        let sds = &b["static_resources"]["clusters"][1];
        assert_eq!(sds["name"], "sds-grpc");
        assert_eq!(
            sds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
                ["path"],
            "/run/pod/sds.sock"
        );
    }

    #[test]
    fn a_dns_name_makes_a_strict_dns_cluster_and_metadata_is_merged() {
        let mut pod = sidecar(None);
        pod.xds = "pilot.istio-system.svc:15010".parse().unwrap();
        pod.metadata = [("DNS_CAPTURE", "true"), ("NAMESPACE", "spoofed")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .into();
        let b = pod.bootstrap();
        let xds = &b["static_resources"]["clusters"][0];
        assert_eq!(xds["type"], "STRICT_DNS");
        assert_eq!(
            xds["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
                ["address"],
            "pilot.istio-system.svc"
        );
        assert_eq!(b["node"]["metadata"]["DNS_CAPTURE"], "true");
        assert_eq!(b["node"]["metadata"]["NAMESPACE"], "default");
        assert_eq!(
            sidecar(None).bootstrap()["static_resources"]["clusters"][0]["type"],
            "STATIC"
        );
        for bad in ["pilot", "pilot:0", ":15010", "pi lot:1", "pilot:x"] {
            assert!(bad.parse::<XdsAddress>().is_err(), "{bad}");
        }
        let v6: XdsAddress = "[fd00::1]:15010".parse().unwrap();
        assert!(v6.is_ip());
        assert_eq!(v6.to_string(), "[fd00::1]:15010");
    }
}

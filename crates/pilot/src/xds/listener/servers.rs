//! The Gateway servers of a gateway proxy, merged by port the way Istio's
//! `MergeGateways` does: every Gateway whose `selector` matches the proxy's
//! labels contributes (Gateways in any namespace: Istio's
//! `PILOT_SCOPE_GATEWAY_TO_NAMESPACE=false`), servers are grouped by bind
//! address and port, and a port keeps the protocol family of its first server
//! (plain HTTP, TLS-based, or TCP); later servers of another family are left
//! out with a warning. Listener and route names follow Istio's.

use std::collections::BTreeMap;

use common::istio::networking::{GatewaySpec, Server, ServerTlsMode};
use common::resource::Resource;

use crate::xds::route::scope::{Scope, namespace};
use crate::xds::route::util::labels_match;

/// What a server does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    /// Plain HTTP (`HTTP`, `HTTP2`, `GRPC`, `GRPC-WEB`), routed by `http.PORT`.
    Http,
    /// TLS terminated, then HTTP (`HTTPS` with SIMPLE, MUTUAL, …), routed by
    /// `https.PORT.NAME.GATEWAY.NAMESPACE`.
    Https,
    /// TLS forwarded as is, routed by SNI (`PASSTHROUGH`, `AUTO_PASSTHROUGH`).
    TlsPassthrough,
    /// TLS terminated, then TCP (`TLS` with SIMPLE, MUTUAL, …).
    TlsTerminated,
    /// Opaque TCP (`TCP`, `MONGO`, …).
    Tcp,
}

impl ServerKind {
    /// Reads a server's protocol and TLS mode; `None` for a server Istio's
    /// validation would refuse (HTTPS without TLS settings).
    pub fn of(server: &Server) -> Option<ServerKind> {
        let passthrough = server.tls.as_ref().is_some_and(|t| {
            matches!(
                t.mode,
                None | Some(ServerTlsMode::Passthrough) | Some(ServerTlsMode::AutoPassthrough)
            )
        });
        Some(match server.port.protocol.to_ascii_uppercase().as_str() {
            "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => ServerKind::Http,
            "HTTPS" => {
                server.tls.as_ref()?;
                if passthrough {
                    ServerKind::TlsPassthrough
                } else {
                    ServerKind::Https
                }
            }
            "TLS" => {
                if server.tls.is_none() || passthrough {
                    ServerKind::TlsPassthrough
                } else {
                    ServerKind::TlsTerminated
                }
            }
            _ => ServerKind::Tcp,
        })
    }

    fn family(self) -> u8 {
        match self {
            ServerKind::Http => 0,
            ServerKind::Https | ServerKind::TlsPassthrough | ServerKind::TlsTerminated => 1,
            ServerKind::Tcp => 2,
        }
    }
}

/// One server of one Gateway.
#[derive(Debug, Clone)]
pub struct GatewayServer<'a> {
    /// The Gateway resource.
    pub gateway: &'a Resource,
    /// The server.
    pub server: &'a Server,
    /// What it does.
    pub kind: ServerKind,
}

impl<'a> GatewayServer<'a> {
    /// The Gateway as VirtualServices name it: `namespace/name`.
    pub fn gateway_key(&self) -> String {
        format!("{}/{}", namespace(self.gateway), self.gateway.name())
    }

    /// The server's hosts as `(namespace, host)`: `*` when no namespace is
    /// given, the Gateway's for `.`.
    pub fn hosts(&self) -> Vec<(String, String)> {
        let gw_ns = namespace(self.gateway);
        self.server
            .hosts
            .iter()
            .map(|h| match h.split_once('/') {
                Some((".", host)) => (gw_ns.to_string(), host.to_string()),
                Some((ns, host)) => (ns.to_string(), host.to_string()),
                None => ("*".to_string(), h.clone()),
            })
            .collect()
    }

    /// The hosts a VirtualService in `vs_namespace` may bind to (Istio's
    /// `NamesForNamespace`).
    pub fn hosts_for_namespace(&self, vs_namespace: &str) -> Vec<String> {
        self.hosts()
            .into_iter()
            .filter(|(ns, _)| ns == "*" || ns == vs_namespace)
            .map(|(_, h)| h)
            .collect()
    }

    /// The hosts without their namespaces (SNI names of the filter chain).
    pub fn plain_hosts(&self) -> Vec<String> {
        self.hosts().into_iter().map(|(_, h)| h).collect()
    }

    /// The RDS name of an HTTPS server (Istio's
    /// `https.PORT.PORTNAME.GATEWAY.NAMESPACE[.BIND]`).
    pub fn https_route_name(&self) -> String {
        let mut name = format!(
            "https.{}.{}.{}.{}",
            self.server.port.number,
            self.server.port.name,
            self.gateway.name(),
            namespace(self.gateway)
        );
        if let Some(bind) = self.server.bind.as_deref().filter(|b| !b.is_empty()) {
            name.push('.');
            name.push_str(bind);
        }
        name
    }
}

/// The servers of one listener.
#[derive(Debug, Clone)]
pub struct PortServers<'a> {
    /// The bind address (`0.0.0.0` unless a server sets `bind`).
    pub bind: String,
    /// The port.
    pub port: u32,
    /// The servers, in Gateway config order.
    pub servers: Vec<GatewayServer<'a>>,
}

impl PortServers<'_> {
    /// Istio's listener name: `0.0.0.0_8080`.
    pub fn listener_name(&self) -> String {
        format!("{}_{}", self.bind, self.port)
    }

    /// The RDS name of the plain HTTP servers: `http.PORT[.BIND]`.
    pub fn http_route_name(&self) -> String {
        http_route_name(self.port, &self.bind)
    }
}

/// `http.PORT`, with `.BIND` when the servers bind somewhere specific.
pub fn http_route_name(port: u32, bind: &str) -> String {
    if bind == "0.0.0.0" || bind.is_empty() {
        format!("http.{port}")
    } else {
        format!("http.{port}.{bind}")
    }
}

/// The Gateways whose selector matches the proxy (an empty selector matches
/// every gateway proxy), in config order.
pub fn gateways_for<'a>(scope: &Scope<'a>) -> Vec<(&'a Resource, &'a GatewaySpec)> {
    scope
        .snapshot
        .gateways()
        .filter(|(_, g)| labels_match(&g.selector, &scope.proxy.labels))
        .collect()
}

/// The proxy's servers grouped by (bind, port), ordered by port then bind.
pub fn port_servers<'a>(scope: &Scope<'a>) -> Vec<PortServers<'a>> {
    let mut groups: BTreeMap<(u32, String), PortServers<'a>> = BTreeMap::new();
    for (gateway, spec) in gateways_for(scope) {
        for server in &spec.servers {
            let Some(kind) = ServerKind::of(server) else {
                tracing::warn!(gateway = %gateway.name(), port = server.port.number, "server has protocol HTTPS but no tls settings; left out");
                continue;
            };
            if server.port.number == 0 {
                continue;
            }
            let bind = server
                .bind
                .clone()
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into());
            let group = groups
                .entry((server.port.number, bind.clone()))
                .or_insert_with(|| PortServers {
                    bind,
                    port: server.port.number,
                    servers: Vec::new(),
                });
            if let Some(first) = group.servers.first()
                && first.kind.family() != kind.family()
            {
                tracing::warn!(
                    gateway = %gateway.name(),
                    port = server.port.number,
                    "server's protocol conflicts with another server on the same port; left out"
                );
                continue;
            }
            group.servers.push(GatewayServer {
                gateway,
                server,
                kind,
            });
        }
    }
    groups.into_values().collect()
}

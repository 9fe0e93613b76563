//! Gateway checks, and the VirtualService checks that go through a Gateway.
//!
//! VirtualServices must name Gateways that exist (IST0101) and share a host with
//! them (IST0132), and claim-based routing at a gateway needs a
//! RequestAuthentication on its pods (IST0149). Gateways must not claim the same
//! selector, port and host as another (IST0145); when the input holds the gateway's
//! pods, the selector must match them (IST0101) and their Service must expose the
//! server ports (IST0162); when it holds Secrets, `credentialName` must name a
//! usable one (IST0101, IST0161).

use std::collections::BTreeMap;

use common::istio::networking::GatewaySpec;
use common::path::Path;
use common::resource::Resource;
use serde_json::Value;

use super::service::{go_list, root_namespace, selector_string};
use super::{Analyzer, Report, Snapshot, Workload, selects, string_map};
use crate::message::codes;

pub(super) fn analyzers() -> Vec<Box<dyn Analyzer>> {
    vec![
        Box::new(VirtualServiceGatewayAnalyzer),
        Box::new(JwtClaimRouteAnalyzer),
        Box::new(ConflictingGatewayAnalyzer),
        Box::new(IngressGatewayPortAnalyzer),
        Box::new(SecretAnalyzer),
    ]
}

/// Where a VirtualService's gateway reference points: `ns/name`, a short `name` in
/// the VirtualService's namespace, or the legacy `name.ns[.svc.cluster.local]`.
fn gateway_ref<'g>(reference: &'g str, vs_ns: &'g str) -> (&'g str, &'g str) {
    if let Some((ns, name)) = reference.split_once('/') {
        return (ns, name);
    }
    let mut labels = reference.split('.');
    match (labels.next(), labels.next()) {
        (Some(name), Some(ns)) => (ns, name),
        _ => (vs_ns, reference),
    }
}

fn find_gateway<'a>(
    snap: &Snapshot<'a>,
    ns: &str,
    name: &str,
) -> Option<(&'a Resource, &'a GatewaySpec)> {
    snap.gateways()
        .find(|(r, _)| snap.ns(r) == ns && r.name() == name)
}

/// IST0101 for gateways that do not exist; IST0132 when none of the
/// VirtualService's hosts is served by the gateway.
struct VirtualServiceGatewayAnalyzer;

impl Analyzer for VirtualServiceGatewayAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.GatewayAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        for (r, vs) in snap.virtual_services() {
            let vs_ns = snap.ns(r);
            // The VirtualService's gateways, then the per-match overrides.
            let mut refs: Vec<(&str, Path, bool)> = vs
                .gateways
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    (
                        g.as_str(),
                        Path::root("spec").field("gateways").index(i),
                        true,
                    )
                })
                .collect();
            for (i, h) in vs.http.iter().enumerate() {
                for (j, m) in h.r#match.iter().enumerate() {
                    for (k, g) in m.gateways.iter().enumerate() {
                        let at = Path::root("spec")
                            .field("http")
                            .index(i)
                            .field("match")
                            .index(j);
                        refs.push((g.as_str(), at.field("gateways").index(k), false));
                    }
                }
            }
            for (reference, path, top_level) in refs {
                if reference == "mesh" {
                    continue;
                }
                let (ns, name) = gateway_ref(reference, vs_ns);
                let Some((_, gw)) = find_gateway(snap, ns, name) else {
                    report.add(
                        codes::REFERENCED_RESOURCE_NOT_FOUND,
                        r,
                        Some(path),
                        format!("Referenced gateway not found: {reference:?}"),
                    );
                    continue;
                };
                if top_level
                    && !vs.hosts.is_empty()
                    && !vs_host_in_gateway(gw, ns, &vs.hosts, vs_ns)
                {
                    report.add(
                        codes::VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
                        r,
                        Some(path),
                        format!(
                            "one or more host {} defined in VirtualService {vs_ns}/{} not found in Gateway {ns}/{name}.",
                            go_list(&vs.hosts),
                            r.name()
                        ),
                    );
                }
            }
        }
    }
}

/// Whether a gateway server host visible to `vs_ns` overlaps one of `vs_hosts`.
fn vs_host_in_gateway(gw: &GatewaySpec, gw_ns: &str, vs_hosts: &[String], vs_ns: &str) -> bool {
    gw.servers.iter().flat_map(|s| &s.hosts).any(|h| {
        let host = match h.split_once('/') {
            Some((".", host)) if gw_ns == vs_ns => host,
            Some(("*", host)) => host,
            Some((ns, host)) if ns == vs_ns => host,
            Some(_) => return false,
            None => h.as_str(),
        };
        vs_hosts.iter().any(|v| common::host::overlap(host, v))
    })
}

/// IST0149: a VirtualService bound to a gateway matches on `@request.auth.claims`
/// headers, but some of the gateway's pods have no RequestAuthentication (in their
/// namespace or the root namespace) to validate the JWT and expose its claims.
struct JwtClaimRouteAnalyzer;

const CLAIM_HEADER: &str = "@request.auth.claims";

impl Analyzer for JwtClaimRouteAnalyzer {
    fn name(&self) -> &'static str {
        "virtualservice.JWTClaimRouteAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let root = root_namespace(snap);
        let workloads = snap.workloads();
        for (r, vs) in snap.virtual_services() {
            let Some((key, key_path)) = claim_route_key(vs) else {
                continue;
            };
            let vs_ns = snap.ns(r);
            for g in vs.gateways.iter().filter(|g| *g != "mesh") {
                let (ns, name) = gateway_ref(g, vs_ns);
                let Some((_, gw)) = find_gateway(snap, ns, name) else {
                    continue; // reported by the gateway analyzer
                };
                for pod in workloads
                    .iter()
                    .filter(|w| selects(&gw.selector, &w.labels))
                {
                    let authenticated = snap.request_authentications().any(|(ra_r, ra)| {
                        let ra_ns = snap.ns(ra_r);
                        (ra_ns == root || ra_ns == pod.namespace)
                            && ra
                                .selector
                                .as_ref()
                                .is_none_or(|s| selects(&s.match_labels, &pod.labels))
                    });
                    if authenticated {
                        continue;
                    }
                    report.add(
                        codes::JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTHN,
                        r,
                        Some(key_path.clone()),
                        format!(
                            "The virtual service uses the JWT claim based routing (key: {key}) but found no request authentication for the gateway ({ns}/{name}) pod ({}). The request authentication must first be applied for the gateway pods to validate the JWT token and make the claims available for routing.",
                            pod.resource.name()
                        ),
                    );
                }
            }
        }
    }
}

/// The first header (or withoutHeaders) key routing on a JWT claim, with its path.
fn claim_route_key(vs: &common::istio::networking::VirtualServiceSpec) -> Option<(&str, Path)> {
    for (i, h) in vs.http.iter().enumerate() {
        for (j, m) in h.r#match.iter().enumerate() {
            let at = Path::root("spec")
                .field("http")
                .index(i)
                .field("match")
                .index(j);
            for (field, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                if let Some(k) = map.keys().find(|k| k.starts_with(CLAIM_HEADER)) {
                    return Some((k.as_str(), at.field(field).key(k)));
                }
            }
        }
    }
    None
}

/// IST0145: two Gateways with the same selector serving overlapping hosts on the
/// same port; the proxy cannot tell which one applies.
struct ConflictingGatewayAnalyzer;

impl Analyzer for ConflictingGatewayAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.ConflictingGatewayAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        // (selector, port) → [(gateway full name, hosts)].
        let mut by_key: BTreeMap<(String, u32), Vec<ServerHosts<'_>>> = BTreeMap::new();
        for (r, gw) in snap.gateways() {
            let full = format!("{}/{}", snap.ns(r), r.name());
            for s in &gw.servers {
                by_key
                    .entry((selector_string(&gw.selector), s.port.number))
                    .or_default()
                    .push((full.clone(), s.hosts.iter().map(|h| bare_host(h)).collect()));
            }
        }
        for (r, gw) in snap.gateways() {
            let full = format!("{}/{}", snap.ns(r), r.name());
            let selector = selector_string(&gw.selector);
            for (i, s) in gw.servers.iter().enumerate() {
                let Some(others) = by_key.get(&(selector.clone(), s.port.number)) else {
                    continue;
                };
                let mut conflicts: Vec<&str> = others
                    .iter()
                    .filter(|(name, hosts)| {
                        *name != full
                            && s.hosts.iter().any(|h| {
                                hosts.iter().any(|o| common::host::overlap(bare_host(h), o))
                            })
                    })
                    .map(|(name, _)| name.as_str())
                    .collect();
                conflicts.sort_unstable();
                conflicts.dedup();
                if conflicts.is_empty() {
                    continue;
                }
                report.add(
                    codes::CONFLICTING_GATEWAYS,
                    r,
                    Some(Path::root("spec").field("servers").index(i)),
                    format!(
                        "Conflict with gateways {} (workload selector {selector}, port {}, hosts {}).",
                        conflicts.join(","),
                        s.port.number,
                        s.hosts.join(",")
                    ),
                );
            }
        }
    }
}

/// A gateway's full name and the hosts of one of its servers.
type ServerHosts<'a> = (String, Vec<&'a str>);

/// A server host without its `namespace/` prefix.
fn bare_host(h: &str) -> &str {
    h.split_once('/').map_or(h, |(_, host)| host)
}

/// Whether the input describes the gateway's pods at all: some workload carries
/// every key of the selector. Without them, a selector cannot be judged (the
/// gateway deployment is usually installed separately from the routing config).
fn gateway_pods_described(selector: &BTreeMap<String, String>, workloads: &[Workload<'_>]) -> bool {
    workloads
        .iter()
        .any(|w| selector.keys().all(|k| w.labels.contains_key(k)))
}

/// IST0101 for a gateway selector that matches none of the gateway pods given;
/// IST0162 for a server port that no Service in front of those pods targets.
struct IngressGatewayPortAnalyzer;

impl Analyzer for IngressGatewayPortAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.IngressGatewayPortAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let workloads = snap.workloads();
        for (r, gw) in snap.gateways() {
            if gw.selector.is_empty() || !gateway_pods_described(&gw.selector, &workloads) {
                continue;
            }
            let selector = selector_string(&gw.selector);
            let pods: Vec<&Workload<'_>> = workloads
                .iter()
                .filter(|w| selects(&gw.selector, &w.labels))
                .collect();
            if pods.is_empty() {
                let first = gw.selector.keys().next().map(String::as_str).unwrap_or("");
                report.add(
                    codes::REFERENCED_RESOURCE_NOT_FOUND,
                    r,
                    Some(Path::root("spec").field("selector").key(first)),
                    format!("Referenced selector not found: {selector:?}"),
                );
                continue;
            }
            // Target ports of the Services selecting the gateway pods.
            let mut ports: Option<Vec<u64>> = None;
            for (svc_r, svc) in snap.kube("", "Service") {
                let svc_selector = string_map(svc.pointer("/spec/selector"));
                let fronts = !svc_selector.is_empty()
                    && pods.iter().any(|p| {
                        p.namespace == snap.ns(svc_r) && selects(&svc_selector, &p.labels)
                    });
                if !fronts {
                    continue;
                }
                let list = ports.get_or_insert_with(Vec::new);
                for p in svc
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    if protocol != "TCP" {
                        continue;
                    }
                    let target = p.get("targetPort").and_then(Value::as_u64);
                    if let Some(n) = target.or_else(|| p.get("port").and_then(Value::as_u64)) {
                        list.push(n);
                    }
                }
            }
            // No Service given for the pods: nothing to compare with.
            let Some(ports) = ports else { continue };
            for (i, s) in gw.servers.iter().enumerate() {
                if ports.contains(&u64::from(s.port.number)) {
                    continue;
                }
                report.add(
                    codes::GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
                    r,
                    Some(Path::root("spec").field("servers").index(i).field("port").field("number")),
                    format!(
                        "The gateway is listening on a target port (port {}) that is not defined in the Service associated with its workload instances (Pod selector {selector}). If you need to access the gateway port through the gateway Service, it will not be available.",
                        s.port.number
                    ),
                );
            }
        }
    }
}

/// IST0101 for a `credentialName` naming no Secret in the gateway pods' namespace;
/// IST0161 for a Secret that holds no usable certificate. Runs only when the input
/// contains Secrets (config-only inputs never do).
struct SecretAnalyzer;

impl Analyzer for SecretAnalyzer {
    fn name(&self) -> &'static str {
        "gateway.SecretAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let secrets: Vec<(&Resource, &Value)> = snap.kube("", "Secret").collect();
        if secrets.is_empty() {
            return;
        }
        let workloads = snap.workloads();
        for (r, gw) in snap.gateways() {
            // Gateways read secrets from their pods' namespace.
            let gw_ns = workloads
                .iter()
                .find(|w| !gw.selector.is_empty() && selects(&gw.selector, &w.labels))
                .map_or(snap.ns(r), |w| w.namespace);
            for (i, s) in gw.servers.iter().enumerate() {
                let Some(tls) = &s.tls else { continue };
                let tls_path = Path::root("spec").field("servers").index(i).field("tls");
                let mut names: Vec<(&str, Path)> = Vec::new();
                if let Some(cn) = tls.credential_name.as_deref().filter(|c| !c.is_empty()) {
                    names.push((cn, tls_path.clone().field("credentialName")));
                }
                for (j, cn) in tls.credential_names.iter().enumerate() {
                    names.push((cn, tls_path.clone().field("credentialNames").index(j)));
                }
                for (cn, path) in names {
                    let (ns, name) = cn.split_once('/').unwrap_or((gw_ns, cn));
                    let found = secrets
                        .iter()
                        .find(|(sr, _)| snap.ns(sr) == ns && sr.name() == name);
                    match found {
                        None => report.add(
                            codes::REFERENCED_RESOURCE_NOT_FOUND,
                            r,
                            Some(path),
                            format!("Referenced credentialName not found: {cn:?}"),
                        ),
                        Some((_, secret)) if !valid_tls_secret(secret) => report.add(
                            codes::INVALID_GATEWAY_CREDENTIAL,
                            r,
                            Some(path),
                            format!(
                                "The credential referenced by the Gateway {} in namespace {gw_ns} is invalid, which can cause the traffic not to work as expected.",
                                r.name()
                            ),
                        ),
                        Some(_) => {}
                    }
                }
            }
        }
    }
}

/// Whether a Secret holds a server certificate and key the way Istio reads them
/// (`tls.crt`/`tls.key` or `cert`/`key`), the certificate being PEM.
fn valid_tls_secret(secret: &Value) -> bool {
    let get = |key: &str| -> Option<Vec<u8>> {
        if let Some(b64) = secret
            .pointer(&format!("/data/{}", key.replace('/', "~1")))
            .and_then(Value::as_str)
        {
            return base64_decode(b64);
        }
        secret
            .get("stringData")
            .and_then(|d| d.get(key))
            .and_then(Value::as_str)
            .map(|s| s.as_bytes().to_vec())
    };
    let pair = get("tls.crt")
        .zip(get("tls.key"))
        .or_else(|| get("cert").zip(get("key")));
    let Some((cert, key)) = pair else {
        return false;
    };
    !key.is_empty() && String::from_utf8_lossy(&cert).contains("-----BEGIN CERTIFICATE-----")
}

/// Standard base64 (with or without padding, whitespace ignored).
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::service::test_support::*;
    use super::*;

    const GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["bookinfo.example.com"]
"#;

    const VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo, namespace: default}
spec:
  hosts: ["bookinfo.example.com"]
  gateways: [bookinfo-gateway, mesh, default/bookinfo-gateway, bookinfo-gateway.default]
  http:
  - directResponse: {status: 200}
"#;

    #[test]
    fn gateway_references_resolve() {
        let yaml = format!("{GATEWAY}---{VS}");
        expect_none(&yaml, codes::REFERENCED_RESOURCE_NOT_FOUND);
        expect_none(&yaml, codes::VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY);
    }

    #[test]
    fn ist0101_gateway_not_found() {
        let vs = VS.replace("mesh, default/", "mesh, istio-system/");
        expect_one(
            &format!("{GATEWAY}---{vs}"),
            codes::REFERENCED_RESOURCE_NOT_FOUND,
            "VirtualService",
            "bookinfo",
            Some("spec.gateways[2]"),
            "Referenced gateway not found: \"istio-system/bookinfo-gateway\"",
        );
    }

    #[test]
    fn ist0132_host_not_in_gateway() {
        let gw = GATEWAY.replace(
            "\"bookinfo.example.com\"",
            "\"other/bookinfo.example.com\", \"*.shop.example.com\"",
        );
        let vs = VS.replace(
            ", mesh, default/bookinfo-gateway, bookinfo-gateway.default",
            "",
        );
        expect_one(
            &format!("{gw}---{vs}"),
            codes::VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
            "VirtualService",
            "bookinfo",
            Some("spec.gateways[0]"),
            "one or more host [bookinfo.example.com] defined in VirtualService default/bookinfo not found in Gateway default/bookinfo-gateway.",
        );
        let wildcard = gw.replace("other/bookinfo.example.com", "./*.example.com");
        expect_none(
            &format!("{wildcard}---{vs}"),
            codes::VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY,
        );
    }

    const INGRESS_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: istio-ingressgateway-7d8f
  namespace: default
  labels: {istio: ingressgateway}
spec:
  containers: [{name: istio-proxy, image: proxyv2}]
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: default, labels: {istio: ingressgateway}}
spec:
  selector: {istio: ingressgateway}
  ports:
  - {name: http2, port: 80, targetPort: 8080}
  - {name: https, port: 443, targetPort: 8443}
"#;

    #[test]
    fn ist0149_claim_routing_without_request_authentication() {
        let vs = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: claims, namespace: default}
spec:
  hosts: ["bookinfo.example.com"]
  gateways: [bookinfo-gateway]
  http:
  - match:
    - headers:
        "@request.auth.claims.groups": {exact: group1}
    directResponse: {status: 200}
"#;
        let yaml = format!("{GATEWAY}---{INGRESS_POD}---{vs}");
        expect_one(
            &yaml,
            codes::JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTHN,
            "VirtualService",
            "claims",
            Some("spec.http[0].match[0].headers[\"@request.auth.claims.groups\"]"),
            "The virtual service uses the JWT claim based routing (key: @request.auth.claims.groups) but found no request authentication for the gateway (default/bookinfo-gateway) pod (istio-ingressgateway-7d8f). The request authentication must first be applied for the gateway pods to validate the JWT token and make the claims available for routing.",
        );
        let ra = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules: [{issuer: "https://issuer.example.com", jwksUri: "https://issuer.example.com/jwks"}]
"#;
        expect_none(
            &format!("{yaml}---{ra}"),
            codes::JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTHN,
        );
    }

    #[test]
    fn ist0145_conflicting_gateways() {
        let other = GATEWAY
            .replace("bookinfo-gateway", "shop-gateway")
            .replace("\"bookinfo.example.com\"", "\"*.example.com\"");
        let found = messages(&format!("{GATEWAY}---{other}"), codes::CONFLICTING_GATEWAYS);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].resource.as_ref().unwrap().name, "bookinfo-gateway");
        assert_eq!(found[0].field.as_deref(), Some("spec.servers[0]"));
        assert_eq!(
            found[0].text,
            "Conflict with gateways default/shop-gateway (workload selector istio=ingressgateway, port 8080, hosts bookinfo.example.com)."
        );
        assert_eq!(
            found[1].text,
            "Conflict with gateways default/bookinfo-gateway (workload selector istio=ingressgateway, port 8080, hosts *.example.com)."
        );
        let other_port = other.replace("number: 8080", "number: 8443");
        expect_none(
            &format!("{GATEWAY}---{other_port}"),
            codes::CONFLICTING_GATEWAYS,
        );
    }

    #[test]
    fn ist0101_gateway_selector_matches_no_pod() {
        let gw = GATEWAY.replace("istio: ingressgateway}", "istio: ingress}");
        expect_one(
            &format!("{gw}---{INGRESS_POD}"),
            codes::REFERENCED_RESOURCE_NOT_FOUND,
            "Gateway",
            "bookinfo-gateway",
            Some("spec.selector.istio"),
            "Referenced selector not found: \"istio=ingress\"",
        );
        // Without the gateway's pods in the input, the selector is not judged.
        expect_none(&gw, codes::REFERENCED_RESOURCE_NOT_FOUND);
    }

    #[test]
    fn ist0162_gateway_port_not_on_service() {
        let gw = GATEWAY.replace("number: 8080", "number: 9090");
        expect_one(
            &format!("{gw}---{INGRESS_POD}"),
            codes::GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
            "Gateway",
            "bookinfo-gateway",
            Some("spec.servers[0].port.number"),
            "The gateway is listening on a target port (port 9090) that is not defined in the Service associated with its workload instances (Pod selector istio=ingressgateway). If you need to access the gateway port through the gateway Service, it will not be available.",
        );
        expect_none(
            &format!("{GATEWAY}---{INGRESS_POD}"),
            codes::GATEWAY_PORT_NOT_DEFINED_ON_SERVICE,
        );
    }

    const TLS_GATEWAY: &str = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: tls-gateway, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8443, name: https, protocol: HTTPS}
    hosts: ["bookinfo.example.com"]
    tls: {mode: SIMPLE, credentialName: bookinfo-cert}
"#;

    fn secret(name: &str, crt: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  tls.key: key\n  tls.crt: \"{crt}\"\n"
        )
    }

    #[test]
    fn ist0101_credential_name_not_found() {
        let yaml = format!("{TLS_GATEWAY}---\n{}", secret("other-cert", "x"));
        expect_one(
            &yaml,
            codes::REFERENCED_RESOURCE_NOT_FOUND,
            "Gateway",
            "tls-gateway",
            Some("spec.servers[0].tls.credentialName"),
            "Referenced credentialName not found: \"bookinfo-cert\"",
        );
        // No Secrets in the input at all: nothing to check against.
        expect_none(TLS_GATEWAY, codes::REFERENCED_RESOURCE_NOT_FOUND);
    }

    #[test]
    fn ist0161_invalid_gateway_credential() {
        let yaml = format!(
            "{TLS_GATEWAY}---\n{}",
            secret("bookinfo-cert", "not a certificate")
        );
        expect_one(
            &yaml,
            codes::INVALID_GATEWAY_CREDENTIAL,
            "Gateway",
            "tls-gateway",
            Some("spec.servers[0].tls.credentialName"),
            "The credential referenced by the Gateway tls-gateway in namespace default is invalid, which can cause the traffic not to work as expected.",
        );
        let pem = "-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n";
        let good = format!("{TLS_GATEWAY}---\n{}", secret("bookinfo-cert", pem));
        expect_none(&good, codes::INVALID_GATEWAY_CREDENTIAL);
        expect_none(&good, codes::REFERENCED_RESOURCE_NOT_FOUND);
    }

    #[test]
    fn base64_decodes_secret_data() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert!(base64_decode("a$b").is_none());
        let secret = serde_json::json!({"data": {"tls.crt": "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0t", "tls.key": "a2V5"}});
        assert!(valid_tls_secret(&secret));
    }
}

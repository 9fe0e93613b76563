//! VirtualService rules: hosts and gateways, delegation, TLS and TCP routes, route
//! destinations and weights. The HTTP route's own rules are in [`super::http_route`].

use common::istio::networking::{
    Destination, HttpRouteDestination, L4MatchAttributes, RouteDestination, TcpRoute,
    TlsMatchAttributes, TlsRoute, VirtualServiceSpec,
};

use super::super::checks;
use super::super::field::{Field, ResourceCtx};
use super::http_route;
use super::util;

/// Validates a VirtualService spec; `f` is at `spec`.
pub fn virtual_service(spec: &VirtualServiceSpec, r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    let delegate = spec.hosts.is_empty();
    if delegate {
        // A VirtualService without hosts can only be a delegate.
        if !spec.gateways.is_empty() {
            f.at("gateways").error(
                "must be empty in a delegate VirtualService (one without hosts): a delegate is bound through the root VirtualService that delegates to it; add hosts if this is not a delegate",
            );
        }
        if !spec.tls.is_empty() {
            f.at("tls").error(
                "a delegate VirtualService (one without hosts) cannot have tls routes; only http routes can be delegated; add hosts if this is not a delegate",
            );
        }
        if !spec.tcp.is_empty() {
            f.at("tcp").error(
                "a delegate VirtualService (one without hosts) cannot have tcp routes; only http routes can be delegated; add hosts if this is not a delegate",
            );
        }
    }

    let applies_to_gateway =
        !spec.gateways.is_empty() && !spec.gateways.iter().any(|g| g == "mesh");
    let applies_to_mesh = !applies_to_gateway;
    util::gateway_names(&mut f.at("gateways"), &spec.gateways);

    if !applies_to_gateway {
        jwt_claim_routes_need_gateway(spec, f);
    }

    hosts(spec, applies_to_gateway, applies_to_mesh, f);

    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        f.error("has no routes: set at least one of http, tcp or tls");
    }
    let mut fh = f.at("http");
    for (i, route) in spec.http.iter().enumerate() {
        http_route::http_route(&mut fh.index(i), route, delegate);
    }
    let mut ft = f.at("tls");
    for (i, route) in spec.tls.iter().enumerate() {
        tls_route(&mut ft.index(i), route, spec, applies_to_gateway);
    }
    let mut fc = f.at("tcp");
    for (i, route) in spec.tcp.iter().enumerate() {
        tcp_route(&mut fc.index(i), route);
    }
    util::export_to(
        &mut f.at("exportTo"),
        r.namespace,
        &spec.export_to,
        false,
        false,
    );
}

/// Header matches on JWT claims (`@request.auth.claims.*`) work only on gateways.
fn jwt_claim_routes_need_gateway(spec: &VirtualServiceSpec, f: &mut Field<'_>) {
    for (i, route) in spec.http.iter().enumerate() {
        for (j, m) in route.r#match.iter().enumerate() {
            for (field, map) in [
                ("headers", &m.headers),
                ("withoutHeaders", &m.without_headers),
            ] {
                for key in map.keys().filter(|k| util::is_jwt_claim(k)) {
                    f.at("http")
                        .index(i)
                        .at("match")
                        .index(j)
                        .at(field)
                        .key(key)
                        .error(format!(
                            "JWT claim routing ({key}) works only for VirtualServices bound to gateways; list the ingress gateway in gateways (without mesh)"
                        ));
                }
            }
        }
    }
}

fn hosts(
    spec: &VirtualServiceSpec,
    applies_to_gateway: bool,
    applies_to_mesh: bool,
    f: &mut Field<'_>,
) {
    let sni = spec
        .tls
        .iter()
        .any(|t| t.r#match.iter().any(|m| !m.sni_hosts.is_empty()));
    let mut fh = f.at("hosts");
    let mut all_valid = true;
    for (i, h) in spec.hosts.iter().enumerate() {
        let problem = if applies_to_gateway {
            util::gateway_domain_problem(sni, h)
        } else {
            util::wildcard_domain_problem(h)
        };
        match problem {
            Some(p) if !util::is_ip(h) => {
                fh.index(i).error(format!("host {h:?} is not valid: {p}"));
                all_valid = false;
            }
            Some(_) => {}
            None if applies_to_mesh && h == "*" => {
                fh.index(i).error(
                    "the wildcard host \"*\" is not allowed for VirtualServices that apply to the mesh; list the hosts, or bind the VirtualService to a gateway only",
                );
                all_valid = false;
            }
            None => {}
        }
    }
    if all_valid {
        for (j, b) in spec.hosts.iter().enumerate() {
            if let Some(a) = spec.hosts[..j].iter().find(|a| common::host::overlap(a, b)) {
                fh.index(j).error(format!(
                    "host {b:?} duplicates or overlaps host {a:?} of the same VirtualService; keep only one of them"
                ));
            }
        }
    }
}

fn tls_route(f: &mut Field<'_>, route: &TlsRoute, vs: &VirtualServiceSpec, gateway: bool) {
    if route.r#match.is_empty() {
        f.at("match")
            .error("is required: a TLS route needs at least one match condition with sniHosts");
    }
    let mut fm = f.at("match");
    for (i, m) in route.r#match.iter().enumerate() {
        tls_match(&mut fm.index(i), m, vs, gateway);
    }
    if route.route.is_empty() {
        f.at("route")
            .error("is required: a TLS route needs at least one destination");
    }
    route_destinations(&mut f.at("route"), &route.route);
}

fn tls_match(f: &mut Field<'_>, m: &TlsMatchAttributes, vs: &VirtualServiceSpec, gateway: bool) {
    if m.sni_hosts.is_empty() {
        f.at("sniHosts")
            .error("is required: a TLS match needs at least one SNI host");
    }
    let mut fs = f.at("sniHosts");
    for (i, sni) in m.sni_hosts.iter().enumerate() {
        sni_host(&mut fs.index(i), sni, vs, gateway);
    }
    subnets(&mut f.at("destinationSubnets"), &m.destination_subnets);
    if let Some(p) = m.port.filter(|p| *p != 0) {
        checks::port(&mut f.at("port"), p);
    }
    checks::labels(&mut f.at("sourceLabels"), &m.source_labels);
    util::gateway_names(&mut f.at("gateways"), &m.gateways);
    source_namespace(f, m.source_namespace.as_deref());
}

fn sni_host(f: &mut Field<'_>, sni: &str, vs: &VirtualServiceSpec, gateway: bool) {
    let problem = if gateway {
        util::gateway_domain_problem(true, sni)
    } else {
        util::wildcard_domain_problem(sni)
    };
    if let Some(p) = problem {
        if util::is_ip(sni) {
            f.warn(format!(
                "SNI {sni:?} is an IP address, which the SNI specification does not allow and most clients never send; match on a host name"
            ));
        } else {
            f.error(format!("SNI host {sni:?} is not valid: {p}"));
        }
        return;
    }
    if !vs.hosts.iter().any(|h| common::host::subset_of(sni, h)) {
        f.error(format!(
            "SNI host {sni:?} is not covered by any host of this VirtualService ({}); add it to hosts or match a host listed there",
            vs.hosts.join(", ")
        ));
    }
}

fn tcp_route(f: &mut Field<'_>, route: &TcpRoute) {
    let mut fm = f.at("match");
    for (i, m) in route.r#match.iter().enumerate() {
        l4_match(&mut fm.index(i), m);
    }
    if route.route.is_empty() {
        f.at("route")
            .error("is required: a TCP route needs at least one destination");
    }
    route_destinations(&mut f.at("route"), &route.route);
}

fn l4_match(f: &mut Field<'_>, m: &L4MatchAttributes) {
    subnets(&mut f.at("destinationSubnets"), &m.destination_subnets);
    if let Some(s) = &m.source_subnet {
        checks::ip_or_cidr(&mut f.at("sourceSubnet"), s);
    }
    if let Some(p) = m.port.filter(|p| *p != 0) {
        checks::port(&mut f.at("port"), p);
    }
    checks::labels(&mut f.at("sourceLabels"), &m.source_labels);
    util::gateway_names(&mut f.at("gateways"), &m.gateways);
    source_namespace(f, m.source_namespace.as_deref());
}

fn subnets(f: &mut Field<'_>, list: &[String]) {
    for (i, s) in list.iter().enumerate() {
        checks::ip_or_cidr(&mut f.index(i), s);
    }
}

/// `sourceNamespace` of a match: a namespace name.
pub(super) fn source_namespace(f: &mut Field<'_>, ns: Option<&str>) {
    if let Some(ns) = ns.filter(|n| !n.is_empty())
        && !util::is_dns1123_label(ns)
    {
        f.at("sourceNamespace").error(format!(
            "{ns:?} is not a valid namespace name (lower-case letters, digits and '-')"
        ));
    }
}

/// Istio's `validateDestination`: a host (not `*`), an optional subset name and port.
pub(super) fn destination(f: &mut Field<'_>, d: &Destination) {
    let mut fh = f.at("host");
    if d.host.is_empty() {
        fh.error(
            "is required: name the service, such as reviews or reviews.default.svc.cluster.local",
        );
    } else if d.host == "*" {
        fh.error("\"*\" is not a valid destination; name one service");
    } else if let Some(p) = util::wildcard_domain_problem(&d.host) {
        fh.error(format!("host {:?} is not valid: {p}", d.host));
    }
    if let Some(s) = d.subset.as_deref()
        && !s.is_empty()
    {
        util::subset_name(&mut f.at("subset"), s);
    }
    if let Some(p) = &d.port {
        util::port_number(&mut f.at("port").at("number"), p.number.unwrap_or(0));
    }
}

fn weight(f: &mut Field<'_>, w: Option<i32>) -> i64 {
    let w = w.unwrap_or(0);
    if w < 0 {
        f.at("weight").error(format!(
            "must be 0 or more (got {w}); weights are relative shares of traffic"
        ));
    }
    i64::from(w.max(0))
}

fn total_weight_zero(f: &mut Field<'_>, n: usize, total: i64) {
    if n > 1 && total == 0 {
        f.error(
            "the destinations' weights add up to 0, so no traffic can be sent; give at least one destination a positive weight",
        );
    }
}

/// TLS and TCP route destinations.
fn route_destinations(f: &mut Field<'_>, list: &[RouteDestination]) {
    let mut total = 0;
    for (i, d) in list.iter().enumerate() {
        let mut fi = f.index(i);
        destination(&mut fi.at("destination"), &d.destination);
        total += weight(&mut fi, d.weight);
    }
    total_weight_zero(f, list.len(), total);
}

/// HTTP route destinations, with their header operations.
pub(super) fn http_route_destinations(f: &mut Field<'_>, list: &[HttpRouteDestination]) {
    let mut total = 0;
    for (i, d) in list.iter().enumerate() {
        let mut fi = f.index(i);
        if let Some(h) = &d.headers {
            util::headers(&mut fi.at("headers"), h);
        }
        destination(&mut fi.at("destination"), &d.destination);
        total += weight(&mut fi, d.weight);
    }
    total_weight_zero(f, list.len(), total);
}

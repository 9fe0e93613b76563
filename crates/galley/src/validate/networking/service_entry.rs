//! ServiceEntry, WorkloadEntry and WorkloadGroup rules: hosts and addresses, ports,
//! resolution modes and the endpoints each allows, and readiness probes.

use std::collections::BTreeSet;

use common::istio::networking::{
    ReadinessProbe, Resolution, ServiceEntrySpec, WorkloadEntrySpec, WorkloadGroupSpec,
};

use super::super::checks;
use super::super::field::{Field, ResourceCtx};
use super::util::{self, Protocol};

/// Validates a ServiceEntry spec; `f` is at `spec`.
pub fn service_entry(spec: &ServiceEntrySpec, r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    util::alpha_selector(
        &mut f.at("workloadSelector"),
        spec.workload_selector.as_ref(),
        "ServiceEntry",
    );
    if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
        f.at("endpoints").error(
            "cannot be combined with workloadSelector: the endpoints come either from the list or from the selected workloads; keep one",
        );
    }
    let resolution = spec.resolution.unwrap_or_default();
    hosts(f, spec);
    addresses(f, spec, resolution);
    let port_names = ports(f, spec, resolution);

    match resolution {
        Resolution::None => {
            if !spec.endpoints.is_empty() {
                f.at("endpoints").error(
                    "must be empty when resolution is NONE (traffic goes to the address the client dialed); use resolution STATIC or DNS to list endpoints",
                );
            }
            if spec.workload_selector.is_some() {
                f.at("workloadSelector")
                    .warn("has no effect when resolution is NONE; use resolution STATIC");
            }
        }
        Resolution::Static => {
            let mut fe = f.at("endpoints");
            for (i, e) in spec.endpoints.iter().enumerate() {
                workload_entry_fields(&mut fe.index(i), e, Some(&port_names), false);
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin => {
            let mode = if resolution == Resolution::Dns {
                "DNS"
            } else {
                "DNS_ROUND_ROBIN"
            };
            if spec.endpoints.is_empty() {
                let mut fh = f.at("hosts");
                for (i, h) in spec.hosts.iter().enumerate() {
                    if util::fqdn_problem(h).is_some() && h != "*" {
                        fh.index(i).error(format!(
                            "host {h:?} cannot be resolved: with resolution {mode} and no endpoints, hosts are looked up in DNS, so they must be names without wildcards; add endpoints or use resolution NONE or DYNAMIC_DNS"
                        ));
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && spec.endpoints.len() > 1 {
                f.at("endpoints").error(format!(
                    "has {} entries, but resolution DNS_ROUND_ROBIN takes at most one; use resolution DNS for several",
                    spec.endpoints.len()
                ));
            }
            let mut fe = f.at("endpoints");
            for (i, e) in spec.endpoints.iter().enumerate() {
                workload_entry_fields(&mut fe.index(i), e, Some(&port_names), true);
            }
            if spec.workload_selector.is_some() {
                f.at("workloadSelector").warn(format!(
                    "has no effect when resolution is {mode}; use resolution STATIC"
                ));
            }
            let tcp = spec
                .ports
                .iter()
                .any(|p| Protocol::parse(&p.protocol).is_some_and(Protocol::is_tcp));
            if !spec.addresses.is_empty() && tcp && spec.hosts.len() > 1 {
                f.at("hosts").warn(
                    "several hosts with addresses and a TCP port cannot be told apart; use one host per ServiceEntry",
                );
            }
        }
        Resolution::DynamicDns => {
            if !spec.endpoints.is_empty() {
                f.at("endpoints").warn(
                    "is ignored when resolution is DYNAMIC_DNS, which resolves each requested host itself",
                );
            }
            if spec.workload_selector.is_some() {
                f.at("workloadSelector")
                    .warn("has no effect when resolution is DYNAMIC_DNS; use resolution STATIC");
            }
        }
    }

    if resolution != Resolution::None && spec.hosts.len() > 1 {
        let mut fp = f.at("ports");
        for (i, p) in spec.ports.iter().enumerate() {
            let proto = Protocol::parse(&p.protocol);
            if !proto.is_some_and(|p| p.is_http() || p.is_tls()) {
                fp.index(i).at("protocol").error(
                    "several hosts share this ServiceEntry, so each port must be HTTP-like or TLS (the host is told apart by the Host header or SNI); set the protocol, or use one host per ServiceEntry",
                );
                break;
            }
        }
    }
    util::export_to(
        &mut f.at("exportTo"),
        r.namespace,
        &spec.export_to,
        true,
        false,
    );
}

fn hosts(f: &mut Field<'_>, spec: &ServiceEntrySpec) {
    if spec.hosts.is_empty() {
        f.at("hosts")
            .error("is required: list at least one host, such as api.example.com");
    }
    let mut fh = f.at("hosts");
    for (i, h) in spec.hosts.iter().enumerate() {
        let mut fi = fh.index(i);
        if h == "*" {
            fi.error("\"*\" is not allowed: a ServiceEntry must name its hosts (a wildcard prefix such as *.example.com is fine)");
        } else if let Some(p) = util::wildcard_domain_problem(h) {
            fi.error(format!("host {h:?} is not valid: {p}"));
        } else if h.contains('*') && !h.starts_with("*.") {
            fi.warn(format!(
                "host {h:?} has a partial wildcard, which Istio does not support; use *.example.com"
            ));
        }
    }
}

fn addresses(f: &mut Field<'_>, spec: &ServiceEntrySpec, resolution: Resolution) {
    let mut fa = f.at("addresses");
    for (i, a) in spec.addresses.iter().enumerate() {
        let mut fi = fa.index(i);
        if checks::ip_or_cidr(&mut fi, a)
            && a.contains('/')
            && !matches!(resolution, Resolution::None | Resolution::Static)
        {
            fi.error(format!(
                "CIDR block {a:?} is allowed only with resolution NONE or STATIC; give a single IP, or change the resolution"
            ));
        }
    }
}

/// Checks the ports and returns their names, for endpoint port references.
fn ports(f: &mut Field<'_>, spec: &ServiceEntrySpec, resolution: Resolution) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    let mut fp = f.at("ports");
    for (i, p) in spec.ports.iter().enumerate() {
        let mut fi = fp.index(i);
        if !p.name.is_empty() && !names.insert(p.name.clone()) {
            fi.at("name").error(format!(
                "duplicate port name {:?}; each port needs its own name",
                p.name
            ));
        }
        if p.number != 0 && !numbers.insert(p.number) {
            fi.at("number").error(format!(
                "port {} is listed twice; list each port once",
                p.number
            ));
        }
        if let Some(t) = p.target_port.filter(|t| *t != 0) {
            checks::port(&mut fi.at("targetPort"), t);
            if resolution == Resolution::None {
                fi.at("targetPort")
                    .warn("has no effect when resolution is NONE; traffic keeps the port the client dialed");
            }
        }
        util::port_name(&mut fi.at("name"), &p.name);
        util::protocol(&mut fi.at("protocol"), &p.protocol);
        util::port_number(&mut fi.at("number"), p.number);
    }
    names
}

/// Validates a WorkloadEntry spec; `f` is at `spec`.
pub fn workload_entry(spec: &WorkloadEntrySpec, _r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    workload_entry_fields(f, spec, None, true);
}

/// Istio's `validateWorkloadEntry`: an address (IP, FQDN where allowed, or unix://),
/// ports named like the service's, valid labels.
fn workload_entry_fields(
    f: &mut Field<'_>,
    we: &WorkloadEntrySpec,
    service_ports: Option<&BTreeSet<String>>,
    allow_fqdn: bool,
) {
    let addr = we.address.as_deref().unwrap_or("");
    if addr.is_empty() {
        match we.network.as_deref().filter(|n| !n.is_empty()) {
            None => {
                f.at("address")
                    .error("is required: the IP, host name or unix:// socket of the workload");
                return;
            }
            Some(net) => f.at("address").warn(format!(
                "is unset with network {net:?}: traffic will go through that network's gateway"
            )),
        }
    }
    let unix = addr.starts_with("unix://");
    if let Some(path) = addr.strip_prefix("unix://") {
        util::unix_address(&mut f.at("address"), path);
        if !we.ports.is_empty() {
            f.at("ports")
                .error("must be empty for a unix:// endpoint, which has no ports");
        }
    } else if !addr.is_empty() && !util::is_ip(addr) {
        if !allow_fqdn {
            f.at("address").error(format!(
                "{addr:?} is not an IP address; resolution STATIC needs IPs or unix:// sockets (use resolution DNS for host names)"
            ));
        } else if let Some(p) = util::fqdn_problem(addr) {
            f.at("address").error(format!(
                "{addr:?} is neither an IP address nor a valid host name: {p}"
            ));
        }
    }
    let mut fp = f.at("ports");
    for (name, port) in &we.ports {
        let mut fk = fp.key(name);
        if let Some(known) = service_ports
            && !known.contains(name)
        {
            fk.error(format!(
                "port name {name:?} is not a port of the ServiceEntry; use one of its port names ({})",
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if !util::is_dns1123_label(name) {
            fk.error(format!(
                "port name {name:?} is not valid: use lower-case letters, digits and '-'"
            ));
        }
        checks::port(&mut fk, *port);
    }
    checks::labels(&mut f.at("labels"), &we.labels);
    if unix && service_ports.is_some_and(|p| p.len() != 1) {
        f.at("address")
            .error("a unix:// endpoint needs a ServiceEntry with exactly one port");
    }
}

/// Validates a WorkloadGroup spec; `f` is at `spec`.
pub fn workload_group(spec: &WorkloadGroupSpec, _r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    // The template's address and labels are filled in per workload, so the
    // WorkloadEntry rules do not apply to it as a whole.
    if let Some(m) = &spec.metadata {
        checks::labels(&mut f.at("metadata").at("labels"), &m.labels);
    }
    let mut ft = f.at("template");
    checks::labels(&mut ft.at("labels"), &spec.template.labels);
    let mut fp = ft.at("ports");
    for (name, port) in &spec.template.ports {
        checks::port(&mut fp.key(name), *port);
    }
    if let Some(p) = &spec.probe {
        probe(&mut f.at("probe"), p);
    }
}

fn probe(f: &mut Field<'_>, p: &ReadinessProbe) {
    for (field, v) in [
        ("periodSeconds", p.period_seconds),
        ("initialDelaySeconds", p.initial_delay_seconds),
        ("timeoutSeconds", p.timeout_seconds),
        ("successThreshold", p.success_threshold),
        ("failureThreshold", p.failure_threshold),
    ] {
        if let Some(v) = v {
            util::non_negative(&mut f.at(field), i64::from(v));
        }
    }
    let methods = [
        ("httpGet", p.http_get.is_some()),
        ("tcpSocket", p.tcp_socket.is_some()),
        ("exec", p.exec.is_some()),
        ("grpc", p.grpc.is_some()),
    ];
    if !checks::exactly_one(f, &methods) {
        return;
    }
    if let Some(h) = &p.http_get {
        let mut fh = f.at("httpGet");
        util::port_number(&mut fh.at("port"), h.port);
        if let Some(s) = h.scheme.as_deref()
            && !s.is_empty()
            && s != "HTTP"
            && s != "HTTPS"
        {
            fh.at("scheme").error(format!(
                "{s:?} is not a probe scheme; use \"HTTP\" or \"HTTPS\""
            ));
        }
        let mut fhh = fh.at("httpHeaders");
        for (i, hdr) in h.http_headers.iter().enumerate() {
            util::header_match_name(
                &mut fhh.index(i).at("name"),
                hdr.name.as_deref().unwrap_or(""),
                false,
            );
        }
    }
    if let Some(t) = &p.tcp_socket {
        util::port_number(&mut f.at("tcpSocket").at("port"), t.port);
    }
    if let Some(e) = &p.exec
        && e.command.is_empty()
    {
        f.at("exec").at("command").error(
            "is required: the command (and arguments) to run, such as [\"cat\", \"/tmp/healthy\"]",
        );
    }
    if let Some(g) = &p.grpc {
        util::port_number(&mut f.at("grpc").at("port"), g.port.unwrap_or(0));
    }
}

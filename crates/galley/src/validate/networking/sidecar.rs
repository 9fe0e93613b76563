//! Sidecar rules: ingress listeners (port, bind, default endpoint, TLS, pools),
//! egress listeners (one catch-all, last; `namespace/host` entries; unix sockets)
//! and the outbound traffic policy.

use std::collections::{BTreeMap, BTreeSet};

use common::istio::networking::{
    CaptureMode, IstioEgressListener, IstioIngressListener, OutboundTrafficMode,
    OutboundTrafficPolicy, Port, ServerTlsMode, SidecarSpec,
};

use super::super::checks;
use super::super::field::{Field, ResourceCtx};
use super::connection_pool::connection_pool;
use super::gateway::{namespace_host, server_tls};
use super::util::{self, Protocol};
use super::virtual_service::destination;

/// Validates a Sidecar spec; `f` is at `spec`.
pub fn sidecar(spec: &SidecarSpec, r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    util::alpha_selector(
        &mut f.at("workloadSelector"),
        spec.workload_selector.as_ref(),
        "Sidecar",
    );
    if spec.egress.is_empty()
        && spec.ingress.is_empty()
        && spec.outbound_traffic_policy.is_none()
        && spec.inbound_connection_pool.is_none()
    {
        f.error("is empty: set at least one of egress, ingress, outboundTrafficPolicy or inboundConnectionPool");
        return;
    }
    let mut ports = BTreeSet::new();
    let mut fi = f.at("ingress");
    for (i, l) in spec.ingress.iter().enumerate() {
        let mut fl = fi.index(i);
        ingress(&mut fl, l);
        if l.port.number != 0 && !ports.insert(l.port.number) {
            fl.at("port").at("number").error(format!(
                "port {} is used by another ingress listener; each listener needs its own port",
                l.port.number
            ));
        }
    }
    if let Some(cp) = &spec.inbound_connection_pool {
        connection_pool(&mut f.at("inboundConnectionPool"), cp);
    }
    egress_listeners(f, spec, r.namespace);
    if let Some(otp) = &spec.outbound_traffic_policy {
        outbound(&mut f.at("outboundTrafficPolicy"), otp);
    }
}

fn ingress(f: &mut Field<'_>, l: &IstioIngressListener) {
    let mut fp = f.at("port");
    if l.port.target_port.is_some_and(|t| t > 0) {
        fp.at("targetPort")
            .error("has no effect on Sidecars; remove it");
    }
    port_fields(&mut fp, &l.port, false);
    if let Some(b) = l.bind.as_deref().filter(|b| !b.is_empty())
        && !util::is_ip(b)
    {
        f.at("bind")
            .error(format!("{b:?} is not a valid IP address"));
    }
    if let Some(ep) = l.default_endpoint.as_deref().filter(|e| !e.is_empty()) {
        default_endpoint(&mut f.at("defaultEndpoint"), ep);
    }
    if let Some(t) = &l.tls {
        let mut ft = f.at("tls");
        if !t.subject_alt_names.is_empty() {
            ft.at("subjectAltNames")
                .error("is not supported on sidecar ingress TLS; remove it");
        }
        if t.https_redirect == Some(true) {
            ft.at("httpsRedirect")
                .error("is not supported on sidecar ingress TLS; remove it");
        }
        if t.credential_name.as_deref().is_some_and(|c| !c.is_empty()) {
            ft.at("credentialName").error(
                "is not supported on sidecar ingress TLS; give serverCertificate and privateKey files",
            );
        }
        if let Some(m @ (ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)) = t.mode {
            ft.at("mode").error(format!(
                "{} cannot be used on sidecar ingress TLS; use SIMPLE or MUTUAL",
                if m == ServerTlsMode::IstioMutual {
                    "ISTIO_MUTUAL"
                } else {
                    "AUTO_PASSTHROUGH"
                }
            ));
        }
        server_tls(&mut ft, t);
    }
    if let Some(cp) = &l.connection_pool {
        connection_pool(&mut f.at("connectionPool"), cp);
        let http = Protocol::parse(&l.port.protocol).is_some_and(Protocol::is_http);
        if cp.http.is_some() && !http {
            f.at("connectionPool").at("http").warn(format!(
                "applies only to HTTP ports, but port {} has protocol {:?}; only the tcp settings take effect",
                l.port.number, l.port.protocol
            ));
        }
    }
}

/// `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`, `[::]:PORT`, `:PORT` or `unix://path`.
fn default_endpoint(f: &mut Field<'_>, ep: &str) {
    const FORMS: &str = "127.0.0.1:PORT, 0.0.0.0:PORT, [::1]:PORT, [::]:PORT or unix:///path";
    if let Some(path) = ep.strip_prefix("unix://") {
        util::unix_address(f, path);
        return;
    }
    let Some((host, port)) = ep.rsplit_once(':') else {
        f.error(format!("{ep:?} has no port; write it as {FORMS}"));
        return;
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if !["", "127.0.0.1", "0.0.0.0", "::1", "::"].contains(&host) {
        f.error(format!(
            "{ep:?} must forward to the workload on this host: write it as {FORMS}"
        ));
        return;
    }
    match port.parse::<u32>() {
        Ok(p) => {
            checks::port(f, p);
        }
        Err(_) => f.error(format!("the port {port:?} in {ep:?} is not a number")),
    }
}

/// Name (optional), protocol and number of a sidecar listener port.
fn port_fields(f: &mut Field<'_>, p: &Port, allow_zero: bool) {
    if !p.name.is_empty() {
        util::port_name(&mut f.at("name"), &p.name);
    }
    util::protocol(&mut f.at("protocol"), &p.protocol);
    if !(allow_zero && p.number == 0) {
        util::port_number(&mut f.at("number"), p.number);
    }
}

fn egress_listeners(f: &mut Field<'_>, spec: &SidecarSpec, namespace: &str) {
    let mut ports = BTreeSet::new();
    let mut sockets = BTreeSet::new();
    let mut catch_all = false;
    let last = spec.egress.len().saturating_sub(1);
    let mut fe = f.at("egress");
    for (i, l) in spec.egress.iter().enumerate() {
        let mut fl = fe.index(i);
        match &l.port {
            None => {
                if catch_all {
                    fl.error("only one egress listener may leave out the port (the catch-all listener); give this one a port");
                    continue;
                }
                if i != last {
                    fl.error("the egress listener without a port (the catch-all) must be the last in the list; move it to the end");
                } else {
                    catch_all = true;
                }
            }
            Some(p) => {
                egress_port(&mut fl, l, p);
                let bind = l.bind.clone().unwrap_or_default();
                if p.number == 0 {
                    if !sockets.insert(bind) {
                        fl.at("bind").error(
                            "this unix domain socket is used by another egress listener; each needs its own",
                        );
                    }
                } else if !ports.insert(p.number) {
                    fl.at("port").at("number").error(format!(
                        "port {} is used by another egress listener; each listener needs its own port",
                        p.number
                    ));
                }
            }
        }
        egress_hosts(&mut fl, l, namespace);
    }
}

fn egress_port(f: &mut Field<'_>, l: &IstioEgressListener, p: &Port) {
    let bind = l.bind.as_deref().unwrap_or("");
    if p.target_port.is_some_and(|t| t > 0) {
        f.at("port")
            .at("targetPort")
            .error("has no effect on Sidecars; remove it");
    }
    port_fields(&mut f.at("port"), p, true);
    if p.number == 0 {
        // A listener on a unix domain socket.
        match bind.strip_prefix("unix://") {
            None => f.at("bind").error(
                "a listener with port number 0 must bind to a unix domain socket (unix:///path); set a port number or such a bind",
            ),
            Some(path) => {
                util::unix_address(&mut f.at("bind"), path);
            }
        }
        if !matches!(
            l.capture_mode.unwrap_or_default(),
            CaptureMode::Default | CaptureMode::None
        ) {
            f.at("captureMode")
                .error("must be DEFAULT or NONE for a unix domain socket listener");
        }
    } else if !bind.is_empty() && !util::is_ip(bind) {
        f.at("bind")
            .error(format!("{bind:?} is not a valid IP address"));
    }
}

fn egress_hosts(f: &mut Field<'_>, l: &IstioEgressListener, namespace: &str) {
    if l.hosts.is_empty() {
        f.at("hosts").error(
            "is required: list the hosts this listener exposes as namespace/host, such as \"./*\" and \"istio-system/*\"",
        );
        return;
    }
    let mut by_ns: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut fh = f.at("hosts");
    for (i, h) in l.hosts.iter().enumerate() {
        let mut fi = fh.index(i);
        if let Some((ns, svc)) = h.split_once('/') {
            let ns = if ns == "." { namespace } else { ns };
            let set = by_ns.entry(ns.to_string()).or_default();
            let dup = if svc == "*" {
                !set.is_empty()
            } else {
                set.contains(svc) || set.contains("*")
            };
            if dup {
                fi.warn(format!(
                    "duplicates or is covered by another host of this listener ({h:?}); remove it"
                ));
            }
            set.insert(svc.to_string());
        }
        namespace_host(&mut fi, h, false);
    }
    if by_ns.get("*").is_some_and(|s| s.contains("*")) && by_ns.len() != 1 {
        fh.warn(
            "\"*/*\" already selects every host, so the other entries have no effect; remove them",
        );
    }
}

fn outbound(f: &mut Field<'_>, otp: &OutboundTrafficPolicy) {
    let Some(proxy) = &otp.egress_proxy else {
        return;
    };
    let mut fp = f.at("egressProxy");
    if otp.mode != Some(OutboundTrafficMode::AllowAny) {
        fp.error("can be set only with mode ALLOW_ANY; set mode: ALLOW_ANY or remove egressProxy");
        return;
    }
    if let Some(p) = util::fqdn_problem(&proxy.host).filter(|_| !proxy.host.is_empty()) {
        fp.at("host")
            .error(format!("{:?} is not a valid host name: {p}", proxy.host));
    }
    if proxy.port.is_none() {
        fp.at("port")
            .error("is required: the egress proxy's port, as port: {number: 3128}");
        return;
    }
    destination(&mut fp, proxy);
}

//! `meshConfig` rules, after istio/istio `pkg/config/validation/agent/validation.go`
//! (`ValidateMeshConfig`, `ValidateMeshConfigProxyConfig`) and
//! `extensionprovider.go`. Only fields the user set are checked; Istio checks the
//! result of merging them onto its defaults, which are valid.
//!
//! As in Istio, a broken extension provider is a warning ("can be ignored if the
//! provider is not used"), not an error.

use std::collections::HashSet;
use std::net::IpAddr;

use common::istio::install::{
    AuthenticationPolicy, ExtensionProvider, MeshConfig, ProxyConfig, Tracing, TracingCustomTag,
};
use common::istio::types::Duration;
use serde_json::Value;

use crate::validate::checks;
use crate::validate::field::Field;

/// ECDH curves Envoy (BoringSSL) accepts in `tlsDefaults.ecdhCurves`.
const ECDH_CURVES: &[&str] = &[
    "P-224",
    "P-256",
    "P-521",
    "P-384",
    "X25519",
    "X25519Kyber768Draft00",
    "X25519MLKEM768",
];

/// Checks a `MeshConfig`; `f` is at `meshConfig`.
pub(super) fn mesh_config(f: &mut Field<'_>, mc: &MeshConfig) {
    for (name, port) in [
        ("proxyListenPort", mc.proxy_listen_port),
        ("proxyInboundListenPort", mc.proxy_inbound_listen_port),
        ("proxyHttpPort", mc.proxy_http_port),
    ] {
        if let Some(p) = port {
            int_port(&mut f.at(name), p);
        }
    }
    if let Some(d) = &mc.connect_timeout {
        let mut cf = f.at("connectTimeout");
        if checks::istio_duration(&mut cf, d) && d.as_std() > std::time::Duration::from_secs(30) {
            cf.error(format!("must be at most 30s; got {}", d.as_str()));
        }
    }
    if let Some(d) = &mc.protocol_detection_timeout
        && d.as_nanos() != 0
        && d.as_nanos() % 1_000_000 != 0
    {
        f.at("protocolDetectionTimeout").error(format!(
            "only durations to millisecond precision are supported; got {}",
            d.as_str()
        ));
    }
    if let Some(pc) = &mc.default_config {
        proxy_config(&mut f.at("defaultConfig"), pc);
    }
    if let Some(lb) = &mc.locality_lb_setting {
        locality_lb(&mut f.at("localityLbSetting"), lb);
    }
    for (i, s) in mc.service_settings.iter().enumerate() {
        let mut ss = f.at("serviceSettings");
        let mut si = ss.index(i);
        let mut hosts = si.at("hosts");
        for (j, h) in s.hosts.iter().enumerate() {
            checks::host(&mut hosts.index(j), h, checks::HostRules { wildcard: true });
        }
    }
    if let Some(td) = &mc.trust_domain {
        trust_domain(&mut f.at("trustDomain"), td);
    }
    for (i, td) in mc.trust_domain_aliases.iter().enumerate() {
        trust_domain(&mut f.at("trustDomainAliases").index(i), td);
    }
    for (i, c) in mc.ca_certificates.iter().enumerate() {
        checks::at_most_one(
            &mut f.at("caCertificates").index(i),
            &[
                ("pem", c.pem.is_some()),
                ("spiffeBundleUrl", c.spiffe_bundle_url.is_some()),
            ],
        );
    }
    extension_providers(&mut f.at("extensionProviders"), &mc.extension_providers);
    if let Some(m) = &mc.mesh_mtls
        && !m.ecdh_curves.is_empty()
    {
        f.at("meshMTLS").at("ecdhCurves").error(
            "mesh TLS does not support ECDH curves configuration; set them in tlsDefaults instead",
        );
    }
    if let Some(t) = &mc.tls_defaults {
        let mut seen = HashSet::new();
        let mut td = f.at("tlsDefaults");
        let mut curves = td.at("ecdhCurves");
        for (i, c) in t.ecdh_curves.iter().enumerate() {
            let mut cf = curves.index(i);
            if !c.is_empty() && !ECDH_CURVES.contains(&c.as_str()) {
                cf.warn(format!(
                    "unrecognized ECDH curve {c:?}; Envoy supports {}",
                    ECDH_CURVES.join(", ")
                ));
            } else if !seen.insert(c.as_str()) {
                cf.warn(format!("duplicate ECDH curve {c:?}"));
            }
        }
    }
    for (i, sel) in mc.discovery_selectors.iter().enumerate() {
        let mut ds = f.at("discoverySelectors");
        let mut sf = ds.index(i);
        let mut exprs = sf.at("matchExpressions");
        for (j, e) in sel.match_expressions.iter().flatten().enumerate() {
            let mut ef = exprs.index(j);
            let has_values = e.values.as_ref().is_some_and(|v| !v.is_empty());
            match e.operator.as_str() {
                "In" | "NotIn" if !has_values => ef
                    .at("values")
                    .error(format!("operator {} needs at least one value", e.operator)),
                "Exists" | "DoesNotExist" if has_values => ef.at("values").error(format!(
                    "operator {} takes no values; remove them",
                    e.operator
                )),
                "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
                other => ef.at("operator").error(format!(
                    "unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
                )),
            }
        }
    }
}

/// A port given as a signed number.
fn int_port(f: &mut Field<'_>, p: i32) -> bool {
    checks::port(f, u32::try_from(p).unwrap_or(0))
}

/// Istio's `ValidateTrustDomain`: DNS-1123 labels separated by dots; a trailing dot
/// is allowed.
fn trust_domain(f: &mut Field<'_>, td: &str) {
    if td.is_empty() {
        f.error("empty trust domain not allowed; the default is cluster.local");
        return;
    }
    let body = td.strip_suffix('.').unwrap_or(td);
    let ok = body.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    if !ok {
        f.error(format!(
            "trust domain name {td:?} invalid: use lower-case DNS labels such as cluster.local"
        ));
    }
}

/// Istio's `ValidateProxyAddress`: `host:port` with a valid port and a DNS name or
/// IP address as host. `$(HOST_IP)` stands for the node's IP.
fn proxy_address(f: &mut Field<'_>, addr: &str) -> bool {
    match proxy_address_problem(&addr.replacen("$(HOST_IP)", "127.0.0.1", 1)) {
        None => true,
        Some(why) => {
            f.error(format!(
                "invalid address {addr:?}: {why}; write host:port such as istiod.istio-system.svc:15012"
            ));
            false
        }
    }
}

fn proxy_address_problem(addr: &str) -> Option<String> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        match addr.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Some("an IPv6 address must be in brackets, as [::1]:15012".into());
            }
            Some(hp) => hp,
            None => return Some("the port is missing".into()),
        }
    };
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => {}
        _ => return Some(format!("port {port:?} must be a number from 1 to 65535")),
    }
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let body = host.strip_suffix('.').unwrap_or(host);
    if body.is_empty() {
        return Some("the host is empty".into());
    }
    let labels_ok = body.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    let tld_numeric = body
        .rsplit('.')
        .next()
        .is_some_and(|t| t.bytes().all(|c| c.is_ascii_digit()));
    if !labels_ok || tld_numeric {
        return Some(format!("{host:?} is not a valid hostname or an IP address"));
    }
    None
}

/// Checks `meshConfig.defaultConfig`; `f` is at `defaultConfig`.
pub(super) fn proxy_config(f: &mut Field<'_>, pc: &ProxyConfig) {
    if let Some(c) = pc.concurrency
        && c < 0
    {
        f.at("concurrency").error(format!(
            "concurrency must be greater than or equal to 0 (0 means all cores); got {c}"
        ));
    }
    checks::at_most_one(
        f,
        &[
            ("serviceCluster", pc.service_cluster.is_some()),
            ("tracingServiceName", pc.tracing_service_name.is_some()),
        ],
    );
    if pc.service_cluster.as_deref() == Some("") {
        f.at("serviceCluster")
            .error("service cluster must be specified when set");
    }
    if let Some(d) = &pc.drain_duration {
        drain_duration(&mut f.at("drainDuration"), d);
    }
    if pc.parent_shutdown_duration.is_some() {
        f.at("parentShutdownDuration")
            .warn("parentShutdownDuration is deprecated and ignored; remove it");
    }
    if pc.discovery_refresh_delay.is_some() {
        f.at("discoveryRefreshDelay")
            .warn("discoveryRefreshDelay is deprecated and ignored; remove it");
    }
    if pc.availability_zone.is_some() {
        f.at("availabilityZone")
            .warn("availabilityZone is deprecated and ignored; locality comes from node labels");
    }
    if pc.sds.is_some() {
        f.at("sds").warn("sds is deprecated and ignored; remove it");
    }
    if let Some(a) = &pc.discovery_address {
        if a.is_empty() {
            f.at("discoveryAddress")
                .error("discovery address must be set to the proxy discovery service");
        } else {
            proxy_address(&mut f.at("discoveryAddress"), a);
        }
    }
    if pc.zipkin_address.is_some() {
        f.at("zipkinAddress")
            .warn("zipkinAddress is deprecated; use tracing.zipkin.address");
    }
    if let Some(t) = &pc.tracing {
        tracing(&mut f.at("tracing"), t);
    }
    if let Some(a) = pc.statsd_udp_address.as_deref().filter(|a| !a.is_empty()) {
        proxy_address(&mut f.at("statsdUdpAddress"), a);
    }
    if let Some(a) = pc
        .envoy_metrics_service_address
        .as_deref()
        .filter(|a| !a.is_empty())
    {
        let mut af = f.at("envoyMetricsServiceAddress");
        if proxy_address(&mut af, a) {
            af.warn("envoyMetricsServiceAddress is deprecated; use envoyMetricsService.address");
        }
    }
    if pc
        .proxy_metadata
        .contains_key("ISTIO_META_DNS_AUTO_ALLOCATE")
    {
        f.at("proxyMetadata").key("ISTIO_META_DNS_AUTO_ALLOCATE").warn(
            "'ISTIO_META_DNS_AUTO_ALLOCATE' is deprecated; see https://istio.io/latest/docs/ops/configuration/traffic-management/dns-proxy/#dns-auto-allocation-v2",
        );
    }
    for (name, svc) in [
        ("envoyMetricsService", &pc.envoy_metrics_service),
        ("envoyAccessLogService", &pc.envoy_access_log_service),
    ] {
        if let Some(s) = svc.as_ref().filter(|s| !s.address.is_empty()) {
            proxy_address(&mut f.at(name).at("address"), &s.address);
        }
    }
    if let Some(p) = pc.proxy_admin_port {
        int_port(&mut f.at("proxyAdminPort"), p);
    }
    if let Some(p) = pc.status_port {
        int_port(&mut f.at("statusPort"), p);
    }
    if pc.control_plane_auth_policy == Some(AuthenticationPolicy::Inherit) {
        f.at("controlPlaneAuthPolicy").error(
            "unrecognized control plane auth policy INHERIT: the mesh default must be NONE or MUTUAL_TLS",
        );
    }
    if let Some(pkp) = &pc.private_key_provider {
        private_key_provider(&mut f.at("privateKeyProvider"), pkp);
    }
}

fn drain_duration(f: &mut Field<'_>, d: &Duration) {
    if checks::istio_duration(f, d) && !d.as_nanos().is_multiple_of(1_000_000_000) {
        f.error(format!(
            "drain time only supports durations to seconds precision; got {}",
            d.as_str()
        ));
    }
}

fn tracing(f: &mut Field<'_>, t: &Tracing) {
    checks::at_most_one(
        f,
        &[
            ("zipkin", t.zipkin.is_some()),
            ("lightstep", t.lightstep.is_some()),
            ("datadog", t.datadog.is_some()),
            ("stackdriver", t.stackdriver.is_some()),
            ("openCensusAgent", t.open_census_agent.is_some()),
        ],
    );
    if let Some(s) = t.sampling {
        checks::percent_value(&mut f.at("sampling"), s);
    }
    if let Some(z) = &t.zipkin {
        proxy_address(&mut f.at("zipkin").at("address"), &z.address);
    }
    if let Some(d) = &t.datadog {
        proxy_address(&mut f.at("datadog").at("address"), &d.address);
    }
    if let Some(l) = &t.lightstep {
        let mut lf = f.at("lightstep");
        lf.warn("the Lightstep tracer is deprecated; use an OpenTelemetry extension provider and the Telemetry API");
        proxy_address(&mut lf.at("address"), &l.address);
        if l.access_token.as_deref().unwrap_or("").is_empty() {
            lf.at("accessToken").error("access token is required");
        }
    }
    if let Some(o) = &t.open_census_agent
        && o.address.is_empty()
    {
        f.at("openCensusAgent")
            .at("address")
            .error("is required: the agent's gRPC address");
    }
    for (name, tag) in &t.custom_tags {
        custom_tag(&mut f.at("customTags").key(name), tag);
    }
}

fn custom_tag(f: &mut Field<'_>, tag: &TracingCustomTag) {
    if !checks::exactly_one(
        f,
        &[
            ("literal", tag.literal.is_some()),
            ("environment", tag.environment.is_some()),
            ("header", tag.header.is_some()),
        ],
    ) {
        return;
    }
    if tag.environment.as_ref().is_some_and(|e| e.name.is_empty()) {
        f.at("environment")
            .at("name")
            .error("is required: the environment variable to read");
    }
    if tag.header.as_ref().is_some_and(|h| h.name.is_empty()) {
        f.at("header")
            .at("name")
            .error("is required: the request header to read");
    }
}

fn private_key_provider(f: &mut Field<'_>, v: &Value) {
    let Some(obj) = v.as_object() else {
        f.error("private key provider configuration is required: set cryptomb or qat");
        return;
    };
    let kinds: Vec<&str> = ["cryptomb", "qat"]
        .into_iter()
        .filter(|k| obj.contains_key(*k))
        .collect();
    if kinds.len() != 1 || obj.len() != 1 {
        f.error("exactly one private key provider must be set: cryptomb or qat");
        return;
    }
    let kind = kinds[0];
    let mut kf = f.at(kind);
    match obj[kind].get("pollDelay") {
        None => kf.at("pollDelay").error("pollDelay is required"),
        Some(Value::String(s)) => match s.parse::<Duration>() {
            Ok(d) if d.as_nanos() == 0 => kf.at("pollDelay").error("pollDelay must be non zero"),
            Ok(_) => {}
            Err(e) => kf.at("pollDelay").error(e.to_string()),
        },
        Some(other) => kf.at("pollDelay").error(format!(
            "pollDelay must be a duration such as 10ms; got {other}"
        )),
    }
}

/// `localityLbSetting`: `distribute` and `failover` are exclusive, weights are
/// 1..=100 and add up to 100, failover regions differ and have no `/` or `*`.
fn locality_lb(f: &mut Field<'_>, lb: &Value) {
    let distribute = lb.get("distribute").and_then(Value::as_array);
    let failover = lb.get("failover").and_then(Value::as_array);
    if distribute.is_some_and(|d| !d.is_empty()) && failover.is_some_and(|d| !d.is_empty()) {
        f.error("can not simultaneously specify 'distribute' and 'failover'");
        return;
    }
    for (i, d) in distribute.into_iter().flatten().enumerate() {
        let mut dl = f.at("distribute");
        let mut df = dl.index(i);
        let Some(to) = d.get("to").and_then(Value::as_object) else {
            continue;
        };
        let mut total = 0;
        for (loc, w) in to {
            let w = w.as_u64().unwrap_or(0);
            if !(1..=100).contains(&w) {
                df.at("to").key(loc).error(format!(
                    "locality weight must be in range [1, 100]; got {w}"
                ));
                return;
            }
            total += w;
        }
        if total != 100 {
            df.at("to")
                .error(format!("total locality weight {total} != 100"));
        }
    }
    for (i, fo) in failover.into_iter().flatten().enumerate() {
        let from = fo.get("from").and_then(Value::as_str).unwrap_or("");
        let to = fo.get("to").and_then(Value::as_str).unwrap_or("");
        let mut fl = f.at("failover");
        let mut ff = fl.index(i);
        if from == to {
            ff.error("locality lb failover settings must specify different regions");
        }
        if from.contains('/') || to.contains('/') {
            ff.error("locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            ff.error("locality lb failover region should not contain '*' wildcard");
        }
    }
}

/// Extension providers: unique non-empty names, exactly one kind, a valid service
/// and port. Findings are warnings, as in Istio.
fn extension_providers(f: &mut Field<'_>, list: &[ExtensionProvider]) {
    let mut names = HashSet::new();
    for (i, p) in list.iter().enumerate() {
        let mut pf = f.index(i);
        if p.name.is_empty() {
            pf.at("name")
                .warn("empty extension provider name; resources refer to providers by name");
        } else if !names.insert(p.name.as_str()) {
            pf.at("name")
                .warn(format!("duplicate extension provider name {:?}", p.name));
        }
        let kinds = p.kinds();
        if kinds.len() != 1 {
            pf.warn(format!(
                "invalid extension provider {:?}: exactly one provider kind must be set, found {}",
                p.name,
                if kinds.is_empty() {
                    "none".to_string()
                } else {
                    kinds.join(" and ")
                }
            ));
            continue;
        }
        let kind = kinds[0];
        let (service, port) = match service_port(p) {
            Some(sp) => sp,
            None => continue,
        };
        let mut kf = pf.at(kind);
        if let Some(why) = provider_service_problem(service) {
            kf.at("service")
                .warn(format!("invalid extension provider {:?}: {why}", p.name));
        }
        if !(1..=65535).contains(&port) {
            kf.at("port").warn(format!(
                "invalid extension provider {:?}: port number {port} must be in the range 1..65535",
                p.name
            ));
        }
        if let Some(h) = &p.envoy_ext_authz_http
            && let Some(pp) = h.path_prefix.as_deref().filter(|pp| !pp.starts_with('/'))
        {
            kf.at("pathPrefix")
                .warn(format!("pathPrefix should begin with `/` but found {pp:?}"));
        }
        let status = p
            .envoy_ext_authz_http
            .as_ref()
            .and_then(|h| h.status_on_error.as_deref())
            .or(p
                .envoy_ext_authz_grpc
                .as_ref()
                .and_then(|g| g.status_on_error.as_deref()));
        if let Some(s) = status.filter(|s| !s.is_empty())
            && !s.parse::<u16>().is_ok_and(|c| (100..=599).contains(&c))
        {
            kf.at("statusOnError").warn(format!(
                "unsupported statusOnError value {s:?}; use an HTTP status code such as 403"
            ));
        }
        if p.lightstep
            .as_ref()
            .is_some_and(|l| l.access_token.as_deref().unwrap_or("").is_empty())
        {
            kf.at("accessToken").warn("access token is required");
        }
        if let Some(o) = &p.opentelemetry
            && o.http.is_some()
            && o.grpc.is_some()
        {
            kf.warn("OpenTelemetryTracingProvider cannot specify both grpc and http");
        }
    }
}

/// The `service` and `port` of the providers that have them.
fn service_port(p: &ExtensionProvider) -> Option<(&str, u32)> {
    if let Some(x) = &p.envoy_ext_authz_http {
        return Some((&x.service, x.port));
    }
    if let Some(x) = &p.envoy_ext_authz_grpc {
        return Some((&x.service, x.port));
    }
    if let Some(x) = &p.zipkin {
        return Some((&x.service, x.port));
    }
    if let Some(x) = &p.lightstep {
        return Some((&x.service, x.port));
    }
    if let Some(x) = &p.datadog {
        return Some((&x.service, x.port));
    }
    if let Some(x) = &p.skywalking {
        return Some((&x.service, x.port));
    }
    if let Some(x) = &p.opentelemetry {
        return Some((&x.service, x.port));
    }
    if let Some(x) = &p.envoy_http_als {
        return Some((&x.service, x.port));
    }
    if let Some(x) = &p.envoy_tcp_als {
        return Some((&x.service, x.port));
    }
    if let Some(x) = &p.envoy_otel_als {
        return Some((&x.service, x.port));
    }
    None
}

/// `[<namespace>/]<hostname>`, the hostname fully qualified or an IP.
fn provider_service_problem(service: &str) -> Option<String> {
    if service.is_empty() {
        return Some("service must not be empty".into());
    }
    let (ns, host) = match service.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, service),
    };
    if let Some(ns) = ns {
        let ok = ns == "*"
            || ns == "."
            || (!ns.is_empty()
                && ns
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
        if !ok {
            return Some(format!("invalid namespace {ns:?} in service {service:?}"));
        }
    }
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    checks::host_problem(
        host,
        checks::HostRules {
            wildcard: ns.is_some(),
        },
    )
    .map(|why| format!("invalid service {service:?}: {why}"))
}

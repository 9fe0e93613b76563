//! DestinationRule rules: host, subsets, and the traffic policy (load balancer,
//! outlier detection, upstream TLS, port-level settings, tunnel, retry budget).
//! Connection pools are in [`super::connection_pool`] (Sidecars use them too).

use std::collections::BTreeSet;

use common::istio::networking::{
    ClientTlsMode, ClientTlsSettings, DestinationRuleSpec, OutlierDetection, PortTrafficPolicy,
    RetryBudget, Subset, TrafficPolicy, TunnelSettings,
};

use super::super::checks;
use super::super::field::{Field, ResourceCtx};
use super::connection_pool::connection_pool;
use super::load_balancer::load_balancer;
use super::util;

/// Validates a DestinationRule spec; `f` is at `spec`.
pub fn destination_rule(spec: &DestinationRuleSpec, r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    let mut fh = f.at("host");
    if spec.host.is_empty() {
        fh.error("is required: name the service this rule applies to, such as reviews or reviews.default.svc.cluster.local");
    } else if let Some(p) = util::wildcard_domain_problem(&spec.host) {
        fh.error(format!("host {:?} is not valid: {p}", spec.host));
    }
    if let Some(tp) = &spec.traffic_policy {
        traffic_policy(&mut f.at("trafficPolicy"), tp, r.namespace);
    }
    let mut names = BTreeSet::new();
    let mut fs = f.at("subsets");
    for (i, s) in spec.subsets.iter().enumerate() {
        let mut fi = fs.index(i);
        if !s.name.is_empty() && !names.insert(s.name.as_str()) {
            fi.at("name").error(format!(
                "duplicate subset name {:?}; every subset needs its own name",
                s.name
            ));
        }
        subset(&mut fi, s, r.namespace);
    }
    util::export_to(
        &mut f.at("exportTo"),
        r.namespace,
        &spec.export_to,
        false,
        spec.workload_selector.is_some(),
    );
    util::beta_selector(
        &mut f.at("workloadSelector"),
        spec.workload_selector.as_ref(),
    );
}

fn subset(f: &mut Field<'_>, s: &Subset, ns: &str) {
    util::subset_name(&mut f.at("name"), &s.name);
    checks::labels(&mut f.at("labels"), &s.labels);
    if let Some(tp) = &s.traffic_policy {
        traffic_policy(&mut f.at("trafficPolicy"), tp, ns);
    }
}

/// A traffic policy of the service or of a subset.
fn traffic_policy(f: &mut Field<'_>, tp: &TrafficPolicy, ns: &str) {
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        f.error("is empty: set at least one of loadBalancer, connectionPool, outlierDetection, tls, portLevelSettings, tunnel, proxyProtocol or retryBudget, or remove it");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        f.error("tunnel and proxyProtocol cannot be set together; keep one");
    }
    if let Some(od) = &tp.outlier_detection {
        outlier_detection(&mut f.at("outlierDetection"), od);
    }
    if let Some(cp) = &tp.connection_pool {
        connection_pool(&mut f.at("connectionPool"), cp);
    }
    if let Some(lb) = &tp.load_balancer {
        load_balancer(
            &mut f.at("loadBalancer"),
            lb,
            tp.outlier_detection.is_some(),
        );
    }
    if let Some(tls) = &tp.tls {
        client_tls(&mut f.at("tls"), tls, ns);
    }
    let mut fp = f.at("portLevelSettings");
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        port_policy(&mut fp.index(i), p, ns);
    }
    if let Some(t) = &tp.tunnel {
        tunnel(&mut f.at("tunnel"), t);
    }
    if let Some(rb) = &tp.retry_budget {
        retry_budget(&mut f.at("retryBudget"), rb);
    }
}

fn port_policy(f: &mut Field<'_>, p: &PortTrafficPolicy, ns: &str) {
    match &p.port {
        None => f
            .at("port")
            .error("is required: say which port of the service this policy applies to, as port: {number: 9080}"),
        Some(ps) => {
            util::port_number(&mut f.at("port").at("number"), ps.number.unwrap_or(0));
        }
    }
    if p.load_balancer.is_none()
        && p.connection_pool.is_none()
        && p.outlier_detection.is_none()
        && p.tls.is_none()
    {
        f.error("is empty: set at least one of loadBalancer, connectionPool, outlierDetection or tls for this port");
        return;
    }
    if let Some(od) = &p.outlier_detection {
        outlier_detection(&mut f.at("outlierDetection"), od);
    }
    if let Some(cp) = &p.connection_pool {
        connection_pool(&mut f.at("connectionPool"), cp);
    }
    if let Some(lb) = &p.load_balancer {
        load_balancer(&mut f.at("loadBalancer"), lb, p.outlier_detection.is_some());
    }
    if let Some(tls) = &p.tls {
        client_tls(&mut f.at("tls"), tls, ns);
    }
}

fn outlier_detection(f: &mut Field<'_>, od: &OutlierDetection) {
    if let Some(d) = &od.base_ejection_time {
        checks::istio_duration(&mut f.at("baseEjectionTime"), d);
    }
    if let Some(d) = &od.interval {
        checks::istio_duration(&mut f.at("interval"), d);
    }
    if od.consecutive_errors.is_some_and(|n| n != 0) {
        f.at("consecutiveErrors").warn(
            "is deprecated; use consecutive5xxErrors (or consecutiveGatewayErrors for 502, 503 and 504 only) instead",
        );
    }
    if od.consecutive_errors.is_some_and(|n| n < 0) {
        f.at("consecutiveErrors").error("must be 0 or more");
    }
    if od.split_external_local_origin_errors != Some(true)
        && od.consecutive_local_origin_failures.is_some_and(|n| n > 0)
    {
        f.at("consecutiveLocalOriginFailures").error(
            "has no effect unless splitExternalLocalOriginErrors is true; set splitExternalLocalOriginErrors: true, or remove this field",
        );
    }
    if let Some(p) = od.max_ejection_percent {
        util::int_percent(&mut f.at("maxEjectionPercent"), i64::from(p));
    }
    if let Some(p) = od.min_health_percent {
        util::int_percent(&mut f.at("minHealthPercent"), i64::from(p));
    }
    let mut fc = f.at("outlierDetectionHttpErrorCodes");
    for (i, c) in od.outlier_detection_http_error_codes.iter().enumerate() {
        checks::http_status(&mut fc.index(i), i64::from(*c), 100..=599);
    }
}

/// Istio's `ValidateTLS` for upstream (client) TLS.
fn client_tls(f: &mut Field<'_>, t: &ClientTlsSettings, ns: &str) {
    let mode = t.mode.unwrap_or_default();
    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    let credential = set(&t.credential_name);
    if let Some(cred) = t.credential_name.as_deref()
        && let Some(rest) = cred.strip_prefix("configmap://")
    {
        let (cm_ns, name) = rest.split_once('/').map_or((ns, rest), |(a, b)| (a, b));
        if name.is_empty() {
            f.at("credentialName")
                .error("configmap:// needs a config map name, as configmap://my-ca-bundle");
        } else if cm_ns != ns {
            f.at("credentialName").error(format!(
                "a configmap:// credential must be in this resource's namespace {ns:?} (got {cm_ns:?})"
            ));
        }
    }
    if t.insecure_skip_verify == Some(true) {
        let san = !t.subject_alt_names.is_empty();
        match mode {
            ClientTlsMode::Simple if set(&t.ca_certificates) || credential || san => {
                f.at("insecureSkipVerify").error(
                    "is true, so the server is not verified; remove caCertificates, credentialName and subjectAltNames, or set insecureSkipVerify to false",
                );
            }
            ClientTlsMode::Mutual if set(&t.ca_certificates) || san => {
                f.at("insecureSkipVerify").error(
                    "is true, so the server is not verified; remove caCertificates and subjectAltNames, or set insecureSkipVerify to false",
                );
            }
            _ => {}
        }
    }
    match mode {
        ClientTlsMode::Simple | ClientTlsMode::Mutual if credential => {
            for (field, v) in [
                ("clientCertificate", &t.client_certificate),
                ("privateKey", &t.private_key),
                ("caCertificates", &t.ca_certificates),
                ("caCrl", &t.ca_crl),
            ] {
                if set(v) {
                    f.at(field).error(
                        "cannot be combined with credentialName: the certificates come from the credential; remove this field or credentialName",
                    );
                }
            }
        }
        ClientTlsMode::Mutual => {
            if !set(&t.client_certificate) {
                f.at("clientCertificate").error(
                    "is required for MUTUAL TLS: give the client certificate file, or use credentialName",
                );
            }
            if !set(&t.private_key) {
                f.at("privateKey").error(
                    "is required for MUTUAL TLS: give the client private key file, or use credentialName",
                );
            }
        }
        ClientTlsMode::IstioMutual => {
            for (field, v) in [
                ("clientCertificate", &t.client_certificate),
                ("privateKey", &t.private_key),
                ("caCertificates", &t.ca_certificates),
                ("credentialName", &t.credential_name),
            ] {
                if set(v) {
                    f.at(field).warn(
                        "is ignored with ISTIO_MUTUAL, which uses Istio's own workload certificates; remove it, or use MUTUAL",
                    );
                }
            }
        }
        _ => {}
    }
}

fn tunnel(f: &mut Field<'_>, t: &TunnelSettings) {
    if let Some(p) = t.protocol.as_deref()
        && !p.is_empty()
        && p != "CONNECT"
        && p != "POST"
    {
        f.at("protocol").error(format!(
            "{p:?} is not a tunnel protocol; use \"CONNECT\" or \"POST\""
        ));
    }
    let mut fh = f.at("targetHost");
    if t.target_host.is_empty() {
        fh.error("is required: the host the connection is tunneled to (a name or an IP)");
    } else if !util::is_ip(&t.target_host)
        && let Some(p) = util::fqdn_problem(&t.target_host)
    {
        fh.error(format!(
            "{:?} is neither a valid host name nor an IP address: {p}",
            t.target_host
        ));
    }
    util::port_number(&mut f.at("targetPort"), t.target_port);
}

fn retry_budget(f: &mut Field<'_>, rb: &RetryBudget) {
    if let Some(p) = rb.percent {
        checks::percent_value(&mut f.at("percent"), p);
    }
    if let Some(d) = &rb.budget_interval {
        checks::istio_duration(&mut f.at("budgetInterval"), d);
    }
}

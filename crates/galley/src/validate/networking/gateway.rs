//! Gateway rules: servers (hosts, port, bind, TLS per protocol, unique port names)
//! and `ServerTLSSettings`, which Sidecar ingress listeners share; plus the
//! `namespace/host` form that Gateway and Sidecar hosts use.

use std::collections::BTreeSet;

use common::istio::networking::{
    GatewaySpec, Server, ServerTlsMode, ServerTlsSettings, TlsProtocol,
};

use super::super::field::{Field, ResourceCtx};
use super::util::{self, Protocol};

/// Cipher suites Envoy (BoringSSL) accepts in `cipherSuites`.
const CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-PSK-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "ECDHE-PSK-AES128-CBC-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "ECDHE-PSK-AES256-CBC-SHA",
    "AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-SHA",
    "PSK-AES128-CBC-SHA",
    "AES256-SHA",
    "PSK-AES256-CBC-SHA",
    "DES-CBC3-SHA",
];

/// Validates a Gateway spec; `f` is at `spec`.
pub fn gateway(spec: &GatewaySpec, r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    if !r.name.is_empty() && !util::is_dns1123_label(r.name) {
        f.error(format!(
            "the Gateway's name {:?} (metadata.name) must be a DNS-1123 label: lower-case letters, digits and '-', without dots",
            r.name
        ));
    }
    if spec.servers.is_empty() {
        f.at("servers").error(
            "is required: a Gateway needs at least one server (port, hosts and, for HTTPS, tls)",
        );
    }
    let mut names = BTreeSet::new();
    let mut fs = f.at("servers");
    for (i, s) in spec.servers.iter().enumerate() {
        let mut fi = fs.index(i);
        server(&mut fi, s);
        if !s.port.name.is_empty() && !names.insert(s.port.name.as_str()) {
            fi.at("port").at("name").error(format!(
                "duplicate port name {:?}; every server's port needs its own name",
                s.port.name
            ));
        }
        let http = Protocol::parse(&s.port.protocol).is_some_and(Protocol::is_http);
        if !http
            && s.tls
                .as_ref()
                .is_some_and(|t| t.https_redirect == Some(true))
        {
            fi.at("tls")
                .at("httpsRedirect")
                .warn("has an effect only on HTTP servers; remove it from this server");
        }
    }
}

fn server(f: &mut Field<'_>, s: &Server) {
    if s.hosts.is_empty() {
        f.at("hosts")
            .error("is required: list the hosts this server exposes, such as \"*\" or \"bookinfo.example.com\"");
    }
    let mut fh = f.at("hosts");
    for (i, h) in s.hosts.iter().enumerate() {
        namespace_host(&mut fh.index(i), h, true);
    }
    let bind = s.bind.as_deref().unwrap_or("");
    let port_ok = server_port(&mut f.at("port"), s, bind);
    if let Some(path) = bind.strip_prefix("unix://") {
        util::unix_address(&mut f.at("bind"), path);
        if s.port.number != 0 {
            f.at("port").at("number").error(
                "must be 0 when bind is a unix domain socket; remove the number or bind to an IP",
            );
        }
    } else if !bind.is_empty() && !util::is_ip(bind) {
        f.at("bind").error(format!(
            "{bind:?} is not a valid IP address or unix:// socket"
        ));
    }
    if let Some(tls) = &s.tls {
        server_tls(&mut f.at("tls"), tls);
    }
    if !port_ok {
        return;
    }
    let Some(p) = Protocol::parse(&s.port.protocol) else {
        return;
    };
    match &s.tls {
        None if p.is_tls() => f.at("tls").error(format!(
            "is required for {} servers: set mode (SIMPLE, MUTUAL, PASSTHROUGH, ...) and credentialName or certificate files",
            s.port.protocol
        )),
        Some(t) if !p.is_tls() => {
            if p.is_http() {
                let passthrough = matches!(
                    t.mode.unwrap_or_default(),
                    ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                );
                let files = [&t.ca_certificates, &t.private_key, &t.server_certificate]
                    .iter()
                    .any(|v| v.as_deref().is_some_and(|s| !s.is_empty()));
                if !passthrough || files {
                    f.at("tls").error(
                        "plain-text HTTP servers take only tls.httpsRedirect; use protocol HTTPS to terminate TLS",
                    );
                }
            } else {
                f.at("tls").error(format!(
                    "TLS settings are not allowed on {} servers; use protocol TLS or HTTPS",
                    s.port.protocol
                ));
            }
        }
        _ => {}
    }
}

/// The server's port; returns whether it is usable for the protocol rules.
fn server_port(f: &mut Field<'_>, s: &Server, bind: &str) -> bool {
    let p = &s.port;
    let mut ok = true;
    if p.protocol.is_empty() {
        f.at("protocol")
            .error(format!("is required: use one of {}", util::PROTOCOLS));
        ok = false;
    } else if Protocol::parse(&p.protocol).is_none() {
        f.at("protocol").error(format!(
            "unknown protocol {:?}; use one of {}",
            p.protocol,
            util::PROTOCOLS
        ));
        ok = false;
    }
    if (p.number > 0 || !bind.starts_with("unix://"))
        && !util::port_number(&mut f.at("number"), p.number)
    {
        ok = false;
    }
    if p.target_port.is_some_and(|t| t > 0) {
        f.at("targetPort")
            .error("has no effect on Gateways; remove it");
        ok = false;
    }
    if p.name.is_empty() {
        f.at("name")
            .error("is required: name the port, such as http or https-443");
        ok = false;
    }
    ok
}

/// Istio's `validateTLSOptions` for server-side TLS (gateways and sidecar ingress).
pub(super) fn server_tls(f: &mut Field<'_>, t: &ServerTlsSettings) {
    let set = |o: &Option<String>| o.as_deref().is_some_and(|s| !s.is_empty());
    if matches!(
        t.min_protocol_version,
        Some(TlsProtocol::TlsV1_0 | TlsProtocol::TlsV1_1)
    ) && t.cipher_suites.is_empty()
    {
        f.at("minProtocolVersion").warn(
            "TLS versions below 1.2 need compatible cipherSuites, which the defaults no longer include; list them in cipherSuites",
        );
    }
    if let (Some(min), Some(max)) = (t.min_protocol_version, t.max_protocol_version)
        && min != TlsProtocol::TlsAuto
        && max != TlsProtocol::TlsAuto
        && (min as u8) > (max as u8)
    {
        f.at("minProtocolVersion")
            .error("is higher than maxProtocolVersion; lower it or raise maxProtocolVersion");
    }
    let mut seen = BTreeSet::new();
    let mut fc = f.at("cipherSuites");
    for (i, c) in t.cipher_suites.iter().enumerate() {
        if !CIPHER_SUITES.contains(&c.as_str()) {
            fc.index(i)
                .warn(format!("unknown cipher suite {c:?} is ignored; use OpenSSL-style names such as ECDHE-RSA-AES128-GCM-SHA256"));
        } else if !seen.insert(c.as_str()) {
            fc.index(i)
                .warn(format!("duplicate cipher suite {c:?} is ignored"));
        }
    }
    let mode = t.mode.unwrap_or_default();
    match mode {
        ServerTlsMode::IstioMutual => {
            for (field, v) in [
                ("serverCertificate", &t.server_certificate),
                ("privateKey", &t.private_key),
                ("caCertificates", &t.ca_certificates),
                ("credentialName", &t.credential_name),
            ] {
                if set(v) {
                    f.at(field).error(
                        "cannot be set with ISTIO_MUTUAL, which uses Istio's own workload certificates; remove it, or use MUTUAL",
                    );
                }
            }
            return;
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if [
                &t.ca_crl,
                &t.server_certificate,
                &t.private_key,
                &t.ca_certificates,
                &t.credential_name,
            ]
            .iter()
            .any(|v| set(v))
            {
                f.warn(format!(
                    "{} mode does not terminate TLS, so the certificates given are ignored; remove them, or set mode to SIMPLE or MUTUAL",
                    if mode == ServerTlsMode::Passthrough { "PASSTHROUGH" } else { "AUTO_PASSTHROUGH" }
                ));
            }
            return;
        }
        _ => {}
    }
    // SIMPLE, MUTUAL, OPTIONAL_MUTUAL: certificates from a credential or from files.
    let credential = set(&t.credential_name) || !t.credential_names.is_empty();
    let files = set(&t.server_certificate) || set(&t.private_key);
    let sources = [
        ("serverCertificate/privateKey", files),
        ("credentialName", set(&t.credential_name)),
        ("credentialNames", !t.credential_names.is_empty()),
        ("tlsCertificates", !t.tls_certificates.is_empty()),
    ];
    if sources.iter().filter(|(_, s)| *s).count() > 1 {
        let names: Vec<&str> = sources
            .iter()
            .filter(|(_, s)| *s)
            .map(|(n, _)| *n)
            .collect();
        f.error(format!(
            "give the server certificate one way only, not {}",
            names.join(" and ")
        ));
    }
    if t.credential_names.len() > 2 {
        f.at("credentialNames")
            .error("takes at most 2 credentials (one RSA and one ECDSA)");
    }
    if t.tls_certificates.len() > 2 {
        f.at("tlsCertificates")
            .error("takes at most 2 certificates (one RSA and one ECDSA)");
    }
    let mutual = matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual);
    let mode_name = if mode == ServerTlsMode::Simple {
        "SIMPLE"
    } else {
        "MUTUAL"
    };
    if !credential {
        if t.tls_certificates.is_empty() {
            if !set(&t.server_certificate) {
                f.at("serverCertificate").error(format!(
                    "is required for {mode_name} TLS: give the certificate file, or use credentialName (a Kubernetes secret)"
                ));
            }
            if !set(&t.private_key) {
                f.at("privateKey").error(format!(
                    "is required for {mode_name} TLS: give the key file, or use credentialName (a Kubernetes secret)"
                ));
            }
        } else {
            let mut ft = f.at("tlsCertificates");
            for (i, c) in t.tls_certificates.iter().enumerate() {
                if !set(&c.server_certificate) {
                    ft.index(i)
                        .at("serverCertificate")
                        .error("is required: the certificate file");
                }
                if !set(&c.private_key) {
                    ft.index(i)
                        .at("privateKey")
                        .error("is required: the private key file");
                }
            }
        }
        let ca =
            set(&t.ca_certificates) || t.tls_certificates.iter().any(|c| set(&c.ca_certificates));
        if mutual && !ca && !set(&t.ca_cert_credential_name) {
            f.at("caCertificates").error(
                "is required for MUTUAL TLS: give the CA bundle that client certificates are checked against, or use credentialName",
            );
        }
    }
    if set(&t.ca_crl) {
        if set(&t.credential_name) {
            f.at("caCrl").error(
                "is not supported with credentialName; put the CRL in the credential (as ca.crl)",
            );
        }
        if mode == ServerTlsMode::Simple {
            f.at("caCrl").error(
                "is not supported with SIMPLE TLS, which does not check client certificates; use MUTUAL or remove it",
            );
        }
    }
}

/// A `namespace/host` entry of a Gateway server (plain `host` allowed there) or a
/// Sidecar egress listener (Istio's `ValidateNamespaceSlashWildcardHostname`).
pub(super) fn namespace_host(f: &mut Field<'_>, entry: &str, gateway: bool) {
    let Some((ns, host)) = entry.split_once('/') else {
        if gateway {
            hostname_part(f, entry, entry, true);
        } else {
            f.error(format!(
                "{entry:?} must be in the form namespace/host, such as \"./*\", \"istio-system/*\" or \"*/reviews.default.svc.cluster.local\""
            ));
        }
        return;
    };
    if ns.is_empty() || host.is_empty() {
        f.error(format!(
            "{entry:?} has an empty namespace or host; write namespace/host, such as \"./*\""
        ));
        return;
    }
    let ns_ok = ns == "*" || ns == "." || (!gateway && ns == "~") || util::is_dns1123_label(ns);
    if !ns_ok {
        f.error(format!(
            "namespace {ns:?} in {entry:?} must be \"*\" (any), \".\" (this one){} or a namespace name",
            if gateway { "" } else { ", \"~\" (none)" }
        ));
    }
    hostname_part(f, entry, host, gateway);
}

fn hostname_part(f: &mut Field<'_>, entry: &str, host: &str, gateway: bool) {
    if host != "*" && !host.contains('.') && !(gateway && util::is_ip(host)) {
        f.error(format!(
            "host {host:?} in {entry:?} is a short name; write the fully qualified name, such as reviews.default.svc.cluster.local"
        ));
        return;
    }
    if let Some(p) = util::wildcard_domain_problem(host)
        && !(gateway && util::is_ip(host))
    {
        f.error(format!("host {host:?} in {entry:?} is not valid: {p}"));
        return;
    }
    if host.contains('*') && host != "*" && !host.starts_with("*.") {
        f.error(format!(
            "host {host:?} in {entry:?} has a partial wildcard; a wildcard must be the whole first label, as in *.example.com"
        ));
    }
}

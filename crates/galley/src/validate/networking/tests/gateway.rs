use super::{error, valid, warning};

const GW: &str = "Gateway";

#[test]
fn realistic_gateways_pass() {
    valid(
        GW,
        r#"{selector: {istio: ingressgateway}, servers: [
              {port: {number: 80, name: http, protocol: HTTP}, hosts: [uk.bookinfo.com, eu.bookinfo.com], tls: {httpsRedirect: true}},
              {port: {number: 443, name: https-443, protocol: HTTPS}, hosts: ["bookinfo-namespace/*.bookinfo.com"], tls: {mode: SIMPLE, credentialName: bookinfo-secret}},
              {port: {number: 8443, name: https-8443, protocol: HTTPS}, hosts: ["*"], tls: {mode: MUTUAL, serverCertificate: /s.pem, privateKey: /k.pem, caCertificates: /ca.pem}},
              {port: {number: 15443, name: tls, protocol: TLS}, hosts: ["*.local"], tls: {mode: AUTO_PASSTHROUGH}},
              {port: {number: 2379, name: mongo, protocol: MONGO}, hosts: ["*"]}]}"#,
    );
}

#[test]
fn servers() {
    error(GW, "{servers: []}", "spec.servers", "at least one server");
    error(
        GW,
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}}]}",
        "spec.servers[0].hosts",
        "is required",
    );
    error(
        GW,
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [reviews]}]}",
        "spec.servers[0].hosts[0]",
        "short name",
    );
    error(
        GW,
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"Bad_NS/*\"]}]}",
        "spec.servers[0].hosts[0]",
        "namespace \"Bad_NS\"",
    );
    error(
        GW,
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*foo.com\"]}]}",
        "spec.servers[0].hosts[0]",
        "partial wildcard",
    );
    error(
        GW,
        "{servers: [{port: {number: 80, name: http, protocol: HTTPX}, hosts: [\"*\"]}]}",
        "spec.servers[0].port.protocol",
        "unknown protocol \"HTTPX\"",
    );
    error(
        GW,
        "{servers: [{port: {name: http, protocol: HTTP}, hosts: [\"*\"]}]}",
        "spec.servers[0].port.number",
        "is required",
    );
    error(
        GW,
        "{servers: [{port: {number: 80, protocol: HTTP}, hosts: [\"*\"]}]}",
        "spec.servers[0].port.name",
        "is required",
    );
    error(
        GW,
        "{servers: [{port: {number: 80, name: http, protocol: HTTP, targetPort: 8080}, hosts: [\"*\"]}]}",
        "spec.servers[0].port.targetPort",
        "no effect on Gateways",
    );
    error(
        GW,
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*\"]}, {port: {number: 81, name: http, protocol: HTTP}, hosts: [\"*\"]}]}",
        "spec.servers[1].port.name",
        "duplicate port name",
    );
    error(
        GW,
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*\"], bind: not-an-ip}]}",
        "spec.servers[0].bind",
        "not a valid IP",
    );
}

#[test]
fn tls_per_protocol() {
    error(
        GW,
        "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"]}]}",
        "spec.servers[0].tls",
        "is required for HTTPS servers",
    );
    error(
        GW,
        "{servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: [\"*\"], tls: {mode: SIMPLE, credentialName: c}}]}",
        "spec.servers[0].tls",
        "only tls.httpsRedirect",
    );
    error(
        GW,
        "{servers: [{port: {number: 27017, name: mongo, protocol: MONGO}, hosts: [\"*\"], tls: {mode: SIMPLE, credentialName: c}}]}",
        "spec.servers[0].tls",
        "not allowed on MONGO servers",
    );
    error(
        GW,
        "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: SIMPLE, privateKey: /k.pem}}]}",
        "spec.servers[0].tls.serverCertificate",
        "is required for SIMPLE TLS",
    );
    error(
        GW,
        "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: MUTUAL, serverCertificate: /s.pem, privateKey: /k.pem}}]}",
        "spec.servers[0].tls.caCertificates",
        "is required for MUTUAL TLS",
    );
    error(
        GW,
        "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: ISTIO_MUTUAL, credentialName: c}}]}",
        "spec.servers[0].tls.credentialName",
        "cannot be set with ISTIO_MUTUAL",
    );
    error(
        GW,
        "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: SIMPLE, credentialName: c, serverCertificate: /s.pem, privateKey: /k.pem}}]}",
        "spec.servers[0].tls",
        "one way only",
    );
    error(
        GW,
        "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: SIMPLE, serverCertificate: /s.pem, privateKey: /k.pem, caCrl: /crl.pem}}]}",
        "spec.servers[0].tls.caCrl",
        "not supported with SIMPLE",
    );
    error(
        GW,
        "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: SIMPLE, credentialName: c, minProtocolVersion: TLSV1_3, maxProtocolVersion: TLSV1_2}}]}",
        "spec.servers[0].tls.minProtocolVersion",
        "higher than maxProtocolVersion",
    );
    warning(
        GW,
        "{servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: [\"*\"], tls: {mode: PASSTHROUGH, credentialName: c}}]}",
        "spec.servers[0].tls",
        "ignored",
    );
    warning(
        GW,
        "{servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: SIMPLE, credentialName: c, cipherSuites: [NOT-A-CIPHER]}}]}",
        "spec.servers[0].tls.cipherSuites[0]",
        "unknown cipher suite",
    );
    warning(
        GW,
        "{servers: [{port: {number: 443, name: tls, protocol: TLS}, hosts: [\"*\"], tls: {mode: PASSTHROUGH, httpsRedirect: true}}]}",
        "spec.servers[0].tls.httpsRedirect",
        "only on HTTP servers",
    );
}

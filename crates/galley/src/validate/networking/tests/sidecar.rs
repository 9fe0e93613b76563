use super::{error, valid, warning};

const SC: &str = "Sidecar";

#[test]
fn realistic_sidecars_pass() {
    valid(
        SC,
        r#"{workloadSelector: {labels: {app: productpage}},
            ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: "127.0.0.1:8080", connectionPool: {http: {http1MaxPendingRequests: 100}}},
                      {port: {number: 9443, protocol: HTTPS, name: https}, defaultEndpoint: "unix:///var/run/app.sock",
                       tls: {mode: SIMPLE, serverCertificate: /s.pem, privateKey: /k.pem}}],
            egress: [{port: {number: 9080, protocol: HTTP, name: egresshttp}, hosts: ["prod-us1/*"]},
                     {hosts: ["./*", "istio-system/*", "~/*"]}],
            outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: foo.bar, subset: shiny, port: {number: 5000}}}}"#,
    );
    valid(
        SC,
        "{egress: [{port: {number: 0, protocol: HTTP, name: uds}, bind: \"unix:///var/run/egress.sock\", captureMode: NONE, hosts: [\"*/*\"]}]}",
    );
    valid(SC, "{outboundTrafficPolicy: {mode: REGISTRY_ONLY}}");
}

#[test]
fn shape() {
    error(SC, "{}", "spec", "is empty");
    warning(
        SC,
        "{workloadSelector: {}, outboundTrafficPolicy: {mode: REGISTRY_ONLY}}",
        "spec.workloadSelector",
        "every workload in the namespace",
    );
}

#[test]
fn ingress() {
    error(
        SC,
        "{ingress: [{port: {protocol: HTTP, name: http}, defaultEndpoint: \"127.0.0.1:8080\"}]}",
        "spec.ingress[0].port.number",
        "is required",
    );
    error(
        SC,
        "{ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: \"10.0.0.1:8080\"}]}",
        "spec.ingress[0].defaultEndpoint",
        "127.0.0.1:PORT",
    );
    error(
        SC,
        "{ingress: [{port: {number: 9080, protocol: HTTP, name: http}, defaultEndpoint: \"127.0.0.1:http\"}]}",
        "spec.ingress[0].defaultEndpoint",
        "not a number",
    );
    error(
        SC,
        "{ingress: [{port: {number: 9080, protocol: HTTP, name: a}}, {port: {number: 9080, protocol: HTTP, name: b}}]}",
        "spec.ingress[1].port.number",
        "used by another ingress listener",
    );
    error(
        SC,
        "{ingress: [{port: {number: 9080, protocol: HTTP, name: Bad_Name}}]}",
        "spec.ingress[0].port.name",
        "not valid",
    );
    error(
        SC,
        "{ingress: [{port: {number: 9443, protocol: HTTPS, name: https}, tls: {mode: ISTIO_MUTUAL}}]}",
        "spec.ingress[0].tls.mode",
        "cannot be used on sidecar ingress",
    );
    error(
        SC,
        "{ingress: [{port: {number: 9443, protocol: HTTPS, name: https}, tls: {mode: SIMPLE, credentialName: c}}]}",
        "spec.ingress[0].tls.credentialName",
        "not supported on sidecar ingress",
    );
    error(
        SC,
        "{ingress: [{port: {number: 9080, protocol: HTTP, name: http, targetPort: 8080}}]}",
        "spec.ingress[0].port.targetPort",
        "no effect on Sidecars",
    );
    warning(
        SC,
        "{ingress: [{port: {number: 3306, protocol: TCP, name: tcp}, connectionPool: {http: {maxRetries: 1}}}]}",
        "spec.ingress[0].connectionPool.http",
        "only the tcp settings",
    );
}

#[test]
fn egress() {
    error(
        SC,
        "{egress: [{hosts: [\"./*\"]}, {port: {number: 80, protocol: HTTP, name: http}, hosts: [\"./*\"]}]}",
        "spec.egress[0]",
        "must be the last",
    );
    error(
        SC,
        "{egress: [{port: {number: 80, protocol: HTTP, name: http}}]}",
        "spec.egress[0].hosts",
        "is required",
    );
    error(
        SC,
        "{egress: [{hosts: [reviews.default.svc.cluster.local]}]}",
        "spec.egress[0].hosts[0]",
        "namespace/host",
    );
    error(
        SC,
        "{egress: [{hosts: [\"./reviews\"]}]}",
        "spec.egress[0].hosts[0]",
        "short name",
    );
    error(
        SC,
        "{egress: [{hosts: [\"Bad_NS/*\"]}]}",
        "spec.egress[0].hosts[0]",
        "namespace \"Bad_NS\"",
    );
    error(
        SC,
        "{egress: [{port: {number: 0, protocol: HTTP, name: uds}, hosts: [\"./*\"]}]}",
        "spec.egress[0].bind",
        "unix domain socket",
    );
    error(
        SC,
        "{egress: [{port: {number: 0, protocol: HTTP, name: uds}, bind: \"unix:///a.sock\", captureMode: IPTABLES, hosts: [\"./*\"]}]}",
        "spec.egress[0].captureMode",
        "DEFAULT or NONE",
    );
    warning(
        SC,
        "{egress: [{hosts: [\"*/*\", \"./a.example.com\"]}]}",
        "spec.egress[0].hosts",
        "already selects every host",
    );
    warning(
        SC,
        "{egress: [{hosts: [\"./*\", \"./a.example.com\"]}]}",
        "spec.egress[0].hosts[1]",
        "duplicates or is covered",
    );
}

#[test]
fn outbound_traffic_policy() {
    error(
        SC,
        "{outboundTrafficPolicy: {mode: REGISTRY_ONLY, egressProxy: {host: proxy.example.com, port: {number: 3128}}}}",
        "spec.outboundTrafficPolicy.egressProxy",
        "only with mode ALLOW_ANY",
    );
    error(
        SC,
        "{outboundTrafficPolicy: {mode: ALLOW_ANY, egressProxy: {host: proxy.example.com}}}",
        "spec.outboundTrafficPolicy.egressProxy.port",
        "is required",
    );
}

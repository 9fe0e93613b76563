use super::{error, valid, warning};

const SE: &str = "ServiceEntry";
const WE: &str = "WorkloadEntry";
const WG: &str = "WorkloadGroup";

#[test]
fn realistic_service_entries_pass() {
    valid(
        SE,
        "{hosts: [api.example.com], ports: [{number: 443, name: https, protocol: HTTPS}], resolution: DNS, location: MESH_EXTERNAL}",
    );
    valid(
        SE,
        "{hosts: [mymongodb.somedomain], addresses: [192.192.192.192/24], ports: [{number: 27018, name: mongodb, protocol: MONGO}], location: MESH_INTERNAL, resolution: STATIC, endpoints: [{address: 2.2.2.2}, {address: 3.3.3.3, ports: {mongodb: 27019}}]}",
    );
    valid(
        SE,
        "{hosts: [\"*.example.com\"], ports: [{number: 443, name: tls, protocol: TLS}], resolution: NONE}",
    );
    valid(
        SE,
        "{hosts: [details.bookinfo.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: STATIC, workloadSelector: {labels: {app: details-legacy}}}",
    );
    valid(
        SE,
        "{hosts: [unix.example.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: STATIC, endpoints: [{address: \"unix:///var/run/example/socket\"}]}",
    );
}

#[test]
fn hosts_addresses_and_ports() {
    error(
        SE,
        "{ports: [{number: 80, name: http, protocol: HTTP}]}",
        "spec.hosts",
        "is required",
    );
    error(
        SE,
        "{hosts: [\"*\"], ports: [{number: 80, name: http, protocol: HTTP}]}",
        "spec.hosts[0]",
        "is not allowed",
    );
    warning(
        SE,
        "{hosts: [\"*foo.com\"], ports: [{number: 80, name: http, protocol: HTTP}]}",
        "spec.hosts[0]",
        "partial wildcard",
    );
    error(
        SE,
        "{hosts: [a.com], addresses: [10.0.0.0/8], resolution: DNS, ports: [{number: 80, name: http, protocol: HTTP}]}",
        "spec.addresses[0]",
        "only with resolution NONE or STATIC",
    );
    error(
        SE,
        "{hosts: [a.com], addresses: [not-an-ip], ports: [{number: 80, name: http, protocol: HTTP}]}",
        "spec.addresses[0]",
        "not a valid IP address or CIDR",
    );
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}, {number: 80, name: http2, protocol: HTTP}]}",
        "spec.ports[1].number",
        "listed twice",
    );
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}, {number: 81, name: http, protocol: HTTP}]}",
        "spec.ports[1].name",
        "duplicate port name",
    );
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, protocol: HTTP}]}",
        "spec.ports[0].name",
        "is required",
    );
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: SMTP}]}",
        "spec.ports[0].protocol",
        "unknown protocol",
    );
    error(
        SE,
        "{hosts: [a.com, b.com], resolution: DNS, ports: [{number: 3306, name: tcp, protocol: TCP}]}",
        "spec.ports[0].protocol",
        "several hosts share",
    );
}

#[test]
fn resolution_and_endpoints() {
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: NONE, endpoints: [{address: 1.1.1.1}]}",
        "spec.endpoints",
        "resolution is NONE",
    );
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: STATIC, endpoints: [{address: foo.com}]}",
        "spec.endpoints[0].address",
        "resolution STATIC needs IPs",
    );
    error(
        SE,
        "{hosts: [\"*.a.com\"], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}",
        "spec.hosts[0]",
        "cannot be resolved",
    );
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS_ROUND_ROBIN, endpoints: [{address: b.com}, {address: c.com}]}",
        "spec.endpoints",
        "at most one",
    );
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS, endpoints: [{address: b.com, ports: {https: 8443}}]}",
        "spec.endpoints[0].ports.https",
        "not a port of the ServiceEntry",
    );
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: STATIC, workloadSelector: {labels: {app: a}}, endpoints: [{address: 1.1.1.1}]}",
        "spec.endpoints",
        "cannot be combined with workloadSelector",
    );
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: STATIC, endpoints: [{address: \"unix://relative\"}]}",
        "spec.endpoints[0].address",
        "absolute path",
    );
    error(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: STATIC, workloadSelector: {labels: {\"app\": \"a*\"}}}",
        "spec.workloadSelector.labels.app",
        "wildcards are not supported",
    );
    warning(
        SE,
        "{hosts: [a.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS, workloadSelector: {labels: {app: a}}}",
        "spec.workloadSelector",
        "no effect when resolution is DNS",
    );
}

#[test]
fn workload_entries() {
    valid(
        WE,
        "{address: 2.2.2.2, ports: {http: 8080}, labels: {app: vm}, serviceAccount: vm-sa}",
    );
    valid(WE, "{address: vm1.example.com}");
    error(WE, "{labels: {app: vm}}", "spec.address", "is required");
    error(
        WE,
        "{address: \"bad host!\"}",
        "spec.address",
        "neither an IP address nor a valid host name",
    );
    error(
        WE,
        "{address: 1.1.1.1, ports: {http: 0}}",
        "spec.ports.http",
        "out of range",
    );
    warning(
        WE,
        "{network: remote}",
        "spec.address",
        "is unset with network",
    );
}

#[test]
fn workload_groups() {
    valid(
        WG,
        "{metadata: {labels: {app: reviews}}, template: {ports: {grpc: 3550}, serviceAccount: default}, probe: {periodSeconds: 4, httpGet: {path: /ready, port: 3100, scheme: HTTPS}}}",
    );
    error(
        WG,
        "{template: {}, probe: {periodSeconds: 4}}",
        "spec.probe",
        "exactly one of httpGet, tcpSocket, exec, grpc",
    );
    error(
        WG,
        "{template: {}, probe: {timeoutSeconds: -1, tcpSocket: {port: 80}}}",
        "spec.probe.timeoutSeconds",
        "must be 0 or more",
    );
    error(
        WG,
        "{template: {}, probe: {httpGet: {port: 80, scheme: FTP}}}",
        "spec.probe.httpGet.scheme",
        "\"HTTP\" or \"HTTPS\"",
    );
    error(
        WG,
        "{template: {}, probe: {exec: {command: []}}}",
        "spec.probe.exec.command",
        "is required",
    );
    error(
        WG,
        "{template: {}, probe: {tcpSocket: {host: localhost}}}",
        "spec.probe.tcpSocket.port",
        "is required",
    );
}

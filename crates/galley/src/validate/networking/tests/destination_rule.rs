use super::{error, valid, warning};

const DR: &str = "DestinationRule";

#[test]
fn realistic_destination_rules_pass() {
    valid(
        DR,
        r#"{host: ratings.prod.svc.cluster.local,
            trafficPolicy: {
              loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}, ringHash: {minimumRingSize: 1024}},
                             localityLbSetting: {enabled: true, distribute: [{from: "us-west/zone1/*", to: {"us-west/zone1/*": 80, "us-west/zone2/*": 20}}]}},
              connectionPool: {tcp: {maxConnections: 100, connectTimeout: 30ms, tcpKeepalive: {time: 7200s, interval: 75s}, idleTimeout: 0s},
                               http: {http2MaxRequests: 1000, maxRequestsPerConnection: 10, h2UpgradePolicy: UPGRADE}},
              outlierDetection: {consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m, maxEjectionPercent: 100},
              tls: {mode: SIMPLE, credentialName: client-credential, sni: ratings.example.com},
              portLevelSettings: [{port: {number: 80}, loadBalancer: {simple: LEAST_REQUEST}},
                                  {port: {number: 9443}, loadBalancer: {consistentHash: {maglev: {tableSize: 65537}, httpHeaderName: x-user}}}],
              retryBudget: {percent: 20, minRetryConcurrency: 3}},
            subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}}]}"#,
    );
    valid(
        DR,
        "{host: a.com, trafficPolicy: {tls: {mode: MUTUAL, clientCertificate: /c.pem, privateKey: /k.pem}}}",
    );
    valid(
        DR,
        "{host: a.com, trafficPolicy: {tunnel: {targetHost: 192.168.1.2, targetPort: 443}}}",
    );
}

#[test]
fn host_and_subsets() {
    error(
        DR,
        "{trafficPolicy: {loadBalancer: {simple: RANDOM}}}",
        "spec.host",
        "is required",
    );
    error(DR, "{host: 1.2.3.4}", "spec.host", "all digits");
    error(
        DR,
        "{host: a.com, subsets: [{name: v1}, {name: v1}]}",
        "spec.subsets[1].name",
        "duplicate subset name",
    );
    error(
        DR,
        "{host: a.com, subsets: [{labels: {version: v1}}]}",
        "spec.subsets[0].name",
        "is required",
    );
    error(
        DR,
        "{host: a.com, subsets: [{name: v1, labels: {\"bad key!\": x}}]}",
        "spec.subsets[0].labels[\"bad key!\"]",
        "not valid",
    );
    error(
        DR,
        "{host: a.com, workloadSelector: {matchLabels: {app: a}}, exportTo: [\"*\"]}",
        "spec.exportTo",
        "only to its own namespace",
    );
}

#[test]
fn traffic_policy_shape() {
    error(
        DR,
        "{host: a.com, trafficPolicy: {}}",
        "spec.trafficPolicy",
        "is empty",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {tunnel: {targetHost: b.com, targetPort: 80}, proxyProtocol: {version: V1}}}",
        "spec.trafficPolicy",
        "cannot be set together",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {portLevelSettings: [{loadBalancer: {simple: RANDOM}}]}}",
        "spec.trafficPolicy.portLevelSettings[0].port",
        "is required",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {portLevelSettings: [{port: {number: 80}}]}}",
        "spec.trafficPolicy.portLevelSettings[0]",
        "is empty",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {tunnel: {protocol: GET, targetHost: b.com, targetPort: 80}}}",
        "spec.trafficPolicy.tunnel.protocol",
        "\"CONNECT\" or \"POST\"",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {tunnel: {targetHost: b.com}}}",
        "spec.trafficPolicy.tunnel.targetPort",
        "is required",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {retryBudget: {percent: 150}}}",
        "spec.trafficPolicy.retryBudget.percent",
        "out of range",
    );
}

#[test]
fn outlier_detection() {
    error(
        DR,
        "{host: a.com, trafficPolicy: {outlierDetection: {interval: 0s}}}",
        "spec.trafficPolicy.outlierDetection.interval",
        "must be at least 1ms (got 0s)",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {outlierDetection: {maxEjectionPercent: 101}}}",
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent",
        "between 0 and 100",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {outlierDetection: {consecutiveLocalOriginFailures: 3}}}",
        "spec.trafficPolicy.outlierDetection.consecutiveLocalOriginFailures",
        "splitExternalLocalOriginErrors",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {outlierDetection: {outlierDetectionHttpErrorCodes: [999]}}}",
        "spec.trafficPolicy.outlierDetection.outlierDetectionHttpErrorCodes[0]",
        "out of range",
    );
}

#[test]
fn connection_pool() {
    error(
        DR,
        "{host: a.com, trafficPolicy: {connectionPool: {}}}",
        "spec.trafficPolicy.connectionPool",
        "is empty",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {connectionPool: {tcp: {maxConnections: -1}}}}",
        "spec.trafficPolicy.connectionPool.tcp.maxConnections",
        "must be 0 or more (got -1)",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}}}",
        "spec.trafficPolicy.connectionPool.http.useClientProtocol",
        "h2UpgradePolicy is UPGRADE",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {connectionPool: {tcp: {connectTimeout: 0.5ms}}}}",
        "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        "at least 1ms",
    );
}

#[test]
fn load_balancer() {
    error(
        DR,
        "{host: a.com, trafficPolicy: {loadBalancer: {simple: RANDOM, consistentHash: {useSourceIp: true}}}}",
        "spec.trafficPolicy.loadBalancer",
        "only one of simple, consistentHash",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x, useSourceIp: true}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash",
        "only one of httpHeaderName",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {loadBalancer: {consistentHash: {httpCookie: {ttl: 10s}}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name",
        "is required",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, maglev: {tableSize: 1000}}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize",
        "prime",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {loadBalancer: {consistentHash: {useSourceIp: true, minimumRingSize: 10, ringHash: {minimumRingSize: 10}}}}}",
        "spec.trafficPolicy.loadBalancer.consistentHash.minimumRingSize",
        "cannot be combined with ringHash",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: us-west, to: {us-west: 50, us-east: 40}}]}}}}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to",
        "add up to 90",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}, loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: us-east}]}}}}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.failover[0]",
        "different region",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {loadBalancer: {localityLbSetting: {distribute: [{from: \"us-*/zone\", to: {us-west: 100}}]}}}}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute",
        "only at the end",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {loadBalancer: {warmup: {minimumPercent: 10}}}}",
        "spec.trafficPolicy.loadBalancer.warmup.duration",
        "is required",
    );
    warning(
        DR,
        "{host: a.com, trafficPolicy: {loadBalancer: {localityLbSetting: {failover: [{from: us-east, to: us-west}]}}}}",
        "spec.trafficPolicy.loadBalancer.localityLbSetting",
        "outlier detection",
    );
    warning(
        DR,
        "{host: a.com, trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN, warmupDurationSecs: 30s}}}",
        "spec.trafficPolicy.loadBalancer.warmupDurationSecs",
        "use warmup",
    );
}

#[test]
fn client_tls() {
    error(
        DR,
        "{host: a.com, trafficPolicy: {tls: {mode: MUTUAL, privateKey: /k.pem}}}",
        "spec.trafficPolicy.tls.clientCertificate",
        "is required for MUTUAL TLS",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}}}",
        "spec.trafficPolicy.tls.caCertificates",
        "cannot be combined with credentialName",
    );
    error(
        DR,
        "{host: a.com, trafficPolicy: {tls: {mode: SIMPLE, insecureSkipVerify: true, subjectAltNames: [a.com]}}}",
        "spec.trafficPolicy.tls.insecureSkipVerify",
        "server is not verified",
    );
    warning(
        DR,
        "{host: a.com, trafficPolicy: {tls: {mode: ISTIO_MUTUAL, clientCertificate: /c.pem}}}",
        "spec.trafficPolicy.tls.clientCertificate",
        "ignored with ISTIO_MUTUAL",
    );
}

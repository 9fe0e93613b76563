//! Decoding tests: realistic examples of every kind (from Istio's reference docs),
//! the guide's seed examples, and refusals of unknown fields, bad enums and bad
//! durations.

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::*;

fn decode<T: DeserializeOwned>(v: Value) -> T {
    match serde_json::from_value(v) {
        Ok(t) => t,
        Err(e) => panic!("decode failed: {e}"),
    }
}

fn refuse<T: DeserializeOwned + std::fmt::Debug>(v: Value) -> String {
    match serde_json::from_value::<T>(v) {
        Ok(t) => panic!("expected a decode error, got {t:?}"),
        Err(e) => e.to_string(),
    }
}

/// Decodes, re-encodes and decodes again: the value must survive the round trip.
fn round_trip<T>(v: Value) -> T
where
    T: DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let t: T = decode(v);
    let again: T = decode(serde_json::to_value(&t).expect("encode"));
    assert_eq!(t, again);
    t
}

#[test]
fn virtual_service_full() {
    let vs: VirtualServiceSpec = round_trip(json!({
        "hosts": ["reviews.prod.svc.cluster.local", "*.bookinfo.com"],
        "gateways": ["mesh", "istio-system/bookinfo-gateway"],
        "exportTo": ["."],
        "http": [
            {
                "name": "reviews-v2-routes",
                "match": [
                    {
                        "name": "wp",
                        "uri": {"prefix": "/wpcatalog"},
                        "scheme": {"exact": "https"},
                        "method": {"exact": "GET"},
                        "authority": {"regex": ".*\\.example\\.com"},
                        "headers": {"end-user": {"exact": "jason"}, "x-present": {}},
                        "withoutHeaders": {"x-debug": {"prefix": "1"}},
                        "queryParams": {"ver": {"exact": "v2"}},
                        "port": 9080,
                        "sourceLabels": {"app": "productpage"},
                        "sourceNamespace": "bookinfo",
                        "gateways": ["mesh"],
                        "ignoreUriCase": true,
                        "statPrefix": "wp_route"
                    }
                ],
                "rewrite": {"uri": "/newcatalog", "authority": "new.example.com"},
                "route": [
                    {
                        "destination": {"host": "reviews", "subset": "v2", "port": {"number": 9080}},
                        "weight": 80,
                        "headers": {"request": {"set": {"x-a": "1"}, "add": {"x-b": "2"}, "remove": ["x-c"]}}
                    },
                    {"destination": {"host": "reviews", "subset": "v3"}, "weight": 20}
                ],
                "timeout": "10s",
                "retries": {
                    "attempts": 3,
                    "perTryTimeout": "2s",
                    "retryOn": "gateway-error,connect-failure,refused-stream",
                    "retryRemoteLocalities": true,
                    "retryIgnorePreviousHosts": false,
                    "backoff": "25ms"
                },
                "fault": {
                    "delay": {"percentage": {"value": 0.1}, "fixedDelay": "5s"},
                    "abort": {"percentage": {"value": 0.1}, "httpStatus": 400}
                },
                "mirror": {"host": "reviews", "subset": "v3"},
                "mirrorPercentage": {"value": 50.0},
                "mirrors": [
                    {"destination": {"host": "reviews", "subset": "v4"}, "percentage": {"value": 5.0}}
                ],
                "corsPolicy": {
                    "allowOrigins": [{"exact": "https://example.com"}, {"regex": "https://.*\\.example\\.org"}],
                    "allowMethods": ["POST", "GET"],
                    "allowCredentials": false,
                    "allowHeaders": ["X-Foo-Bar"],
                    "exposeHeaders": ["X-Expose"],
                    "maxAge": "24h",
                    "unmatchedPreflights": "IGNORE"
                },
                "headers": {"response": {"remove": ["server"]}}
            },
            {
                "match": [{"uri": {"exact": "/v1/getProductRatings"}}],
                "redirect": {"uri": "/v1/bookRatings", "authority": "newratings.default.svc.cluster.local", "redirectCode": 302, "derivePort": "FROM_REQUEST_PORT", "scheme": "https"}
            },
            {
                "match": [{"uri": {"prefix": "/old"}}],
                "redirect": {"prefixRewrite": "/new", "port": 8443}
            },
            {
                "match": [{"uri": {"prefix": "/unknown"}}],
                "directResponse": {"status": 503, "body": {"string": "unknown path"}}
            },
            {
                "match": [{"uri": {"prefix": "/bytes"}}],
                "directResponse": {"status": 200, "body": {"bytes": "aGVsbG8="}}
            },
            {
                "match": [{"uri": {"regex": "^/service/([^/]+)(/.*)$"}}],
                "rewrite": {"uriRegexRewrite": {"match": "^/service/([^/]+)(/.*)$", "rewrite": "\\2/instance/\\1"}},
                "route": [{"destination": {"host": "reviews"}}]
            },
            {
                "match": [{"uri": {"prefix": "/productpage"}}],
                "delegate": {"name": "productpage", "namespace": "nsA"}
            },
            {
                "fault": {"abort": {"grpcStatus": "UNAVAILABLE", "percentage": {"value": 1}}},
                "route": [{"destination": {"host": "reviews"}}],
                "mirror_percent": 10
            }
        ],
        "tls": [{
            "match": [{"port": 443, "sniHosts": ["login.bookinfo.com"], "destinationSubnets": ["10.0.0.0/8"], "sourceLabels": {"app": "x"}, "gateways": ["mygateway"], "sourceNamespace": "ns"}],
            "route": [{"destination": {"host": "login.prod.svc.cluster.local"}, "weight": 100}]
        }],
        "tcp": [{
            "match": [{"port": 27017, "destinationSubnets": ["10.1.0.0/16"], "sourceSubnet": "10.2.0.0/16", "sourceNamespace": "db"}],
            "route": [{"destination": {"host": "mongo.backup.svc.cluster.local", "port": {"number": 5555}}}]
        }]
    }));
    assert_eq!(vs.hosts.len(), 2);
    let r0 = &vs.http[0];
    let m = &r0.r#match[0];
    assert_eq!(m.stat_prefix.as_deref(), Some("wp_route"));
    assert_eq!(m.ignore_uri_case, Some(true));
    assert_eq!(m.source_namespace.as_deref(), Some("bookinfo"));
    assert_eq!(m.without_headers["x-debug"].prefix.as_deref(), Some("1"));
    assert_eq!(m.headers["x-present"], StringMatch::default());
    assert_eq!(r0.route[1].weight, Some(20));
    assert_eq!(
        r0.retries
            .as_ref()
            .unwrap()
            .per_try_timeout
            .as_ref()
            .unwrap()
            .as_nanos(),
        2_000_000_000
    );
    assert_eq!(r0.mirrors[0].destination.subset.as_deref(), Some("v4"));
    let cors = r0.cors_policy.as_ref().unwrap();
    assert_eq!(cors.unmatched_preflights, Some(UnmatchedPreflights::Ignore));
    let redirect = vs.http[1].redirect.as_ref().unwrap();
    assert_eq!(
        redirect.derive_port,
        Some(RedirectPortSelection::FromRequestPort)
    );
    assert_eq!(vs.http[3].direct_response.as_ref().unwrap().status, 503);
    assert_eq!(
        vs.http[6].delegate.as_ref().unwrap().name.as_deref(),
        Some("productpage")
    );
    assert_eq!(vs.http[7].mirror_percent, Some(10));
    assert_eq!(vs.tls[0].r#match[0].sni_hosts, ["login.bookinfo.com"]);
    assert_eq!(
        vs.tcp[0].route[0].destination.port.as_ref().unwrap().number,
        Some(5555)
    );
    // The deprecated snake_case alias is written back in camelCase.
    let out = serde_json::to_value(&vs).unwrap();
    assert_eq!(out["http"][7]["mirrorPercent"], 10);
}

#[test]
fn destination_rule_full() {
    let tp = json!({
        "loadBalancer": {
            "consistentHash": {
                "httpCookie": {"name": "user", "ttl": "0s", "path": "/", "attributes": [{"name": "SameSite", "value": "Strict"}, {"name": "Secure"}]},
                "ringHash": {"minimumRingSize": 1024}
            },
            "localityLbSetting": {
                "enabled": true,
                "distribute": [{"from": "us-west/zone1/*", "to": {"us-west/zone1/*": 80, "us-west/zone2/*": 20}}],
                "failoverPriority": ["topology.istio.io/network"]
            },
            "warmup": {"duration": "60s", "minimumPercent": 10.0, "aggression": 1.5}
        },
        "connectionPool": {
            "tcp": {
                "maxConnections": 100,
                "connectTimeout": "30ms",
                "tcpKeepalive": {"probes": 9, "time": "7200s", "interval": "75s"},
                "maxConnectionDuration": "1h",
                "idleTimeout": "30m"
            },
            "http": {
                "http1MaxPendingRequests": 10,
                "http2MaxRequests": 1000,
                "maxRequestsPerConnection": 10,
                "maxRetries": 3,
                "idleTimeout": "60s",
                "h2UpgradePolicy": "UPGRADE",
                "useClientProtocol": true,
                "maxConcurrentStreams": 100,
                "http2KeepAlive": {"interval": "30s", "timeout": "5s"}
            }
        },
        "outlierDetection": {
            "consecutive5xxErrors": 7,
            "consecutiveGatewayErrors": 5,
            "consecutiveLocalOriginFailures": 3,
            "splitExternalLocalOriginErrors": true,
            "interval": "5m",
            "baseEjectionTime": "15m",
            "maxEjectionPercent": 50,
            "minHealthPercent": 30,
            "outlierDetectionHttpErrorCodes": [500, 503]
        },
        "tls": {
            "mode": "MUTUAL",
            "clientCertificate": "/etc/certs/myclientcert.pem",
            "privateKey": "/etc/certs/client_private_key.pem",
            "caCertificates": "/etc/certs/rootcacerts.pem",
            "caCrl": "/etc/certs/crl.pem",
            "subjectAltNames": ["spiffe://cluster.local/ns/a/sa/b"],
            "sni": "my-nginx.mesh-external.svc.cluster.local",
            "insecureSkipVerify": false
        },
        "portLevelSettings": [{
            "port": {"number": 80},
            "loadBalancer": {"simple": "LEAST_REQUEST", "warmupDurationSecs": "30s"},
            "connectionPool": {"tcp": {"maxConnections": 10}},
            "outlierDetection": {"consecutiveErrors": 3},
            "tls": {"mode": "ISTIO_MUTUAL"}
        }, {
            "port": {"number": 9443},
            "loadBalancer": {"consistentHash": {"maglev": {"tableSize": 65537}, "httpHeaderName": "x-user"}},
            "tls": {"mode": "SIMPLE", "credentialName": "client-credential"}
        }],
        "tunnel": {"protocol": "CONNECT", "targetHost": "192.168.1.2", "targetPort": 443},
        "proxyProtocol": {"version": "V2"},
        "retryBudget": {"percent": 20.0, "minRetryConcurrency": 3, "budgetInterval": "10s"}
    });
    let dr: DestinationRuleSpec = round_trip(json!({
        "host": "ratings.prod.svc.cluster.local",
        "exportTo": ["*"],
        "workloadSelector": {"matchLabels": {"app": "ratings"}},
        "trafficPolicy": tp,
        "subsets": [
            {"name": "testversion", "labels": {"version": "v3"}, "trafficPolicy": {"loadBalancer": {"simple": "ROUND_ROBIN"}}},
            {"name": "v1", "labels": {"version": "v1"}, "trafficPolicy": {"loadBalancer": {"consistentHash": {"useSourceIp": true}}}},
            {"name": "v2", "labels": {"version": "v2"}, "trafficPolicy": {"loadBalancer": {"consistentHash": {"httpQueryParameterName": "u"}, "zoneAwareLbSetting": {"enabled": true, "minClusterSize": 3, "failover": [{"from": "us-east", "to": "eu-west"}]}}}}
        ]
    }));
    let tp = dr.traffic_policy.as_ref().unwrap();
    let ch = tp
        .load_balancer
        .as_ref()
        .unwrap()
        .consistent_hash
        .as_ref()
        .unwrap();
    assert_eq!(ch.http_cookie.as_ref().unwrap().attributes.len(), 2);
    assert_eq!(ch.ring_hash.as_ref().unwrap().minimum_ring_size, Some(1024));
    let tcp = tp.connection_pool.as_ref().unwrap().tcp.as_ref().unwrap();
    assert_eq!(tcp.tcp_keepalive.as_ref().unwrap().probes, Some(9));
    assert_eq!(tcp.idle_timeout.as_ref().unwrap().as_str(), "30m");
    let http = tp.connection_pool.as_ref().unwrap().http.as_ref().unwrap();
    assert_eq!(http.h2_upgrade_policy, Some(H2UpgradePolicy::Upgrade));
    let od = tp.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx_errors, Some(7));
    assert_eq!(od.outlier_detection_http_error_codes, [500, 503]);
    let tls = tp.tls.as_ref().unwrap();
    assert_eq!(tls.mode, Some(ClientTlsMode::Mutual));
    assert_eq!(tls.insecure_skip_verify, Some(false));
    assert_eq!(
        tp.port_level_settings[0]
            .outlier_detection
            .as_ref()
            .unwrap()
            .consecutive_errors,
        Some(3)
    );
    assert_eq!(tp.tunnel.as_ref().unwrap().target_port, 443);
    assert_eq!(
        tp.proxy_protocol.as_ref().unwrap().version,
        Some(ProxyProtocolVersion::V2)
    );
    assert_eq!(dr.subsets[2].name, "v2");
    assert_eq!(
        dr.workload_selector.as_ref().unwrap().match_labels["app"],
        "ratings"
    );
}

#[test]
fn gateway_full() {
    let gw: GatewaySpec = round_trip(json!({
        "selector": {"app": "my-gateway-controller"},
        "servers": [
            {"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["uk.bookinfo.com", "eu.bookinfo.com"], "tls": {"httpsRedirect": true}},
            {"port": {"number": 443, "name": "https-443", "protocol": "HTTPS"}, "hosts": ["uk.bookinfo.com"], "tls": {"mode": "SIMPLE", "serverCertificate": "/etc/certs/servercert.pem", "privateKey": "/etc/certs/privatekey.pem"}},
            {"port": {"number": 9443, "name": "https-9443", "protocol": "HTTPS"}, "hosts": ["bookinfo-namespace/*.bookinfo.com"], "tls": {"mode": "SIMPLE", "credentialName": "bookinfo-secret"}},
            {"port": {"number": 9080, "name": "http-wildcard", "protocol": "HTTP"}, "hosts": ["*"], "name": "wild", "bind": "0.0.0.0"},
            {"port": {"number": 2379, "name": "mongo", "protocol": "MONGO", "targetPort": 2379}, "hosts": ["*"]},
            {"port": {"number": 8443, "name": "mtls", "protocol": "HTTPS"}, "hosts": ["*"], "tls": {
                "mode": "MUTUAL", "credentialNames": ["rsa-cred", "ecdsa-cred"], "caCertCredentialName": "ca-cred",
                "subjectAltNames": ["client.example.com"], "verifyCertificateSpki": ["abc="], "verifyCertificateHash": ["00:11"],
                "minProtocolVersion": "TLSV1_2", "maxProtocolVersion": "TLSV1_3", "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"],
                "caCrl": "/etc/crl.pem", "insecureSkipVerify": false
            }},
            {"port": {"number": 8444, "name": "files", "protocol": "HTTPS"}, "hosts": ["*"], "tls": {
                "mode": "OPTIONAL_MUTUAL", "tlsCertificates": [{"serverCertificate": "/a.pem", "privateKey": "/a.key", "caCertificates": "/ca.pem"}]
            }},
            {"port": {"number": 15443, "name": "tls", "protocol": "TLS"}, "hosts": ["*.local"], "tls": {"mode": "AUTO_PASSTHROUGH"}}
        ]
    }));
    assert_eq!(gw.selector["app"], "my-gateway-controller");
    assert_eq!(
        gw.servers[0].tls.as_ref().unwrap().https_redirect,
        Some(true)
    );
    assert_eq!(gw.servers[4].port.target_port, Some(2379));
    let mtls = gw.servers[5].tls.as_ref().unwrap();
    assert_eq!(mtls.min_protocol_version, Some(TlsProtocol::TlsV1_2));
    assert_eq!(mtls.credential_names.len(), 2);
    assert_eq!(
        gw.servers[7].tls.as_ref().unwrap().mode,
        Some(ServerTlsMode::AutoPassthrough)
    );
}

#[test]
fn service_entry_full() {
    let se: ServiceEntrySpec = round_trip(json!({
        "hosts": ["mymongodb.somedomain"],
        "addresses": ["192.192.192.192/24"],
        "ports": [{"number": 27018, "name": "mongodb", "protocol": "MONGO", "targetPort": 27017}],
        "location": "MESH_INTERNAL",
        "resolution": "STATIC",
        "exportTo": ["."],
        "subjectAltNames": ["spiffe://cluster.local/ns/a/sa/db"],
        "endpoints": [
            {"address": "2.2.2.2", "ports": {"mongodb": 7777}, "labels": {"app": "db"}, "network": "n1", "locality": "us-west/zone1", "weight": 10, "serviceAccount": "db"},
            {"address": "unix:///var/run/example/socket"}
        ]
    }));
    assert_eq!(se.resolution, Some(Resolution::Static));
    assert_eq!(se.location, Some(Location::MeshInternal));
    assert_eq!(se.endpoints[0].ports["mongodb"], 7777);
    let sel: ServiceEntrySpec = decode(json!({
        "hosts": ["details.bookinfo.com"],
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "resolution": "DNS_ROUND_ROBIN",
        "workloadSelector": {"labels": {"app": "details-legacy"}}
    }));
    assert_eq!(
        sel.workload_selector.unwrap().labels["app"],
        "details-legacy"
    );
    let dynamic: ServiceEntrySpec =
        decode(json!({"hosts": ["*.example.com"], "resolution": "DYNAMIC_DNS"}));
    assert_eq!(dynamic.resolution, Some(Resolution::DynamicDns));
}

#[test]
fn workload_entry_and_group() {
    let we: WorkloadEntrySpec = round_trip(json!({
        "serviceAccount": "details-legacy",
        "address": "2.2.2.2",
        "labels": {"app": "details-legacy", "instance-id": "vm1"},
        "network": "vm-network",
        "locality": "us-west1/zone1",
        "weight": 3,
        "ports": {"http": 8080}
    }));
    assert_eq!(we.address.as_deref(), Some("2.2.2.2"));
    let wg: WorkloadGroupSpec = round_trip(json!({
        "metadata": {"labels": {"app.kubernetes.io/name": "reviews"}, "annotations": {"a": "b"}},
        "template": {"ports": {"grpc": 3550, "http": 8080}, "serviceAccount": "default"},
        "probe": {
            "initialDelaySeconds": 5, "timeoutSeconds": 3, "periodSeconds": 4,
            "successThreshold": 3, "failureThreshold": 3,
            "httpGet": {"path": "/foo/bar", "host": "127.0.0.1", "port": 3100, "scheme": "HTTPS", "httpHeaders": [{"name": "Lit-Header", "value": "Im-The-Best"}]}
        }
    }));
    assert_eq!(wg.template.ports["grpc"], 3550);
    assert_eq!(
        wg.probe.as_ref().unwrap().http_get.as_ref().unwrap().port,
        3100
    );
    for probe in [
        json!({"tcpSocket": {"host": "localhost", "port": 3456}}),
        json!({"exec": {"command": ["cat", "/tmp/healthy"]}}),
        json!({"grpc": {"port": 9000, "service": "health"}}),
    ] {
        let _: ReadinessProbe = round_trip(probe);
    }
}

#[test]
fn sidecar_full() {
    let sc: SidecarSpec = round_trip(json!({
        "workloadSelector": {"labels": {"app": "productpage"}},
        "ingress": [{
            "port": {"number": 9080, "protocol": "HTTPS", "name": "somename"},
            "bind": "0.0.0.0",
            "captureMode": "IPTABLES",
            "defaultEndpoint": "unix:///var/run/someuds.sock",
            "tls": {"mode": "SIMPLE", "privateKey": "/etc/certs/privatekey.pem", "serverCertificate": "/etc/certs/servercert.pem"},
            "connectionPool": {"http": {"http1MaxPendingRequests": 100}}
        }],
        "egress": [
            {"port": {"number": 9080, "protocol": "HTTP", "name": "egresshttp"}, "hosts": ["prod-us1/*"], "bind": "127.0.0.1", "captureMode": "NONE"},
            {"hosts": ["istio-system/*", "./*", "~/*"]}
        ],
        "inboundConnectionPool": {"http": {"http1MaxPendingRequests": 1024, "http2MaxRequests": 1024, "maxRequestsPerConnection": 1024, "maxRetries": 100}},
        "outboundTrafficPolicy": {"mode": "ALLOW_ANY", "egressProxy": {"host": "foo.bar", "subset": "shiny", "port": {"number": 5000}}}
    }));
    assert_eq!(sc.ingress[0].capture_mode, Some(CaptureMode::Iptables));
    assert_eq!(sc.egress[1].port, None);
    let otp = sc.outbound_traffic_policy.as_ref().unwrap();
    assert_eq!(otp.mode, Some(OutboundTrafficMode::AllowAny));
    assert_eq!(otp.egress_proxy.as_ref().unwrap().host, "foo.bar");
    let registry_only: SidecarSpec =
        decode(json!({"outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}));
    assert_eq!(
        registry_only.outbound_traffic_policy.unwrap().mode,
        Some(OutboundTrafficMode::RegistryOnly)
    );
}

#[test]
fn envoy_filter_full() {
    let ef: EnvoyFilterSpec = round_trip(json!({
        "workloadSelector": {"labels": {"app": "reviews"}},
        "priority": -10,
        "configPatches": [
            {
                "applyTo": "NETWORK_FILTER",
                "match": {"context": "SIDECAR_OUTBOUND", "proxy": {"proxyVersion": "^1\\.2.*", "metadata": {"k": "v"}},
                          "listener": {"portNumber": 9307, "name": "0.0.0.0_9307", "listenerFilter": "envoy.filters.listener.tls_inspector",
                                       "filterChain": {"name": "fc", "sni": "a.com", "transportProtocol": "tls", "applicationProtocols": "h2,http/1.1", "destinationPort": 9307,
                                                       "filter": {"name": "envoy.filters.network.http_connection_manager", "subFilter": {"name": "envoy.filters.http.router"}}}}},
                "patch": {"operation": "INSERT_BEFORE", "value": {"name": "envoy.lua", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua", "inlineCode": "function envoy_on_request(h) end"}}}
            },
            {
                "applyTo": "HTTP_ROUTE",
                "match": {"context": "GATEWAY", "routeConfiguration": {"portNumber": 443, "portName": "https", "gateway": "istio-system/gw", "name": "https.443.https.gw.istio-system",
                                                                   "vhost": {"name": "a.com:443", "domainName": "a.com", "route": {"name": "r1", "action": "ROUTE"}}}},
                "patch": {"operation": "MERGE", "value": {"route": {"idle_timeout": "5s"}}}
            },
            {
                "applyTo": "CLUSTER",
                "match": {"context": "SIDECAR_OUTBOUND", "cluster": {"service": "foo.com", "portNumber": 80, "subset": "v1", "name": "outbound|80|v1|foo.com"}},
                "patch": {"operation": "REMOVE"}
            },
            {
                "applyTo": "HTTP_FILTER",
                "match": {"context": "WAYPOINT", "waypoint": {"portNumber": 80, "filter": {"name": "envoy.filters.network.http_connection_manager", "subFilter": {"name": "envoy.filters.http.router"}}, "route": {"name": "default"}}},
                "patch": {"operation": "ADD", "filterClass": "AUTHZ", "value": {"name": "x"}}
            },
            {"applyTo": "BOOTSTRAP", "patch": {"operation": "MERGE_AND_REPLACE_LIST", "value": {"stats_config": {}}}},
            {"applyTo": "LISTENER_FILTER", "match": {"context": "ANY"}, "patch": {"operation": "INSERT_FIRST", "value": {"name": "y"}}}
        ]
    }));
    assert_eq!(ef.priority, Some(-10));
    let p0 = &ef.config_patches[0];
    assert_eq!(p0.apply_to, Some(ApplyTo::NetworkFilter));
    let fc = p0
        .r#match
        .as_ref()
        .unwrap()
        .listener
        .as_ref()
        .unwrap()
        .filter_chain
        .as_ref()
        .unwrap();
    assert_eq!(
        fc.filter
            .as_ref()
            .unwrap()
            .sub_filter
            .as_ref()
            .unwrap()
            .name
            .as_deref(),
        Some("envoy.filters.http.router")
    );
    assert_eq!(
        p0.patch.as_ref().unwrap().value.as_ref().unwrap()["name"],
        "envoy.lua"
    );
    let rc = ef.config_patches[1]
        .r#match
        .as_ref()
        .unwrap()
        .route_configuration
        .as_ref()
        .unwrap();
    assert_eq!(
        rc.vhost.as_ref().unwrap().route.as_ref().unwrap().action,
        Some(RouteAction::Route)
    );
    assert_eq!(
        ef.config_patches[3].patch.as_ref().unwrap().filter_class,
        Some(FilterClass::Authz)
    );
    let targeted: EnvoyFilterSpec = decode(json!({
        "targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "waypoint"}],
        "configPatches": [{"applyTo": "HTTP_FILTER", "patch": {"operation": "ADD", "value": {"name": "z"}}}]
    }));
    assert_eq!(targeted.target_refs[0].kind, "Gateway");
}

#[test]
fn proxy_config_full() {
    let pc: ProxyConfigSpec = round_trip(json!({
        "selector": {"matchLabels": {"app": "ratings"}},
        "concurrency": 0,
        "environmentVariables": {"ISTIO_META_DNS_CAPTURE": "true"},
        "image": {"imageType": "distroless"}
    }));
    assert_eq!(pc.concurrency, Some(0));
    assert_eq!(pc.image.unwrap().image_type.as_deref(), Some("distroless"));
}

#[test]
fn unknown_fields_are_refused() {
    let e = refuse::<VirtualServiceSpec>(
        json!({"hosts": ["a"], "http": [{"route": [{"destination": {"host": "a", "subnet": "v1"}}]}]}),
    );
    assert!(e.contains("unknown field `subnet`"), "{e}");
    let e = refuse::<DestinationRuleSpec>(
        json!({"host": "a", "trafficPolicy": {"outlierDetection": {"consecutiveErrorz": 1}}}),
    );
    assert!(e.contains("consecutiveErrorz"), "{e}");
    let e = refuse::<GatewaySpec>(
        json!({"servers": [{"port": {"number": 80, "protocol": "HTTP", "name": "h"}, "hosts": ["*"], "tls": {"credentialname": "x"}}]}),
    );
    assert!(e.contains("credentialname"), "{e}");
    // Sidecar's selector is `labels`, not `matchLabels`.
    let e = refuse::<SidecarSpec>(json!({"workloadSelector": {"matchLabels": {"app": "a"}}}));
    assert!(e.contains("matchLabels"), "{e}");
    // snake_case names are not the CRD's.
    let e = refuse::<ServiceEntrySpec>(json!({"hosts": ["a.com"], "export_to": ["."]}));
    assert!(e.contains("export_to"), "{e}");
    refuse::<EnvoyFilterSpec>(
        json!({"configPatches": [{"applyTo": "CLUSTER", "match": {"cluster": {"sevice": "a"}}}]}),
    );
    refuse::<WorkloadGroupSpec>(
        json!({"template": {}, "probe": {"httpGet": {"port": 1, "paht": "/"}}}),
    );
    refuse::<ProxyConfigSpec>(json!({"concurrency": 2, "image": {"type": "debug"}}));
    refuse::<WorkloadEntrySpec>(json!({"address": "1.1.1.1", "serviceaccount": "x"}));
}

#[test]
fn wrong_enum_values_are_refused() {
    for (bad, what) in [
        (
            json!({"host": "a", "trafficPolicy": {"loadBalancer": {"simple": "round_robin"}}}),
            "round_robin",
        ),
        (
            json!({"host": "a", "trafficPolicy": {"tls": {"mode": "STRICT"}}}),
            "STRICT",
        ),
        (
            json!({"host": "a", "trafficPolicy": {"connectionPool": {"http": {"h2UpgradePolicy": "YES"}}}}),
            "YES",
        ),
        (
            json!({"host": "a", "trafficPolicy": {"proxyProtocol": {"version": "V3"}}}),
            "V3",
        ),
    ] {
        let e = refuse::<DestinationRuleSpec>(bad);
        assert!(e.contains(what), "{e}");
    }
    let e = refuse::<ServiceEntrySpec>(json!({"hosts": ["a.com"], "resolution": "DNS_RR"}));
    assert!(e.contains("DNS_RR"), "{e}");
    refuse::<ServiceEntrySpec>(json!({"hosts": ["a.com"], "location": "EXTERNAL"}));
    refuse::<GatewaySpec>(
        json!({"servers": [{"port": {"number": 443}, "hosts": ["*"], "tls": {"mode": "DISABLE"}}]}),
    );
    refuse::<GatewaySpec>(
        json!({"servers": [{"port": {"number": 443}, "hosts": ["*"], "tls": {"minProtocolVersion": "TLSv1_2"}}]}),
    );
    refuse::<SidecarSpec>(json!({"outboundTrafficPolicy": {"mode": "ALLOW_ALL"}}));
    refuse::<SidecarSpec>(json!({"egress": [{"hosts": ["*/*"], "captureMode": "TPROXY"}]}));
    refuse::<EnvoyFilterSpec>(json!({"configPatches": [{"applyTo": "ROUTE"}]}));
    refuse::<EnvoyFilterSpec>(json!({"configPatches": [{"patch": {"operation": "DELETE"}}]}));
    refuse::<EnvoyFilterSpec>(json!({"configPatches": [{"match": {"context": "SIDECAR"}}]}));
    refuse::<VirtualServiceSpec>(json!({"http": [{"redirect": {"derivePort": "FROM_PROTOCOL"}}]}));
    refuse::<VirtualServiceSpec>(
        json!({"http": [{"corsPolicy": {"unmatchedPreflights": "DROP"}}]}),
    );
}

#[test]
fn bad_durations_are_refused() {
    let e = refuse::<VirtualServiceSpec>(json!({"http": [{"timeout": "10"}]}));
    assert!(e.contains("invalid duration"), "{e}");
    let e = refuse::<VirtualServiceSpec>(json!({"http": [{"retries": {"perTryTimeout": "-1s"}}]}));
    assert!(e.contains("negative"), "{e}");
    refuse::<DestinationRuleSpec>(
        json!({"host": "a", "trafficPolicy": {"outlierDetection": {"interval": "1 s"}}}),
    );
    refuse::<DestinationRuleSpec>(
        json!({"host": "a", "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "5sec"}}}}),
    );
    refuse::<DestinationRuleSpec>(
        json!({"host": "a", "trafficPolicy": {"loadBalancer": {"warmup": {"duration": 60}}}}),
    );
}

#[test]
fn wrong_types_are_refused() {
    refuse::<VirtualServiceSpec>(json!({"hosts": "reviews"}));
    refuse::<VirtualServiceSpec>(
        json!({"http": [{"route": [{"destination": {"host": "a"}, "weight": "50"}]}]}),
    );
    refuse::<GatewaySpec>(json!({"servers": [{"port": {"number": -1}, "hosts": ["*"]}]}));
}

#[test]
fn crds_are_generated_for_every_served_kind() {
    use kube::CustomResourceExt;
    let names = [
        v1alpha3::VirtualService::crd_name(),
        v1alpha3::EnvoyFilter::crd_name(),
        v1beta1::ProxyConfig::crd_name(),
        v1::DestinationRule::crd_name(),
        v1::WorkloadGroup::crd_name(),
    ];
    assert_eq!(
        names,
        [
            "virtualservices.networking.istio.io",
            "envoyfilters.networking.istio.io",
            "proxyconfigs.networking.istio.io",
            "destinationrules.networking.istio.io",
            "workloadgroups.networking.istio.io",
        ]
    );
    let crd = v1::Gateway::crd();
    assert_eq!(crd.spec.versions[0].name, "v1");
    // Every served kind produces a CRD (schema generation does not panic).
    let all = [
        v1alpha3::VirtualService::crd(),
        v1alpha3::DestinationRule::crd(),
        v1alpha3::Gateway::crd(),
        v1alpha3::ServiceEntry::crd(),
        v1alpha3::Sidecar::crd(),
        v1alpha3::WorkloadEntry::crd(),
        v1alpha3::WorkloadGroup::crd(),
        v1alpha3::EnvoyFilter::crd(),
        v1beta1::VirtualService::crd(),
        v1beta1::DestinationRule::crd(),
        v1beta1::Gateway::crd(),
        v1beta1::ServiceEntry::crd(),
        v1beta1::Sidecar::crd(),
        v1beta1::WorkloadEntry::crd(),
        v1beta1::WorkloadGroup::crd(),
        v1beta1::ProxyConfig::crd(),
        v1::VirtualService::crd(),
        v1::DestinationRule::crd(),
        v1::ServiceEntry::crd(),
        v1::Sidecar::crd(),
        v1::WorkloadEntry::crd(),
        v1::WorkloadGroup::crd(),
    ];
    assert!(all.iter().all(|c| c.spec.group == "networking.istio.io"));
    let vs: v1::VirtualService = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    }))
    .expect("root object decodes");
    assert_eq!(vs.spec.0.hosts, ["reviews"]);
}

/// Every networking example of the guide (shared corpus seed) decodes.
#[test]
fn seed_examples_decode() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/corpus/seed");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        panic!("the seed corpus is missing at {}", dir.display());
    };
    let mut seen = 0;
    let mut paths: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in crate::yaml::parse_stream(&text).unwrap() {
            let Some(root) = doc.root else { continue };
            let obj = root.to_json();
            let api = obj["apiVersion"].as_str().unwrap_or_default();
            if !api.starts_with("networking.istio.io/") {
                continue;
            }
            let kind = obj["kind"].as_str().unwrap_or_default();
            let spec = obj["spec"].clone();
            let res = match kind {
                "VirtualService" => serde_json::from_value::<VirtualServiceSpec>(spec).map(|_| ()),
                "DestinationRule" => {
                    serde_json::from_value::<DestinationRuleSpec>(spec).map(|_| ())
                }
                "Gateway" => serde_json::from_value::<GatewaySpec>(spec).map(|_| ()),
                "ServiceEntry" => serde_json::from_value::<ServiceEntrySpec>(spec).map(|_| ()),
                "Sidecar" => serde_json::from_value::<SidecarSpec>(spec).map(|_| ()),
                "EnvoyFilter" => serde_json::from_value::<EnvoyFilterSpec>(spec).map(|_| ()),
                "WorkloadEntry" => serde_json::from_value::<WorkloadEntrySpec>(spec).map(|_| ()),
                "WorkloadGroup" => serde_json::from_value::<WorkloadGroupSpec>(spec).map(|_| ()),
                "ProxyConfig" => serde_json::from_value::<ProxyConfigSpec>(spec).map(|_| ()),
                other => panic!("{}: unexpected kind {other}", path.display()),
            };
            if let Err(e) = res {
                panic!("{}: {kind} does not decode: {e}", path.display());
            }
            seen += 1;
        }
    }
    assert!(seen >= 21, "only {seen} networking examples found");
}

#[test]
fn seed_09_keeps_deprecated_consecutive_errors() {
    let dr: DestinationRuleSpec = decode(json!({
        "host": "reviews",
        "trafficPolicy": {"outlierDetection": {"consecutiveErrors": 5, "interval": "1s", "baseEjectionTime": "30s", "maxEjectionPercent": 100}}
    }));
    let od = dr.traffic_policy.unwrap().outlier_detection.unwrap();
    assert_eq!(od.consecutive_errors, Some(5));
    assert_eq!(od.max_ejection_percent, Some(100));
}

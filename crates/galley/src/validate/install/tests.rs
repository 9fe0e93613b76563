//! Rule tests for `IstioOperator` and its `meshConfig`.

use serde_json::{Value, json};

use crate::validate::Level;
use crate::validate::test_support::{expect, spec_findings};

fn run(spec: Value, level: Level) -> Vec<(String, String)> {
    spec_findings(
        "install.istio.io/v1alpha1",
        "IstioOperator",
        ("control-plane", "istio-system"),
        spec,
        level,
    )
}

fn errors(spec: Value) -> Vec<(String, String)> {
    run(spec, Level::Error)
}

fn warnings(spec: Value) -> Vec<(String, String)> {
    run(spec, Level::Warning)
}

#[test]
fn seed_operators_are_valid() {
    for spec in [
        json!({"profile": "default",
               "components": {"egressGateways": [{"name": "istio-egressgateway", "enabled": true}]},
               "meshConfig": {"accessLogFile": "/dev/stdout", "enableTracing": true},
               "values": {"global": {"proxy": {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}}}}),
        json!({"components": {"pilot": {"k8s": {"env": [{"name": "PILOT_CERT_PROVIDER", "value": "istiod"}]}}},
               "values": {"global": {"caAddress": "istiod.istio-system.svc:15012", "meshID": "mesh1"}}}),
        json!({"meshConfig": {"enableTracing": true, "defaultConfig": {"tracing": {
               "sampling": 100, "zipkin": {"address": "zipkin.istio-system:9411"}}}}}),
        json!({"meshConfig": {"defaultConfig": {"concurrency": 2, "proxyMetadata": {"ISTIO_META_HTTP10": "1"}}}}),
        json!({"profile": "demo", "hub": "docker.io/istio", "tag": "1.22.0", "revision": "1-22-0",
               "compatibilityVersion": "1.23", "namespace": "istio-system",
               "values": {"global": {"proxy": {"includeIPRanges": "10.0.0.0/8,172.16.0.0/12", "excludeInboundPorts": "15020,9090"}}},
               "meshConfig": {"trustDomain": "cluster.local", "connectTimeout": "10s",
                   "defaultConfig": {"discoveryAddress": "istiod-1-22-0.istio-system.svc:15012", "drainDuration": "45s"},
                   "extensionProviders": [
                       {"name": "ext-authz", "envoyExtAuthzHttp": {"service": "ext-authz.foo.svc.cluster.local", "port": 8000, "pathPrefix": "/check"}},
                       {"name": "otel", "opentelemetry": {"service": "opentelemetry-collector.observability.svc.cluster.local", "port": 4317}},
                       {"name": "prometheus", "prometheus": {}}]},
               "components": {"ingressGateways": [{"name": "istio-ingressgateway", "enabled": true,
                   "k8s": {"service": {"ports": [{"name": "http2", "port": 80, "targetPort": 8080}, {"port": 15021}]}}}]}}),
    ] {
        let e = errors(spec.clone());
        assert!(e.is_empty(), "{spec}: {e:#?}");
    }
    // Seed 20: the old autoscaling form is accepted, with a warning.
    let seed20 = json!({"components": {"pilot": {"k8s": {"hpaSpec": {"minReplicas": 2, "maxReplicas": 5,
        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "targetAverageUtilization": 80}}]}}}}});
    assert!(errors(seed20.clone()).is_empty());
    expect(
        &warnings(seed20),
        "spec.components.pilot.k8s.hpaSpec.metrics[0].resource.targetAverageUtilization",
        "averageUtilization: 80",
    );
}

#[test]
fn top_level_fields() {
    let e = errors(
        json!({"hub": "Docker.io/Istio Images", "tag": "bad tag!", "revision": "Canary_1",
                          "compatibilityVersion": "1.x", "namespace": "Istio"}),
    );
    expect(&e, "spec.hub", "bad hub");
    expect(&e, "spec.tag", "bad tag \"bad tag!\"");
    expect(&e, "spec.revision", "invalid revision specified");
    expect(&e, "spec.compatibilityVersion", "major.minor");
    expect(&e, "spec.namespace", "DNS-1123 label");
    expect(
        &errors(json!({"tag": true})),
        "spec.tag",
        "a tag is a string",
    );
    assert!(errors(json!({"tag": 1})).is_empty());
    expect(
        &warnings(json!({"profile": "production"})),
        "spec.profile",
        "unknown profile \"production\"",
    );
    assert!(warnings(json!({"profile": "/tmp/my-profile.yaml"})).is_empty());
}

#[test]
fn gateways_need_unique_valid_names() {
    let e = errors(json!({"components": {
        "ingressGateways": [{"name": ""}, {"name": "Bad_Name"}, {"name": "gw"}],
        "egressGateways": [{"name": "gw"}]}}));
    expect(&e, "spec.components.ingressGateways[0].name", "is required");
    expect(
        &e,
        "spec.components.ingressGateways[1].name",
        "invalid gateway name",
    );
    expect(
        &e,
        "spec.components.egressGateways[0].name",
        "duplicate gateway name \"gw\" (also at spec.components.ingressGateways[2])",
    );
}

#[test]
fn kubernetes_settings() {
    let e = errors(json!({"components": {
        "pilot": {"namespace": "Bad NS", "k8s": {"imagePullPolicy": "always", "env": [{"value": "x"}],
                  "resources": {"request": {"cpu": "1"}}, "hpaSpec": {"minReplicas": 5, "maxReplicas": 2},
                  "nodeSelector": {"kubernetes.io/os": "linux os"}}},
        "ingressGateways": [{"name": "istio-ingressgateway", "label": {"istio": "ingress gateway"},
            "k8s": {"service": {"ports": [{"name": "http", "port": 80, "targetPort": 80}, {"name": "https", "port": 443}]}}}]}}));
    expect(&e, "spec.components.pilot.namespace", "DNS-1123 label");
    expect(
        &e,
        "spec.components.pilot.k8s.imagePullPolicy",
        "must be one of Always, IfNotPresent, Never; got \"always\"",
    );
    expect(&e, "spec.components.pilot.k8s.env[0].name", "is required");
    expect(
        &e,
        "spec.components.pilot.k8s.resources.request",
        "unknown field \"request\"",
    );
    expect(
        &e,
        "spec.components.pilot.k8s.hpaSpec.minReplicas",
        "greater than maxReplicas 2",
    );
    expect(
        &e,
        "spec.components.pilot.k8s.nodeSelector[\"kubernetes.io/os\"]",
        "label value",
    );
    expect(
        &e,
        "spec.components.ingressGateways[0].label.istio",
        "label value",
    );
    expect(
        &e,
        "spec.components.ingressGateways[0].k8s.service.ports[0].targetPort",
        "requires root",
    );
    expect(
        &e,
        "spec.components.ingressGateways[0].k8s.service.ports[1].targetPort",
        "targetPort is set to 0",
    );
    let rooted = errors(
        json!({"values": {"gateways": {"istio-ingressgateway": {"runAsRoot": true}}},
        "components": {"ingressGateways": [{"name": "istio-ingressgateway",
            "k8s": {"service": {"ports": [{"port": 80, "targetPort": 80}]}}}]}}),
    );
    assert!(rooted.is_empty(), "{rooted:#?}");
}

#[test]
fn autoscaling_and_values() {
    let w = warnings(json!({"values": {"pilot": {"autoscaleEnabled": true},
                                       "gateways": {"istio-ingressgateway": {"autoscaleEnabled": true}}},
        "components": {"pilot": {"k8s": {"replicaCount": 3}},
                       "ingressGateways": [{"name": "istio-ingressgateway", "k8s": {"replicaCount": 2}}]}}));
    expect(
        &w,
        "spec.components.pilot.k8s.replicaCount",
        "autoscaleEnabled is true",
    );
    expect(
        &w,
        "spec.components.ingressGateways[0].k8s.replicaCount",
        "autoscaleEnabled is true",
    );
    let e = errors(json!({"values": {"global": {"proxy": {
        "includeIPRanges": "10.0.0.0/8,10.1.2.3", "excludeIPRanges": 7,
        "includeInboundPorts": "80,http", "excludeInboundPorts": "70000"}}}}));
    expect(
        &e,
        "spec.values.global.proxy.includeIPRanges",
        "\"10.1.2.3\" is not a CIDR block",
    );
    expect(
        &e,
        "spec.values.global.proxy.excludeIPRanges",
        "comma-separated string",
    );
    expect(
        &e,
        "spec.values.global.proxy.includeInboundPorts",
        "\"http\" is not a port number",
    );
    expect(
        &e,
        "spec.values.global.proxy.excludeInboundPorts",
        "\"70000\"",
    );
}

#[test]
fn mesh_config_rules() {
    let e = errors(json!({"meshConfig": {
        "proxyListenPort": 0,
        "connectTimeout": "45s",
        "protocolDetectionTimeout": "1500us",
        "trustDomain": "Cluster.Local",
        "trustDomainAliases": ["ok.example", "bad..alias"],
        "serviceSettings": [{"settings": {"clusterLocal": true}, "hosts": ["foo.*.svc"]}],
        "meshMTLS": {"ecdhCurves": ["P-256"]},
        "caCertificates": [{"pem": "x", "spiffeBundleUrl": "https://x"}],
        "localityLbSetting": {"distribute": [{"from": "us-west/*", "to": {"us-west/zone1/*": 60, "us-east/*": 30}}]},
        "discoverySelectors": [{"matchExpressions": [{"key": "env", "operator": "In"}, {"key": "a", "operator": "Equals", "values": ["b"]}]}]
    }}));
    expect(&e, "spec.meshConfig.proxyListenPort", "out of range");
    expect(&e, "spec.meshConfig.connectTimeout", "at most 30s");
    expect(
        &e,
        "spec.meshConfig.protocolDetectionTimeout",
        "millisecond precision",
    );
    expect(
        &e,
        "spec.meshConfig.trustDomain",
        "trust domain name \"Cluster.Local\" invalid",
    );
    expect(&e, "spec.meshConfig.trustDomainAliases[1]", "invalid");
    expect(
        &e,
        "spec.meshConfig.serviceSettings[0].hosts[0]",
        "wildcard",
    );
    expect(
        &e,
        "spec.meshConfig.meshMTLS.ecdhCurves",
        "does not support ECDH curves",
    );
    expect(
        &e,
        "spec.meshConfig.caCertificates[0]",
        "only one of pem, spiffeBundleUrl",
    );
    expect(
        &e,
        "spec.meshConfig.localityLbSetting.distribute[0].to",
        "total locality weight 90 != 100",
    );
    expect(
        &e,
        "spec.meshConfig.discoverySelectors[0].matchExpressions[0].values",
        "needs at least one value",
    );
    expect(
        &e,
        "spec.meshConfig.discoverySelectors[0].matchExpressions[1].operator",
        "unknown operator \"Equals\"",
    );
    let e = errors(json!({"meshConfig": {"localityLbSetting": {
        "distribute": [{"from": "a/*", "to": {"b/*": 100}}], "failover": [{"from": "a", "to": "b"}]}}}));
    expect(
        &e,
        "spec.meshConfig.localityLbSetting",
        "can not simultaneously specify 'distribute' and 'failover'",
    );
    let e = errors(
        json!({"meshConfig": {"localityLbSetting": {"failover": [{"from": "us-east", "to": "us-east"}]}}}),
    );
    expect(
        &e,
        "spec.meshConfig.localityLbSetting.failover[0]",
        "different regions",
    );
}

#[test]
fn default_config_rules() {
    let e = errors(json!({"meshConfig": {"defaultConfig": {
        "concurrency": -1,
        "drainDuration": "1500ms",
        "discoveryAddress": "istiod.istio-system.svc",
        "statsdUdpAddress": "statsd:99999",
        "proxyAdminPort": 70000,
        "statusPort": 0,
        "controlPlaneAuthPolicy": "INHERIT",
        "serviceCluster": "a", "tracingServiceName": "CANONICAL_NAME_ONLY",
        "envoyAccessLogService": {"address": "Bad_Host:9000"},
        "privateKeyProvider": {"cryptomb": {"pollDelay": "0s"}},
        "tracing": {"sampling": 101, "zipkin": {"address": "zipkin:9411"}, "datadog": {"address": "dd:8126"},
                    "customTags": {"t": {}}}
    }}}));
    let p = "spec.meshConfig.defaultConfig";
    expect(
        &e,
        &format!("{p}.concurrency"),
        "greater than or equal to 0",
    );
    expect(&e, &format!("{p}.drainDuration"), "seconds precision");
    expect(&e, &format!("{p}.discoveryAddress"), "the port is missing");
    expect(&e, &format!("{p}.statsdUdpAddress"), "port \"99999\"");
    expect(&e, &format!("{p}.proxyAdminPort"), "out of range");
    expect(&e, &format!("{p}.statusPort"), "out of range");
    expect(&e, &format!("{p}.controlPlaneAuthPolicy"), "INHERIT");
    expect(&e, p, "only one of serviceCluster, tracingServiceName");
    expect(
        &e,
        &format!("{p}.envoyAccessLogService.address"),
        "not a valid hostname",
    );
    expect(
        &e,
        &format!("{p}.privateKeyProvider.cryptomb.pollDelay"),
        "non zero",
    );
    expect(
        &e,
        &format!("{p}.tracing.sampling"),
        "out of range; use 0 to 100",
    );
    expect(
        &e,
        &format!("{p}.tracing"),
        "only one of zipkin, lightstep, datadog, stackdriver, openCensusAgent",
    );
    expect(
        &e,
        &format!("{p}.tracing.customTags.t"),
        "exactly one of literal, environment, header",
    );
    let e = errors(
        json!({"meshConfig": {"defaultConfig": {"tracing": {"zipkin": {"address": "$(HOST_IP):9411"}}}}}),
    );
    assert!(e.is_empty(), "{e:#?}");
}

#[test]
fn mesh_config_warnings() {
    let w = warnings(json!({"meshConfig": {
    "defaultConfig": {"zipkinAddress": "zipkin:9411", "proxyMetadata": {"ISTIO_META_DNS_AUTO_ALLOCATE": "true"},
                      "tracing": {"lightstep": {"address": "ls:8080", "accessToken": "t"}}},
    "tlsDefaults": {"ecdhCurves": ["P-256", "P-999", "P-256"]},
    "extensionProviders": [
        {"name": "a", "zipkin": {"service": "zipkin", "port": 0}},
        {"name": "a", "prometheus": {}},
        {"name": "b"},
        {"name": "c", "envoyExtAuthzHttp": {"service": "authz.foo.svc.cluster.local", "port": 80, "pathPrefix": "check", "statusOnError": "999"}}
    ]}}));
    let p = "spec.meshConfig";
    expect(
        &w,
        &format!("{p}.defaultConfig.zipkinAddress"),
        "deprecated",
    );
    expect(
        &w,
        &format!("{p}.defaultConfig.proxyMetadata.ISTIO_META_DNS_AUTO_ALLOCATE"),
        "deprecated",
    );
    expect(
        &w,
        &format!("{p}.defaultConfig.tracing.lightstep"),
        "deprecated",
    );
    expect(
        &w,
        &format!("{p}.tlsDefaults.ecdhCurves[1]"),
        "unrecognized ECDH curve \"P-999\"",
    );
    expect(
        &w,
        &format!("{p}.tlsDefaults.ecdhCurves[2]"),
        "duplicate ECDH curve",
    );
    expect(
        &w,
        &format!("{p}.extensionProviders[0].zipkin.port"),
        "1..65535",
    );
    expect(
        &w,
        &format!("{p}.extensionProviders[1].name"),
        "duplicate extension provider name",
    );
    expect(
        &w,
        &format!("{p}.extensionProviders[2]"),
        "exactly one provider kind must be set, found none",
    );
    expect(
        &w,
        &format!("{p}.extensionProviders[3].envoyExtAuthzHttp.pathPrefix"),
        "should begin with `/`",
    );
    expect(
        &w,
        &format!("{p}.extensionProviders[3].envoyExtAuthzHttp.statusOnError"),
        "unsupported statusOnError",
    );
}

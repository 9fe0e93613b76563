//! Each annotation: its effect on the settings, and a clear refusal of a bad value.

use super::*;

fn settings(pairs: &[(&str, &str)]) -> Result<(Settings, Vec<String>), Error> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::from_pod(&map, &Options::default())
}

fn ok(pairs: &[(&str, &str)]) -> Settings {
    settings(pairs).expect("accepted").0
}

fn refused(pairs: &[(&str, &str)]) -> String {
    settings(pairs).expect_err("refused").to_string()
}

#[test]
fn defaults_are_istios_with_gating_on() {
    let s = ok(&[]);
    assert_eq!(s.include_outbound_ip_ranges, "*");
    assert_eq!(s.exclude_outbound_ip_ranges, "");
    assert_eq!(s.include_inbound_ports, "*");
    assert_eq!(s.interception, Interception::Redirect);
    assert_eq!(s.status_port, 15020);
    assert_eq!(s.resources.requests.cpu.as_deref(), Some("100m"));
    assert_eq!(s.resources.limits.memory.as_deref(), Some("1024Mi"));
    assert_eq!(s.log_level, "warning");
    assert_eq!(s.concurrency, 2);
    assert!(s.hold, "proxy-ready gating is on by default");
    assert!(s.native);
}

#[test]
fn traffic_annotations() {
    let s = ok(&[
        (
            "traffic.sidecar.istio.io/includeOutboundIPRanges",
            "10.0.0.0/8,fd00::/8",
        ),
        (
            "traffic.sidecar.istio.io/excludeOutboundIPRanges",
            "169.254.169.254/32",
        ),
        ("traffic.sidecar.istio.io/includeInboundPorts", "9080,9443"),
        ("traffic.sidecar.istio.io/excludeInboundPorts", "8081"),
        ("traffic.sidecar.istio.io/includeOutboundPorts", "5432"),
        (
            "traffic.sidecar.istio.io/excludeOutboundPorts",
            "3306, 6379",
        ),
    ]);
    assert_eq!(s.include_outbound_ip_ranges, "10.0.0.0/8,fd00::/8");
    assert_eq!(s.exclude_outbound_ip_ranges, "169.254.169.254/32");
    assert_eq!(s.include_inbound_ports, "9080,9443");
    assert_eq!(s.exclude_inbound_ports, "8081");
    assert_eq!(s.include_outbound_ports, "5432");
    assert_eq!(s.exclude_outbound_ports, "3306, 6379");
    let e = refused(&[(
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "10.0.0.0/33",
    )]);
    assert!(
        e.contains("excludeOutboundIPRanges") && e.contains("not a CIDR"),
        "{e}"
    );
    let e = refused(&[("traffic.sidecar.istio.io/includeOutboundIPRanges", "pods")]);
    assert!(e.contains("includeOutboundIPRanges"), "{e}");
    let e = refused(&[("traffic.sidecar.istio.io/excludeInboundPorts", "*")]);
    assert!(
        e.contains("excludeInboundPorts") && e.contains("not a port"),
        "{e}"
    );
    let e = refused(&[("traffic.sidecar.istio.io/includeInboundPorts", "70000")]);
    assert!(e.contains("includeInboundPorts"), "{e}");
    let e = refused(&[("traffic.sidecar.istio.io/excludeOutboundPorts", "0")]);
    assert!(e.contains("excludeOutboundPorts"), "{e}");
    let e = refused(&[("traffic.sidecar.istio.io/includeOutboundPorts", "x")]);
    assert!(e.contains("includeOutboundPorts"), "{e}");
}

#[test]
fn interception_mode() {
    assert_eq!(
        ok(&[("sidecar.istio.io/interceptionMode", "NONE")]).interception,
        Interception::None
    );
    let e = refused(&[("sidecar.istio.io/interceptionMode", "TPROXY")]);
    assert!(e.contains("TPROXY is not supported"), "{e}");
    let e = refused(&[("sidecar.istio.io/interceptionMode", "redirect")]);
    assert!(e.contains("REDIRECT, TPROXY or NONE"), "{e}");
}

#[test]
fn resources() {
    let s = ok(&[
        ("sidecar.istio.io/proxyCPU", "50m"),
        ("sidecar.istio.io/proxyMemory", "64Mi"),
        ("sidecar.istio.io/proxyCPULimit", "1"),
        ("sidecar.istio.io/proxyMemoryLimit", "0.5Gi"),
    ]);
    assert_eq!(s.resources.requests.cpu.as_deref(), Some("50m"));
    assert_eq!(s.resources.requests.memory.as_deref(), Some("64Mi"));
    assert_eq!(s.resources.limits.cpu.as_deref(), Some("1"));
    assert_eq!(s.resources.limits.memory.as_deref(), Some("0.5Gi"));
    for k in [
        "sidecar.istio.io/proxyCPU",
        "sidecar.istio.io/proxyMemory",
        "sidecar.istio.io/proxyCPULimit",
        "sidecar.istio.io/proxyMemoryLimit",
    ] {
        let e = refused(&[(k, "a lot")]);
        assert!(e.contains(k) && e.contains("quantity"), "{e}");
    }
}

#[test]
fn log_level_status_port_and_readiness() {
    assert_eq!(
        ok(&[("sidecar.istio.io/logLevel", "debug")]).log_level,
        "debug"
    );
    assert!(
        refused(&[("sidecar.istio.io/logLevel", "loud")]).contains("sidecar.istio.io/logLevel")
    );
    assert_eq!(
        ok(&[("status.sidecar.istio.io/port", "15999")]).status_port,
        15999
    );
    assert_eq!(ok(&[("status.sidecar.istio.io/port", "0")]).status_port, 0);
    assert!(
        refused(&[("status.sidecar.istio.io/port", "-1")]).contains("status.sidecar.istio.io/port")
    );
    let s = ok(&[
        ("readiness.status.sidecar.istio.io/initialDelaySeconds", "5"),
        ("readiness.status.sidecar.istio.io/periodSeconds", "7"),
        ("readiness.status.sidecar.istio.io/failureThreshold", "9"),
    ]);
    assert_eq!(
        (
            s.readiness_initial_delay,
            s.readiness_period,
            s.readiness_failure_threshold
        ),
        (5, 7, 9)
    );
    let e = refused(&[("readiness.status.sidecar.istio.io/periodSeconds", "soon")]);
    assert!(e.contains("periodSeconds"), "{e}");
}

#[test]
fn native_sidecar_and_proxy_image() {
    assert!(!ok(&[("sidecar.istio.io/nativeSidecar", "false")]).native);
    let classic = Options {
        native_sidecars: false,
        ..Options::default()
    };
    let map: BTreeMap<String, String> = [(
        "sidecar.istio.io/nativeSidecar".to_string(),
        "true".to_string(),
    )]
    .into();
    assert!(Settings::from_pod(&map, &classic).unwrap().0.native);
    assert!(refused(&[("sidecar.istio.io/nativeSidecar", "maybe")]).contains("nativeSidecar"));
    assert_eq!(
        ok(&[("sidecar.istio.io/proxyImage", "reg.example/proxy:dev")]).proxy_image,
        "reg.example/proxy:dev"
    );
}

#[test]
fn proxy_config() {
    let (s, warnings) = settings(&[(
        "proxy.istio.io/config",
        "holdApplicationUntilProxyStarts: false\nconcurrency: 4\nproxyMetadata:\n  ISTIO_META_DNS_CAPTURE: \"true\"\ntracing: {}\n",
    )])
    .unwrap();
    assert!(!s.hold);
    assert_eq!(s.concurrency, 4);
    assert_eq!(s.proxy_metadata["ISTIO_META_DNS_CAPTURE"], "true");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("`tracing`"), "{warnings:?}");
    // JSON is YAML too.
    assert_eq!(
        ok(&[("proxy.istio.io/config", r#"{"concurrency": 1}"#)]).concurrency,
        1
    );
    assert!(refused(&[("proxy.istio.io/config", "concurrency: many")]).contains("concurrency"));
    assert!(refused(&[("proxy.istio.io/config", "- a")]).contains("ProxyConfig"));
}

#[test]
fn unsupported_istio_annotations_warn() {
    let (_, warnings) = settings(&[
        ("sidecar.istio.io/bootstrapOverride", "my-bootstrap"),
        ("sidecar.istio.io/userVolumeMount", "{}"),
        ("traffic.sidecar.istio.io/kubevirtInterfaces", "net1"),
        ("readiness.status.sidecar.istio.io/applicationPorts", "9080"),
        ("inject.istio.io/templates", "grpc-agent"),
        ("prometheus.istio.io/merge-metrics", "false"),
        // Not Istio's injection annotations: no warning.
        ("example.com/owner", "me"),
        ("networking.istio.io/exportTo", "."),
        ("sidecar.istio.io/proxyCPU", "10m"),
    ])
    .unwrap();
    assert_eq!(warnings.len(), 6, "{warnings:#?}");
    assert!(warnings.iter().all(|w| w.contains("not supported")));
    assert!(
        warnings[0].contains("inject.istio.io/templates"),
        "sorted: {warnings:#?}"
    );
}

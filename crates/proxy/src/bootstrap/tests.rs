use std::path::PathBuf;

use super::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/bootstrap")
        .join(name)
}

fn load_err(name: &str) -> BootstrapError {
    match Bootstrap::load(&fixture(name), None) {
        Ok(b) => panic!("{name} loaded: {}", b.summary()),
        Err(err) => err,
    }
}

fn metadata_string(node: &Node, key: &str) -> Option<String> {
    use envoy_types::pb::google::protobuf::value::Kind;
    let value = node.metadata.as_ref()?.fields.get(key)?;
    match &value.kind {
        Some(Kind::StringValue(s)) => Some(s.clone()),
        _ => None,
    }
}

#[test]
fn istio_sidecar_bootstrap_loads() {
    let b = Bootstrap::load(&fixture("istio-sidecar.json"), None).expect("loads");
    assert_eq!(b.node.cluster, "productpage.bookinfo");
    assert!(b.node.id.starts_with("sidecar~10.244.0.12~"));
    for (key, want) in [
        ("NAMESPACE", "bookinfo"),
        ("INSTANCE_IPS", "10.244.0.12"),
        ("SERVICE_ACCOUNT", "bookinfo-productpage"),
        ("WORKLOAD_NAME", "productpage-v1"),
        ("CLUSTER_ID", "Kubernetes"),
    ] {
        assert_eq!(
            metadata_string(&b.node, key).as_deref(),
            Some(want),
            "{key}"
        );
    }
    assert_eq!(b.admin, Some(SocketAddr::from(([127, 0, 0, 1], 15000))));
    let ads = b.ads.as_ref().expect("ADS configured");
    assert_eq!(ads.cluster, "xds-grpc");
    assert_eq!(
        ads.address.socket_addr(),
        Some(SocketAddr::from(([127, 0, 0, 1], 15010)))
    );
    assert!(!ads.delta);
    assert!(ads.tls.is_none());
    assert!(ads.set_node_on_first_message_only);
    assert_eq!(b.static_clusters.len(), 5);
    assert_eq!(b.static_listeners.len(), 2);
    assert_eq!(b.static_listeners[0].name, "prometheus_listener");
    for field in [
        "stats_config",
        "layered_runtime",
        "tracing",
        "overload_manager",
        "cluster_manager",
        "bootstrap_extensions",
        "admin.access_log",
    ] {
        let needle = format!("bootstrap field `{field}` is ignored");
        assert!(
            b.warnings.iter().any(|w| w.starts_with(&needle)),
            "no warning for {field}: {:?}",
            b.warnings
        );
    }
    assert_eq!(b.warnings.len(), 7, "{:?}", b.warnings);
}

#[test]
fn minimal_delta_bootstrap_loads_with_tls() {
    let b = Bootstrap::load(&fixture("minimal-delta.yaml"), None).expect("loads");
    assert!(b.warnings.is_empty(), "{:?}", b.warnings);
    let ads = b.ads.expect("ADS configured");
    assert!(ads.delta);
    assert_eq!(
        ads.address,
        Endpoint::Tcp {
            host: "pilot.mizzen-system.svc".into(),
            port: 15012
        }
    );
    assert_eq!(ads.address.to_string(), "pilot.mizzen-system.svc:15012");
    let tls = ads.tls.expect("TLS");
    assert_eq!(tls.sni, "pilot.mizzen-system.svc");
    assert!(!ads.set_node_on_first_message_only);
}

#[test]
fn refused_top_level_field_is_named() {
    let err = load_err("bad/hds.yaml");
    assert_eq!(err.fields(), ["hds_config"]);
    let text = err.to_string();
    assert!(
        text.contains("bootstrap field `hds_config` (health discovery service) is not supported by mizzen proxy; remove it"),
        "{text}"
    );
    assert!(text.contains("bad/hds.yaml"), "{text}");
}

#[test]
fn unknown_field_is_named_with_its_path() {
    let err = load_err("bad/unknown-field.yaml");
    assert_eq!(
        err.fields(),
        ["static_resources.clusters[0].conect_timeout"]
    );
    let text = err.to_string();
    assert!(text.contains("unknown-field.yaml"), "{text}");
    assert!(
        text.contains("envoy.config.bootstrap.v3.Bootstrap"),
        "{text}"
    );
}

#[test]
fn wrong_type_is_named_with_its_path() {
    let err = load_err("bad/wrong-type.yaml");
    assert_eq!(
        err.fields(),
        ["admin.address.socket_address.port_value"],
        "{err}"
    );
}

#[test]
fn rest_ads_is_refused() {
    let err = load_err("bad/rest-ads.yaml");
    assert_eq!(
        err.fields(),
        ["dynamic_resources.ads_config.api_type"],
        "{err}"
    );
    assert!(err.to_string().contains("use GRPC or DELTA_GRPC"), "{err}");
}

#[test]
fn missing_ads_cluster_and_file_cds_are_refused_together() {
    let err = load_err("bad/missing-ads-cluster.yaml");
    let fields = err.fields();
    assert!(
        fields.contains(
            &"dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name".to_owned()
        ),
        "{err}"
    );
    assert!(
        fields
            .iter()
            .any(|f| f.starts_with("dynamic_resources.cds_config")),
        "{err}"
    );
    assert!(err.to_string().contains("add it there"), "{err}");
}

#[test]
fn yaml_syntax_error_names_file_and_line() {
    let err = load_err("bad/syntax.yaml");
    let BootstrapError::Syntax { line, format, .. } = &err else {
        panic!("syntax error expected: {err}");
    };
    assert_eq!(*format, "YAML");
    assert!(matches!(line, Some(5..=6)), "{err}");
    assert!(err.to_string().contains("bad/syntax.yaml:"), "{err}");
}

#[test]
fn json_syntax_error_names_file_and_line() {
    let err = load_err("bad/syntax.json");
    let BootstrapError::Syntax { line, format, .. } = &err else {
        panic!("syntax error expected: {err}");
    };
    assert_eq!(*format, "JSON");
    assert_eq!(*line, Some(5), "{err}");
}

#[test]
fn missing_file_says_which_flag() {
    let err = load_err("does-not-exist.yaml");
    assert!(matches!(err, BootstrapError::Read { .. }));
    assert!(err.to_string().contains("-c/--config-path"), "{err}");
}

#[test]
fn protobuf_formats_are_refused() {
    assert!(matches!(
        load_err("bootstrap.pb"),
        BootstrapError::Format { .. }
    ));
}

#[test]
fn non_mapping_document_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in [("empty.yaml", ""), ("list.yaml", "- a\n- b\n")] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        let err = Bootstrap::load(&path, None).expect_err("refused");
        assert!(
            matches!(
                err,
                BootstrapError::NotAMapping { .. } | BootstrapError::Syntax { .. }
            ),
            "{name}: {err}"
        );
    }
}

#[test]
fn overlay_merges_like_envoy() {
    let overlay = r#"
node:
  id: overridden
  metadata: { EXTRA: "yes" }
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 15999 }
static_resources:
  clusters:
    - name: extra
      connect_timeout: 2s
"#;
    let b = Bootstrap::load(&fixture("minimal-delta.yaml"), Some(overlay)).expect("loads");
    // Scalars set by the overlay win, the rest of the message stays.
    assert_eq!(b.node.id, "overridden");
    assert_eq!(b.node.cluster, "reviews.default");
    assert_eq!(metadata_string(&b.node, "EXTRA").as_deref(), Some("yes"));
    assert_eq!(b.admin, Some(SocketAddr::from(([127, 0, 0, 1], 15999))));
    // Repeated fields are appended (protobuf MergeFrom).
    let names: Vec<_> = b.static_clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["xds-grpc", "extra"]);
    assert!(b.ads.expect("ADS").delta);
}

#[test]
fn overlay_errors_name_the_flag() {
    let err = Bootstrap::load(
        &fixture("minimal-delta.yaml"),
        Some("admin: { adress: {} }"),
    )
    .expect_err("refused");
    assert!(err.to_string().starts_with("--config-yaml:"), "{err}");
    assert_eq!(err.fields(), ["admin.adress"]);
    let err =
        Bootstrap::load(&fixture("minimal-delta.yaml"), Some("admin: [")).expect_err("refused");
    assert!(matches!(err, BootstrapError::Syntax { .. }), "{err}");
}

#[test]
fn overlay_can_make_a_duplicate_cluster() {
    let overlay = "static_resources: { clusters: [ { name: xds-grpc } ] }";
    let err = Bootstrap::load(&fixture("minimal-delta.yaml"), Some(overlay)).expect_err("refused");
    assert_eq!(err.fields(), ["static_resources.clusters[1].name"], "{err}");
}

#[test]
fn service_node_and_cluster_override_the_node() {
    let overrides = NodeOverrides {
        id: Some("router~10.0.0.9~gw.ns~ns.svc.cluster.local".into()),
        cluster: Some("gw.ns".into()),
    };
    let b = Bootstrap::load_with(&fixture("istio-sidecar.json"), None, &overrides).expect("loads");
    assert_eq!(b.node.id, "router~10.0.0.9~gw.ns~ns.svc.cluster.local");
    assert_eq!(b.node.cluster, "gw.ns");
    assert_eq!(
        b.raw.node.as_ref().map(|n| n.cluster.as_str()),
        Some("gw.ns")
    );
    // The rest of the node is kept.
    assert_eq!(
        metadata_string(&b.node, "NAMESPACE").as_deref(),
        Some("bookinfo")
    );
}

#[test]
fn from_config_applies_flags() {
    let mut config = Config::for_path(fixture("minimal-delta.yaml"));
    config.service_node = Some("n1".into());
    config.config_yaml = Some("node: { cluster: c1 }".into());
    let b = Bootstrap::from_config(&config).expect("loads");
    assert_eq!((b.node.id.as_str(), b.node.cluster.as_str()), ("n1", "c1"));
}

#[test]
fn ads_needs_node_id_and_cluster() {
    let overrides = NodeOverrides {
        id: Some(String::new()),
        cluster: Some(String::new()),
    };
    let err = Bootstrap::load_with(&fixture("minimal-delta.yaml"), None, &overrides)
        .expect_err("refused");
    assert_eq!(err.fields(), ["node.id", "node.cluster"]);
    assert!(err.to_string().contains("--service-node"), "{err}");
}

#[test]
fn unlisted_and_nested_fields_are_classified() {
    let raw: EnvoyBootstrap = envoy_json::from_json(
        BOOTSTRAP_TYPE,
        &serde_json::json!({
            "admin": {
                "profile_path": "/tmp/envoy.prof",
                "address": { "pipe": { "path": "/tmp/admin.sock" } }
            },
            "static_resources": { "secrets": [ { "name": "s" } ] },
            "dynamic_resources": { "lds_resources_locator": "xdstp://x" },
            "header_prefix": "x-foo"
        }),
    )
    .expect("decodes");
    let err = Bootstrap::from_proto("test", raw, &NodeOverrides::default()).expect_err("refused");
    let mut fields = err.fields();
    fields.sort();
    assert_eq!(
        fields,
        [
            "admin.address.pipe",
            "dynamic_resources.lds_resources_locator",
            "header_prefix",
            "static_resources.secrets",
        ]
    );
}

#[test]
fn support_tables_cover_every_bootstrap_field() {
    let pool = envoy_json::pool();
    for (message, table) in [
        (BOOTSTRAP_TYPE, policy::TOP_LEVEL),
        ("envoy.config.bootstrap.v3.Admin", policy::ADMIN),
        (
            "envoy.config.bootstrap.v3.Bootstrap.StaticResources",
            policy::STATIC_RESOURCES,
        ),
        (
            "envoy.config.bootstrap.v3.Bootstrap.DynamicResources",
            policy::DYNAMIC_RESOURCES,
        ),
    ] {
        let desc = pool.get_message_by_name(message).expect(message);
        for field in desc.fields() {
            assert!(
                table.iter().any(|(name, _)| *name == field.name()),
                "{message}.{} is not in the support table",
                field.name()
            );
        }
        for (name, _) in table {
            assert!(
                desc.get_field_by_name(name).is_some(),
                "{message} has no field {name}"
            );
        }
    }
}

use std::path::PathBuf;

use serde_json::{Value, json};

use super::*;

fn seed(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/corpus/seed")
        .join(name)
}

fn options(files: &[PathBuf], sets: &[&str]) -> InstallOptions {
    InstallOptions {
        files: files.to_vec(),
        sets: sets.iter().map(|s| s.to_string()).collect(),
        revision: None,
    }
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn names(objects: &[Value], kind: &str) -> Vec<String> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| o["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn the_embedded_chart_is_the_whole_chart() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/charts/mizzen");
    let mut on_disk: Vec<String> = std::fs::read_dir(dir.join("templates"))
        .unwrap()
        .map(|e| format!("templates/{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    on_disk.sort();
    let embedded: Vec<String> = CHART_FILES.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(embedded, on_disk, "add new templates to CHART_FILES");
    let profiles: Vec<String> = std::fs::read_dir(dir.join("profiles"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".yaml")
                .to_string()
        })
        .collect();
    for p in &profiles {
        assert!(
            PROFILE_FILES.iter().any(|(n, _)| n == p),
            "profile {p} not embedded"
        );
        assert!(
            operator::PROFILES.iter().any(|(n, _)| n == p),
            "profile {p} not described"
        );
    }
    assert_eq!(profiles.len(), PROFILE_FILES.len());
}

#[test]
fn default_profile_installs_the_control_plane_and_an_ingress_gateway() {
    let plan = plan(&options(&[], &[])).unwrap();
    let objects = render(&plan).unwrap();
    let mut deployments = names(&objects, "Deployment");
    deployments.sort();
    assert_eq!(
        deployments,
        [
            "citadel",
            "galley",
            "injector",
            "istio-ingressgateway",
            "pilot"
        ]
    );
    assert_eq!(
        names(&objects, "MutatingWebhookConfiguration"),
        ["istio-sidecar-injector"]
    );
    assert_eq!(
        names(&objects, "ValidatingWebhookConfiguration"),
        ["istio-validator-istio-system"]
    );
    let pilot = find(&objects, "Deployment", "pilot");
    assert_eq!(pilot["metadata"]["namespace"], "istio-system");
    assert_eq!(
        pilot["spec"]["template"]["spec"]["containers"][0]["image"],
        "docker.io/mizzen/pilot:0.1.0"
    );
    // Webhook configurations come after the Deployments that serve them.
    let rank = |kind: &str| objects.iter().position(|o| o["kind"] == kind).unwrap();
    assert!(rank("ServiceAccount") < rank("Deployment"));
    assert!(rank("Deployment") < rank("MutatingWebhookConfiguration"));
}

#[test]
fn profiles_differ_as_documented() {
    let count = |profile: &str, kind: &str| {
        let plan = plan(&options(&[], &[&format!("profile={profile}")])).unwrap();
        names(&render(&plan).unwrap(), kind).len()
    };
    assert_eq!(count("minimal", "Deployment"), 4);
    assert_eq!(count("demo", "Deployment"), 6);
    assert_eq!(count("production", "PodDisruptionBudget"), 4);
    assert_eq!(count("production", "HorizontalPodAutoscaler"), 2);
    let e = plan(&options(&[], &["profile=huge"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown profile") && e.contains("minimal"),
        "{e}"
    );
}

#[test]
fn a_revision_suffixes_names_and_selects_its_label() {
    let mut opts = options(&[], &[]);
    opts.revision = Some("canary".into());
    let plan = plan(&opts).unwrap();
    let objects = render(&plan).unwrap();
    let mut deployments = names(&objects, "Deployment");
    deployments.sort();
    assert_eq!(
        deployments,
        [
            "citadel-canary",
            "galley-canary",
            "injector-canary",
            "pilot-canary"
        ]
    );
    let webhook = find(
        &objects,
        "MutatingWebhookConfiguration",
        "istio-sidecar-injector-canary",
    );
    let hooks = webhook["webhooks"].as_array().unwrap();
    assert_eq!(hooks.len(), 2, "only the istio.io/rev selectors");
    assert_eq!(
        hooks[0]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["canary"])
    );
    let injector = find(&objects, "Deployment", "injector-canary");
    let args = &injector["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--revision=canary")),
        "{args}"
    );
    assert!(args.as_array().unwrap().contains(&json!(
        "--discovery-address=pilot-canary.istio-system.svc:15010"
    )));
    let mut bad = options(&[], &[]);
    bad.revision = Some("Canary_1".into());
    assert!(
        super::plan(&bad)
            .unwrap_err()
            .to_string()
            .contains("DNS label")
    );
}

#[test]
fn every_seed_istio_operator_is_taken() {
    for file in [
        "01-istiooperator-istio-control-plane.yaml",
        "14-istiooperator-unnamed.yaml",
        "15-istiooperator-unnamed.yaml",
        "20-istiooperator-unnamed.yaml",
        "21-istiooperator-unnamed.yaml",
        "22-istiooperator-unnamed.yaml",
    ] {
        let plan = plan(&options(&[seed(file)], &[])).unwrap_or_else(|e| panic!("{file}: {e}"));
        render(&plan).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}

#[test]
fn seed_01_enables_the_egress_gateway_access_logs_and_proxy_resources() {
    let plan = plan(&options(
        &[seed("01-istiooperator-istio-control-plane.yaml")],
        &[],
    ))
    .unwrap();
    let objects = render(&plan).unwrap();
    find(&objects, "Deployment", "istio-egressgateway");
    let values = find(&objects, "ConfigMap", "injector-values");
    let text = values["data"]["values.yaml"].as_str().unwrap();
    let injected: Value = serde_saphyr::from_str(text).unwrap();
    assert_eq!(injected["meshConfig"]["accessLogFile"], "/dev/stdout");
    // The injector reads that file as the chart wrote it, with no key ignored.
    let (read, ignored) = injector::options::Values::from_yaml(text, "values.yaml").unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    assert_eq!(read.access_log_file.as_deref(), Some("/dev/stdout"));
    assert_eq!(read.resources.limits.memory.as_deref(), Some("256Mi"));
    let mesh: Value = serde_saphyr::from_str(
        find(&objects, "ConfigMap", "istio")["data"]["mesh"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(mesh["accessLogFile"], "/dev/stdout");
    // enableTracing is kept but said not to take effect.
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("spec.meshConfig.enableTracing")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn seed_14_sets_pilot_env_and_the_ca_address() {
    let plan = plan(&options(&[seed("14-istiooperator-unnamed.yaml")], &[])).unwrap();
    let objects = render(&plan).unwrap();
    let pilot = &find(&objects, "Deployment", "pilot")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        pilot["env"],
        json!([{"name": "PILOT_CERT_PROVIDER", "value": "istiod"}])
    );
    let injector =
        &find(&objects, "Deployment", "injector")["spec"]["template"]["spec"]["containers"][0];
    assert!(
        injector["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--ca-address=istiod.istio-system.svc:15012"))
    );
    // istiod.istio-system.svc:15012 exists and reaches citadel.
    let istiod = find(&objects, "Service", "istiod");
    assert_eq!(istiod["spec"]["selector"]["app"], "citadel");
}

#[test]
fn seed_20_autoscales_pilot() {
    let plan = plan(&options(&[seed("20-istiooperator-unnamed.yaml")], &[])).unwrap();
    let objects = render(&plan).unwrap();
    let hpa = find(&objects, "HorizontalPodAutoscaler", "pilot");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 5);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    let pilot = find(&objects, "Deployment", "pilot");
    assert!(
        pilot["spec"].get("replicas").is_none(),
        "the HPA owns replicas"
    );
    assert_eq!(
        pilot["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"],
        "4096Mi"
    );
}

#[test]
fn seed_14_mesh_id_and_seed_21_concurrency_reach_the_injector() {
    let plan = plan(&options(
        &[
            seed("14-istiooperator-unnamed.yaml"),
            seed("21-istiooperator-unnamed.yaml"),
        ],
        &[],
    ))
    .unwrap();
    let objects = render(&plan).unwrap();
    let text = find(&objects, "ConfigMap", "injector-values")["data"]["values.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    let (read, ignored) = injector::options::Values::from_yaml(&text, "values.yaml").unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    assert_eq!(read.concurrency, 2);
    assert_eq!(read.proxy_metadata["ISTIO_META_HTTP10"], "1");
    assert_eq!(read.proxy_metadata["ISTIO_META_MESH_ID"], "mesh1");
}

#[test]
fn seed_21_sets_concurrency_and_proxy_metadata() {
    let plan = plan(&options(&[seed("21-istiooperator-unnamed.yaml")], &[])).unwrap();
    let proxy = &plan.values["global"]["proxy"];
    assert_eq!(proxy["concurrency"], 2);
    assert_eq!(proxy["proxyMetadata"]["ISTIO_META_HTTP10"], "1");
    assert_eq!(proxy["resources"]["limits"]["memory"], "1024Mi");
}

#[test]
fn unsupported_fields_are_refused_with_file_line_and_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("iop.yaml");
    std::fs::write(
        &file,
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata:\n  name: x\nspec:\n  components:\n    cni:\n      enabled: true\n  values:\n    global:\n      jwtPolicy: first-party-jwt\n",
    )
    .unwrap();
    let e = plan(&options(std::slice::from_ref(&file), &[]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("iop.yaml:8: IstioOperator x: spec.components.cni.enabled: not supported"),
        "{e}"
    );
    assert!(
        e.contains(
            "iop.yaml:11: IstioOperator x: spec.values.global.jwtPolicy: only third-party-jwt"
        ),
        "{e}"
    );
    let e = plan(&options(&[], &["values.pilot.foo=1"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--set values.pilot.foo=1: spec.values.pilot: not supported"),
        "{e}"
    );
}

#[test]
fn set_overrides_files_and_types_values() {
    let plan = plan(&options(
        &[seed("21-istiooperator-unnamed.yaml")],
        &[
            "meshConfig.defaultConfig.concurrency=4",
            "components.pilot.enabled=false",
            "tag=1.2",
        ],
    ))
    .unwrap();
    assert_eq!(plan.values["global"]["proxy"]["concurrency"], 4);
    assert_eq!(plan.values["global"]["tag"], "1.2");
    assert!(
        names(&render(&plan).unwrap(), "Deployment")
            .iter()
            .all(|d| d != "pilot")
    );
    assert!(operator::parse_set("nonsense").is_err());
    assert!(operator::parse_set("a[0].b=1").is_err());
    assert_eq!(operator::parse_set("spec.x=007").unwrap().1, json!("007"));
}

#[test]
fn a_file_that_is_not_an_istio_operator_is_refused() {
    let e = plan(&options(&[seed("02-virtualservice-reviews.yaml")], &[])).unwrap_err();
    assert!(e.to_string().contains("takes IstioOperator files"), "{e}");
}

#[test]
fn the_chart_injection_webhooks_are_the_injectors_own() {
    for revision in [None, Some("canary")] {
        let mut opts = options(&[], &[]);
        opts.revision = revision.map(str::to_string);
        let plan = plan(&opts).unwrap();
        let objects = render(&plan).unwrap();
        let rev = revision.unwrap_or("default");
        let name = injector::webhook_config::configuration_name(rev);
        let webhook = find(&objects, "MutatingWebhookConfiguration", &name);
        let service = injector::webhook_config::ServiceRef {
            name: match revision {
                Some(r) => format!("injector-{r}"),
                None => "injector".into(),
            },
            ..Default::default()
        };
        let theirs = injector::webhook_config::webhooks(rev, &service, None);
        assert_eq!(webhook["webhooks"], theirs, "revision {rev}");
    }
}

#[test]
fn pilots_cluster_role_grants_what_its_kubernetes_source_watches() {
    let plan = plan(&options(&[], &[])).unwrap();
    let objects = render(&plan).unwrap();
    let role = find(&objects, "ClusterRole", "mizzen-pilot-istio-system");
    let mut granted = std::collections::BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    granted.insert(format!(
                        "{}/{}/{}",
                        group.as_str().unwrap(),
                        resource.as_str().unwrap(),
                        verb.as_str().unwrap()
                    ));
                }
            }
        }
    }
    for kind in pilot::config::kube::WatchedKind::all() {
        let name = kind.resource_name();
        let (plural, group) = name.split_once('.').unwrap_or((name.as_str(), ""));
        for verb in ["list", "watch"] {
            let want = format!("{group}/{plural}/{verb}");
            assert!(granted.contains(&want), "pilot's ClusterRole lacks {want}");
        }
    }
    assert!(granted.contains("apiextensions.k8s.io/customresourcedefinitions/get"));
}

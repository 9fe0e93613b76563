use super::*;
use crate::load::load_str;

const VS: &str = "apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v1
    retries:
      attempts: 3
      perTryTimout: 2s
";

#[test]
fn decodes_an_istio_kind_in_every_served_version() {
    for v in ["v1alpha3", "v1beta1", "v1"] {
        let text = format!(
            "apiVersion: networking.istio.io/{v}\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: reviews\n"
        );
        let loaded = load_str(&text, "dr.yaml");
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let r = &loaded.resources[0];
        assert_eq!(r.spec().unwrap().kind(), IstioKind::DestinationRule);
        assert_eq!(r.name(), "r");
        assert_eq!(r.namespace_or("default"), "default");
    }
}

#[test]
fn unknown_field_names_path_line_and_suggestion() {
    let loaded = load_str(VS, "vs.yaml");
    assert!(loaded.resources.is_empty());
    let e = &loaded.errors[0];
    assert_eq!(e.path.to_string(), "spec.http[0].retries.perTryTimout");
    assert_eq!(e.line, 16);
    assert!(
        e.message.contains("did you mean \"perTryTimeout\""),
        "{}",
        e.message
    );
    let text = e.to_string();
    assert!(
        text.starts_with(
            "vs.yaml:16: VirtualService reviews.default spec.http[0].retries.perTryTimout:"
        ),
        "{text}"
    );
}

#[test]
fn unserved_version_and_unknown_kind_are_refused() {
    let loaded = load_str(
        "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a}\n---\napiVersion: security.istio.io/v1\nkind: AuthPolicy\nmetadata: {name: b}\n",
        "x.yaml",
    );
    assert_eq!(loaded.errors.len(), 2);
    assert_eq!(loaded.errors[0].path.to_string(), "apiVersion");
    assert!(
        loaded.errors[0]
            .message
            .contains("networking.istio.io/v1alpha3")
    );
    assert_eq!(loaded.errors[1].path.to_string(), "kind");
    assert_eq!(loaded.errors[1].line, 6);
    assert!(loaded.errors[1].message.contains("AuthorizationPolicy"));
}

#[test]
fn kubernetes_kinds_pass_through() {
    let loaded = load_str(
        "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  ports: [{port: 9080, name: http}]\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
        "k.yaml",
    );
    assert!(loaded.errors.is_empty());
    assert!(
        matches!(&loaded.resources[0].body, Body::Kubernetes { known: true, object } if object["spec"]["ports"][0]["port"] == 9080)
    );
    assert!(matches!(
        &loaded.resources[1].body,
        Body::Kubernetes { known: false, .. }
    ));
}

#[test]
fn bad_enum_value_names_its_field() {
    let loaded = load_str(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: reviews\n  trafficPolicy:\n    loadBalancer:\n      simple: RANDOMLY\n",
        "dr.yaml",
    );
    let e = &loaded.errors[0];
    assert_eq!(e.path.to_string(), "spec.trafficPolicy.loadBalancer.simple");
    assert_eq!(e.line, 8);
    assert!(
        e.message.contains("unknown value \"RANDOMLY\""),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("did you mean \"RANDOM\""),
        "{}",
        e.message
    );
}

#[test]
fn one_bad_document_does_not_hide_the_others() {
    let loaded = load_str(
        &format!("{VS}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n"),
        "m.yaml",
    );
    assert_eq!(loaded.errors.len(), 1);
    assert_eq!(loaded.resources.len(), 1);
    assert_eq!(loaded.resources[0].origin.line, 18);
}

#[test]
fn yaml_syntax_errors_name_the_line() {
    let loaded = load_str("apiVersion: v1\nkind: [Service\nmetadata: {}\n", "bad.yaml");
    assert_eq!(loaded.errors.len(), 1);
    assert!(loaded.errors[0].message.contains("YAML syntax error"));
    assert!(loaded.errors[0].line >= 2);
}

#[test]
fn empty_spec_and_missing_spec_decode() {
    let loaded = load_str(
        "apiVersion: security.istio.io/v1beta1\nkind: AuthorizationPolicy\nmetadata: {name: deny, namespace: default}\nspec:\n  {}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny2}\n",
        "ap.yaml",
    );
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    assert_eq!(loaded.resources.len(), 2);
}

#[test]
fn every_seed_example_decodes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/corpus/seed");
    let loaded = crate::load::load_path(&dir);
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    assert_eq!(loaded.resources.len(), 40);
}

#[test]
fn closest_names() {
    assert_eq!(
        closest("per_try_timeout", &["perTryTimeout", "attempts"]),
        Some("perTryTimeout")
    );
    assert_eq!(closest("zzz", &["perTryTimeout", "attempts"]), None);
}

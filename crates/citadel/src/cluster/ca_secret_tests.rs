//! `load_ca` against a scripted API server: the create path, the load path, the
//! plug-in CA and the create race.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::ca::Mode;
use crate::cluster::mock::{self, already_exists, ca_config, not_found, stored};

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";

/// `load_ca` started against a scripted API server that has no Secret
/// `cacerts` (the first thing it asks).
async fn load_without_cacerts() -> (
    tokio::task::JoinHandle<Result<Ca, ClusterError>>,
    mock::ApiServer,
) {
    let (client, mut api) = mock::pair();
    let load = tokio::spawn(async move { load_ca(client, "istio-system", &ca_config()).await });
    api.expect("GET", &format!("{SECRETS}/cacerts"))
        .await
        .respond(404, not_found("secrets", "cacerts"));
    (load, api)
}

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("PEM certificate")
        .to_vec()
}

fn b64(s: &str) -> Value {
    serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap()
}

fn decoded(v: &Value) -> String {
    let b: ByteString = serde_json::from_value(v.clone()).expect("base64 data");
    String::from_utf8(b.0).expect("UTF-8")
}

fn secret_json(name: &str, type_: &str, data: &[(&str, &str)]) -> Value {
    let data: serde_json::Map<String, Value> =
        data.iter().map(|(k, v)| (k.to_string(), b64(v))).collect();
    stored(
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "istio-system"},
            "type": type_,
            "data": data,
        }),
        "48151",
    )
}

#[tokio::test]
async fn absent_ca_secret_is_created_with_a_new_root() {
    let (client, mut api) = mock::pair();
    let load = tokio::spawn(async move { load_ca(client, "istio-system", &ca_config()).await });

    api.expect("GET", &format!("{SECRETS}/cacerts"))
        .await
        .respond(404, not_found("secrets", "cacerts"));
    api.expect("GET", &format!("{SECRETS}/istio-ca-secret"))
        .await
        .respond(404, not_found("secrets", "istio-ca-secret"));
    let create = api.expect("POST", SECRETS).await;
    let body = create.body.clone();
    assert_eq!(body["metadata"]["name"], "istio-ca-secret");
    assert_eq!(body["type"], "istio.io/ca-root");
    let data = body["data"].as_object().unwrap();
    let keys: Vec<&str> = data.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "ca-cert.pem",
            "ca-key.pem",
            "cert-chain.pem",
            "key.pem",
            "root-cert.pem"
        ]
    );
    let cert = decoded(&data["ca-cert.pem"]);
    let cert_der = der(&cert);
    let (_, parsed) = X509Certificate::from_der(&cert_der).unwrap();
    assert!(parsed.is_ca(), "the stored root is a CA");
    assert_eq!(parsed.subject(), parsed.issuer(), "self-signed");
    assert!(decoded(&data["ca-key.pem"]).contains("PRIVATE KEY"));
    let mut answer = body.clone();
    answer["apiVersion"] = json!("v1");
    answer["kind"] = json!("Secret");
    create.respond(201, stored(answer, "1001"));

    let ca = load.await.unwrap().expect("CA");
    assert_eq!(ca.mode(), Mode::SelfSigned);
    assert_eq!(der(&ca.roots()[0]), der(&cert), "serves the root it stored");
}

#[tokio::test]
async fn stored_ca_secret_is_loaded_and_served_as_the_trust_bundle() {
    let root = new_root(&ca_config()).unwrap();
    let (load, mut api) = load_without_cacerts().await;
    api.expect("GET", &format!("{SECRETS}/istio-ca-secret"))
        .await
        .respond(
            200,
            secret_json(
                "istio-ca-secret",
                "istio.io/ca-root",
                &[
                    ("ca-cert.pem", &root.cert),
                    ("ca-key.pem", &root.key),
                    ("cert-chain.pem", ""),
                    ("key.pem", ""),
                    ("root-cert.pem", ""),
                ],
            ),
        );
    let ca = load.await.unwrap().expect("CA");
    assert_eq!(ca.mode(), Mode::SelfSigned);
    assert_eq!(ca.roots().len(), 1);
    assert_eq!(der(&ca.roots()[0]), der(&root.cert), "the same root");
    // And it signs with the stored key: a leaf verifies against the stored root.
    let (chain, _) = ca
        .dns_cert(
            "x",
            &["x.istio-system.svc".into()],
            std::time::Duration::from_secs(60),
        )
        .unwrap();
    let (root_der, leaf_der) = (der(&root.cert), der(&chain));
    let (_, r) = X509Certificate::from_der(&root_der).unwrap();
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    leaf.verify_signature(Some(r.public_key()))
        .expect("signed by the stored root");
    api.expect_quiet(std::time::Duration::from_millis(50)).await;
}

/// A root and an intermediate signed by it, as Istio's plug-in tools make them.
fn plug_in_material() -> (String, String, String) {
    let root = new_root(&ca_config()).unwrap();
    let root_key = KeyPair::from_pem(&root.key).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&root.cert, root_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name
        .push(DnType::CommonName, "Intermediate CA");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = p.signed_by(&key, &issuer).unwrap();
    (root.cert, cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn cacerts_wins() {
    let (root, ca_cert, ca_key) = plug_in_material();
    let chain = format!("{ca_cert}{root}");
    let (client, mut api) = mock::pair();
    let load = tokio::spawn(async move { load_ca(client, "istio-system", &ca_config()).await });
    api.expect("GET", &format!("{SECRETS}/cacerts"))
        .await
        .respond(
            200,
            secret_json(
                "cacerts",
                "Opaque",
                &[
                    ("ca-cert.pem", &ca_cert),
                    ("ca-key.pem", &ca_key),
                    ("root-cert.pem", &root),
                    ("cert-chain.pem", &chain),
                ],
            ),
        );
    let ca = load.await.unwrap().expect("CA");
    assert_eq!(ca.mode(), Mode::PlugIn);
    assert_eq!(der(&ca.roots()[0]), der(&root), "the plug-in root");
    api.expect_quiet(std::time::Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_lost_create_race_loads_the_winners_root() {
    let winner = new_root(&ca_config()).unwrap();
    let (load, mut api) = load_without_cacerts().await;
    api.expect("GET", &format!("{SECRETS}/istio-ca-secret"))
        .await
        .respond(404, not_found("secrets", "istio-ca-secret"));
    let ours = api.expect("POST", SECRETS).await;
    let our_cert = decoded(&ours.body["data"]["ca-cert.pem"]);
    ours.respond(409, already_exists("secrets", "istio-ca-secret"));
    api.expect("GET", &format!("{SECRETS}/istio-ca-secret"))
        .await
        .respond(
            200,
            secret_json(
                "istio-ca-secret",
                "istio.io/ca-root",
                &[("ca-cert.pem", &winner.cert), ("ca-key.pem", &winner.key)],
            ),
        );
    let ca = load.await.unwrap().expect("CA");
    assert_eq!(der(&ca.roots()[0]), der(&winner.cert), "the winner's root");
    assert_ne!(der(&our_cert), der(&winner.cert));
}

#[tokio::test]
async fn a_ca_secret_without_its_key_is_refused_naming_it() {
    let root = new_root(&ca_config()).unwrap();
    let (load, mut api) = load_without_cacerts().await;
    api.expect("GET", &format!("{SECRETS}/istio-ca-secret"))
        .await
        .respond(
            200,
            secret_json(
                "istio-ca-secret",
                "istio.io/ca-root",
                &[("ca-cert.pem", &root.cert)],
            ),
        );
    let err = load.await.unwrap().unwrap_err().to_string();
    assert!(
        err.starts_with("Secret istio-system/istio-ca-secret: key ca-key.pem is missing"),
        "{err}"
    );
}

#[tokio::test]
async fn forbidden_names_the_call_and_rbac() {
    let (client, mut api) = mock::pair();
    let load = tokio::spawn(async move { load_ca(client, "istio-system", &ca_config()).await });
    api.expect("GET", &format!("{SECRETS}/cacerts")).await.respond(
        403,
        mock::status(
            403,
            "Forbidden",
            "secrets \"cacerts\" is forbidden: User \"system:serviceaccount:istio-system:citadel\" cannot get resource \"secrets\" in API group \"\" in the namespace \"istio-system\"",
            "secrets",
            "cacerts",
        ),
    );
    let err = load.await.unwrap().unwrap_err().to_string();
    assert!(
        err.starts_with("reading Secret istio-system/cacerts: ") && err.contains("RBAC"),
        "{err}"
    );
}

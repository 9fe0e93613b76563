//! Citadel built in cluster mode against a scripted API server: the CA comes from
//! `istio-ca-secret`, the controllers start, and a workload's token is checked by
//! TokenReview (audience `istio-ca`) before a certificate is issued over real TLS.

use clap::Parser;
use common::pb::istio_ca::IstioCertificateRequest;
use common::pb::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use k8s_openapi::ByteString;
use rcgen::{CertificateParams, KeyPair, SanType};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::*;
use crate::ca::new_root;
use crate::cluster::mock::{self, ca_config, list, not_found, stored};

fn b64(s: &str) -> Value {
    serde_json::to_value(ByteString(s.as_bytes().to_vec())).unwrap()
}

/// Answers start-up reads, the controllers' lists and watches, and TokenReviews
/// (authenticated as default/reviews); hands each TokenReview body to the test.
fn api_server(
    mut api: mock::ApiServer,
    root: crate::ca::RootPem,
) -> mpsc::UnboundedReceiver<Value> {
    let (reviews_tx, reviews) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut streams = Vec::new();
        loop {
            let call = api.next().await;
            let secrets = "/api/v1/namespaces/istio-system/secrets";
            match (call.method.as_str(), call.path.as_str()) {
                ("GET", p) if p == format!("{secrets}/cacerts") => {
                    call.respond(404, not_found("secrets", "cacerts"))
                }
                ("GET", p) if p == format!("{secrets}/istio-ca-secret") => call.respond(
                    200,
                    stored(
                        json!({"apiVersion": "v1", "kind": "Secret", "type": "istio.io/ca-root",
                               "metadata": {"name": "istio-ca-secret", "namespace": "istio-system"},
                               "data": {"ca-cert.pem": b64(&root.cert), "ca-key.pem": b64(&root.key),
                                        "cert-chain.pem": "", "key.pem": "", "root-cert.pem": ""}}),
                        "300",
                    ),
                ),
                ("POST", "/apis/authentication.k8s.io/v1/tokenreviews") => {
                    let mut answer = call.body.clone();
                    answer["status"] = json!({
                        "authenticated": true,
                        "user": {
                            "username": "system:serviceaccount:default:reviews",
                            "uid": "0d4c7a3e-5b8f-4f0a-9c1d-2e3f4a5b6c7d",
                            "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
                            "extra": {"authentication.kubernetes.io/pod-name": ["reviews-v1-5d8f9c7b6-x2k4q"]},
                        },
                        "audiences": ["istio-ca"],
                    });
                    let _ = reviews_tx.send(call.body.clone());
                    call.respond(201, answer);
                }
                ("GET", _) if call.query.contains("watch=true") => streams.push(call.stream()),
                ("GET", "/api/v1/namespaces") => {
                    call.respond(200, list("v1", "NamespaceList", vec![], "400"))
                }
                ("GET", "/api/v1/configmaps") => {
                    call.respond(200, list("v1", "ConfigMapList", vec![], "400"))
                }
                (m, p) => panic!("unexpected {m} {p}?{}", call.query),
            }
        }
    });
    reviews
}

fn csr(uri: &str) -> String {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    p.serialize_request(&key).unwrap().pem().unwrap()
}

#[tokio::test]
async fn cluster_mode_uses_the_stored_root_and_token_review() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::try_parse_from([
        "citadel",
        "--kubernetes",
        "--namespace",
        "istio-system",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--serving-hosts",
        "localhost",
        "--key-dir",
        dir.path().to_str().unwrap(),
    ])
    .unwrap();
    let root = new_root(&ca_config()).unwrap();
    let (client, api) = mock::pair();
    let mut reviews = api_server(api, root.clone());

    let app = App::build_in_cluster(config, client).await.expect("builds");
    let root_der = CertificateDer::from_pem_slice(root.cert.as_bytes()).unwrap();
    assert_eq!(
        app.ca().root_ders(),
        vec![root_der.clone()],
        "the stored root"
    );
    assert!(
        !dir.path().join(crate::local_issuer::JWKS_FILE).exists(),
        "no local token issuer in cluster mode"
    );
    let grpc = app.addrs().grpc;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&root.cert))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{grpc}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS to citadel, verified with the stored root");
    let mut ca = IstioCertificateServiceClient::new(channel);
    let uri = "spiffe://cluster.local/ns/default/sa/reviews";
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr(uri),
        validity_duration: 3600,
        metadata: None,
    });
    req.metadata_mut()
        .insert("authorization", "Bearer projected-token".parse().unwrap());
    let chain = ca
        .create_certificate(req)
        .await
        .expect("issued")
        .into_inner()
        .cert_chain;

    let review = reviews.recv().await.unwrap();
    assert_eq!(review["spec"]["token"], "projected-token");
    assert_eq!(review["spec"]["audiences"], json!(["istio-ca"]));
    assert_eq!(chain.len(), 2);
    let leaf_der = CertificateDer::from_pem_slice(chain[0].as_bytes()).unwrap();
    let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names[0].to_string(),
        format!("URI({uri})")
    );
    assert_eq!(
        CertificateDer::from_pem_slice(chain[1].as_bytes()).unwrap(),
        root_der
    );

    let _ = stop.send(());
    task.await.unwrap().expect("stops cleanly");
}

//! Webhook serving certificates against a scripted API server: issued into a
//! missing Secret, kept while fresh, renewed near expiry or when another CA signed
//! it, and a lost write race.

use std::time::Duration;

use serde_json::{Value, json};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;
use crate::ca::{Ca, new_root};
use crate::cluster::mock::{self, ApiServer, ca_config, conflict, not_found, stored};

const SECRETS: &str = "/api/v1/namespaces/istio-system/secrets";
const TTL: Duration = Duration::from_secs(3600);

fn ca() -> Ca {
    let config = ca_config();
    let root = new_root(&config).unwrap();
    Ca::from_root_pem(&config, &root, "cert".as_ref(), "key".as_ref()).unwrap()
}

fn galley() -> WebhookCert {
    "galley-webhook-tls=galley.istio-system.svc"
        .parse()
        .unwrap()
}

fn decoded(v: &Value) -> String {
    let b: ByteString = serde_json::from_value(v.clone()).expect("base64 data");
    String::from_utf8(b.0).expect("UTF-8")
}

fn as_json(secret: &Secret, rv: &str) -> Value {
    let mut v = serde_json::to_value(secret).unwrap();
    v["apiVersion"] = json!("v1");
    v["kind"] = json!("Secret");
    stored(v, rv)
}

fn ensure(
    client: kube::Client,
    ca: Arc<Ca>,
    now: OffsetDateTime,
) -> tokio::task::JoinHandle<Result<(Outcome, OffsetDateTime), ClusterError>> {
    tokio::spawn(async move {
        let api: Api<Secret> = Api::namespaced(client, "istio-system");
        ensure_webhook_cert(&api, &ca, &galley(), TTL, now).await
    })
}

/// Checks the written Secret: a chain whose leaf is for the DNS name, issued by the
/// root, valid for the TTL, with the key that goes with it.
fn check_written(body: &Value, ca: &Ca) {
    assert_eq!(body["type"], "kubernetes.io/tls");
    assert_eq!(body["metadata"]["name"], "galley-webhook-tls");
    let chain = decoded(&body["data"]["tls.crt"]);
    let key = decoded(&body["data"]["tls.key"]);
    let ders: Vec<_> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(ders.len(), 2, "leaf and root");
    let root_der = ca.root_ders().remove(0);
    assert_eq!(
        ders[1].as_ref(),
        root_der.as_ref(),
        "the chain ends at the root"
    );
    let (_, leaf) = X509Certificate::from_der(&ders[0]).unwrap();
    let (_, root) = X509Certificate::from_der(&root_der).unwrap();
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(sans, ["DNSName(galley.istio-system.svc)"]);
    assert_eq!(leaf.issuer(), root.subject(), "issued by the root");
    leaf.verify_signature(Some(root.public_key()))
        .expect("signed by the root");
    let validity = leaf.validity();
    let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
    assert_eq!(lifetime, TTL.as_secs() as i64);
    assert!(validity.is_valid(), "valid now");
    let key = rcgen::KeyPair::from_pem(&key).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw(),
        "tls.key is the leaf's key"
    );
}

async fn missing_then_created(api: &mut ApiServer, ca: &Ca) -> Value {
    api.expect("GET", &format!("{SECRETS}/galley-webhook-tls"))
        .await
        .respond(404, not_found("secrets", "galley-webhook-tls"));
    let create = api.expect("POST", SECRETS).await;
    check_written(&create.body, ca);
    let answer = stored(create.body.clone(), "2001");
    create.respond(201, answer.clone());
    answer
}

#[tokio::test]
async fn missing_secret_gets_a_certificate_for_the_dns_name_signed_by_the_root() {
    let ca = Arc::new(ca());
    let (client, mut api) = mock::pair();
    let now = OffsetDateTime::now_utc();
    let run = ensure(client, ca.clone(), now);
    missing_then_created(&mut api, &ca).await;
    let (outcome, renew_at) = run.await.unwrap().unwrap();
    assert_eq!(outcome, Outcome::Issued);
    let in_secs = (renew_at - now).whole_seconds();
    assert!(
        (2399..=2401).contains(&in_secs),
        "renewal at 2/3 of 1 h: {in_secs}"
    );
}

#[tokio::test]
async fn fresh_certificate_is_kept_and_one_near_expiry_is_renewed() {
    let ca = Arc::new(ca());
    let (client, mut api) = mock::pair();
    let now = OffsetDateTime::now_utc();
    let run = ensure(client.clone(), ca.clone(), now);
    let stored_secret = missing_then_created(&mut api, &ca).await;
    run.await.unwrap().unwrap();

    // Half an hour later: still fresh, nothing written.
    let run = ensure(client.clone(), ca.clone(), now + Duration::from_secs(1800));
    api.expect("GET", &format!("{SECRETS}/galley-webhook-tls"))
        .await
        .respond(200, stored_secret.clone());
    assert_eq!(run.await.unwrap().unwrap().0, Outcome::Unchanged);
    api.expect_quiet(Duration::from_millis(50)).await;

    // 45 minutes in (past 2/3): replaced, guarded by the resourceVersion read.
    let run = ensure(client, ca.clone(), now + Duration::from_secs(2700));
    api.expect("GET", &format!("{SECRETS}/galley-webhook-tls"))
        .await
        .respond(200, stored_secret.clone());
    let put = api
        .expect("PUT", &format!("{SECRETS}/galley-webhook-tls"))
        .await;
    assert_eq!(put.body["metadata"]["resourceVersion"], "2001");
    check_written(&put.body, &ca);
    assert_ne!(
        put.body["data"]["tls.crt"], stored_secret["data"]["tls.crt"],
        "a new certificate"
    );
    let answer = stored(put.body.clone(), "2002");
    put.respond(200, answer);
    assert_eq!(run.await.unwrap().unwrap().0, Outcome::Issued);
}

#[tokio::test]
async fn a_certificate_from_another_root_or_for_other_names_is_replaced() {
    let ca = Arc::new(ca());
    let other = ca_other();
    let (chain, key) = other
        .dns_cert("galley", &["galley.istio-system.svc".into()], TTL)
        .unwrap();
    let foreign = as_json(
        &tls_secret("istio-system", "galley-webhook-tls", &chain, &key),
        "3001",
    );
    let (chain, key) = ca
        .dns_cert("x", &["other.istio-system.svc".into()], TTL)
        .unwrap();
    let misnamed = as_json(
        &tls_secret("istio-system", "galley-webhook-tls", &chain, &key),
        "3002",
    );
    for (stale, rv) in [(foreign, "3001"), (misnamed, "3002")] {
        let (client, mut api) = mock::pair();
        let run = ensure(client, ca.clone(), OffsetDateTime::now_utc());
        api.expect("GET", &format!("{SECRETS}/galley-webhook-tls"))
            .await
            .respond(200, stale);
        let put = api
            .expect("PUT", &format!("{SECRETS}/galley-webhook-tls"))
            .await;
        assert_eq!(put.body["metadata"]["resourceVersion"], rv);
        check_written(&put.body, &ca);
        let answer = stored(put.body.clone(), "4000");
        put.respond(200, answer);
        assert_eq!(run.await.unwrap().unwrap().0, Outcome::Issued);
    }
}

fn ca_other() -> Ca {
    ca()
}

#[tokio::test]
async fn a_lost_write_race_reads_the_winners_certificate() {
    let ca = Arc::new(ca());
    let (client, mut api) = mock::pair();
    // The stored certificate is from a previous root, so it must be replaced.
    let (chain, key) = ca_other()
        .dns_cert("old", &["galley.istio-system.svc".into()], TTL)
        .unwrap();
    let old = as_json(
        &tls_secret("istio-system", "galley-webhook-tls", &chain, &key),
        "5001",
    );
    let run = ensure(client, ca.clone(), OffsetDateTime::now_utc());
    api.expect("GET", &format!("{SECRETS}/galley-webhook-tls"))
        .await
        .respond(200, old);
    let put = api
        .expect("PUT", &format!("{SECRETS}/galley-webhook-tls"))
        .await;
    // Another replica renewed it first.
    let winner = stored(put.body.clone(), "5002");
    put.respond(409, conflict("secrets", "galley-webhook-tls"));
    api.expect("GET", &format!("{SECRETS}/galley-webhook-tls"))
        .await
        .respond(200, winner);
    let (outcome, _) = run.await.unwrap().unwrap();
    assert_eq!(
        outcome,
        Outcome::Unchanged,
        "the winner's certificate is kept"
    );
}

#[tokio::test]
async fn a_secret_of_another_type_is_refused_with_what_to_do() {
    let ca = Arc::new(ca());
    let (client, mut api) = mock::pair();
    let run = ensure(client, ca, OffsetDateTime::now_utc());
    api.expect("GET", &format!("{SECRETS}/galley-webhook-tls"))
        .await
        .respond(
            200,
            stored(
                json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                       "metadata": {"name": "galley-webhook-tls", "namespace": "istio-system"}}),
                "6001",
            ),
        );
    let err = run.await.unwrap().unwrap_err().to_string();
    assert!(
        err.contains("has type Opaque, not kubernetes.io/tls; delete it"),
        "{err}"
    );
}

#[tokio::test]
async fn the_loop_rewrites_a_deleted_secret_when_the_watch_says_so() {
    let ca = Arc::new(ca());
    let (client, mut api) = mock::pair();
    let task = tokio::spawn(run(
        client,
        ca.clone(),
        "istio-system".into(),
        vec![galley()],
        TTL,
    ));
    let item = format!("{SECRETS}/galley-webhook-tls");
    let mut current: Option<Value> = None;
    let mut watch = None;
    let mut posts = 0;
    let mut deleted = false;
    while posts < 2 {
        let call = api.next().await;
        match (call.method.as_str(), call.path == item) {
            ("GET", false) => {
                assert_eq!(call.path, SECRETS);
                assert!(
                    call.query
                        .contains("fieldSelector=metadata.name%3Dgalley-webhook-tls"),
                    "watched by name: {}",
                    call.query
                );
                if call.query.contains("watch=true") {
                    watch = Some(call.stream());
                } else {
                    let items = current.iter().cloned().collect();
                    call.respond(200, mock::list("v1", "SecretList", items, "7000"));
                }
            }
            ("GET", true) => match &current {
                Some(s) => call.respond(200, s.clone()),
                None => call.respond(404, not_found("secrets", "galley-webhook-tls")),
            },
            ("POST", false) => {
                check_written(&call.body, &ca);
                posts += 1;
                let made = stored(call.body.clone(), &format!("700{posts}"));
                current = Some(made.clone());
                call.respond(201, made);
            }
            (m, _) => panic!("unexpected {m} {}", call.path),
        }
        // Once written and watched, someone deletes it.
        if posts == 1
            && !deleted
            && let (Some(w), Some(s)) = (&watch, &current)
        {
            w.event("DELETED", s.clone());
            current = None;
            deleted = true;
        }
    }
    assert!(deleted, "rewritten after the deletion");
    task.abort();
}

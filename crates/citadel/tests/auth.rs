//! Caller authentication with real keys and certificates: JWTs from the local issuer
//! and from foreign keys (EC and RSA), JWKS from a file, a URL and a fixed set,
//! TokenReview against a mocked API server, and client certificates from a small CA
//! built here.

use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use citadel::auth::client_cert::ClientCertAuthenticator;
use citadel::auth::jwks::JwksSource;
use citadel::auth::jwt::JwtAuthenticator;
use citadel::auth::token_review::TokenReviewAuthenticator;
use citadel::auth::{AuthError, Authenticator, CallContext, Caller};
use citadel::local_issuer::{ISSUER, LocalIssuer};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TD: &str = "cluster.local";
const AUD: &str = "istio-ca";

fn bearer(token: &str) -> CallContext {
    CallContext {
        authorization: Some(format!("Bearer {token}")),
        ..Default::default()
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn hour() -> Duration {
    Duration::from_secs(3600)
}

/// The reason of a refusal by `authenticator`; panics on anything else.
fn refused(result: Result<Option<Caller>, AuthError>, authenticator: &str) -> String {
    match result {
        Err(AuthError::Refused {
            authenticator: a,
            reason,
        }) if a == authenticator => reason,
        other => panic!("expected a refusal by {authenticator}, got {other:?}"),
    }
}

async fn jwt(source: JwksSource) -> JwtAuthenticator {
    JwtAuthenticator::new(source, ISSUER.into(), AUD.into(), TD.into())
        .await
        .unwrap()
}

/// Claims like the local issuer's, for tokens signed here with changes.
fn claims(ns: &str, sa: &str) -> Value {
    let now = now();
    json!({
        "iss": ISSUER,
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "aud": [AUD],
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    })
}

/// Signs `claims` with the issuer key kept in `key_dir`, with header `kid`.
fn sign_with(key_dir: &Path, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(key_dir.join("issuer-key.pem")).unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_string);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

struct Fixture {
    dir: tempfile::TempDir,
    issuer: LocalIssuer,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let issuer = LocalIssuer::load_or_create(dir.path()).unwrap();
    Fixture { dir, issuer }
}

impl Fixture {
    fn sign(&self, claims: &Value) -> String {
        sign_with(self.dir.path(), Some(self.issuer.kid()), claims)
    }
}

#[tokio::test]
async fn a_minted_token_names_its_service_account() {
    let f = fixture();
    let auth = jwt(JwksSource::Static(f.issuer.jwks())).await;
    let token = f.issuer.mint("ns1", "sa1", AUD, hour()).unwrap();
    let caller = auth.authenticate(&bearer(&token)).await.unwrap().unwrap();
    assert_eq!(
        caller.identity.to_string(),
        "spiffe://cluster.local/ns/ns1/sa/sa1"
    );
    assert_eq!(caller.authenticator, "jwt");
    assert_eq!(caller.requester, "system:serviceaccount:ns1:sa1");
    assert_eq!(auth.authenticate(&CallContext::default()).await, Ok(None));
}

#[tokio::test]
async fn each_bad_token_is_refused_with_its_reason() {
    let f = fixture();
    let auth = jwt(JwksSource::Static(f.issuer.jwks())).await;
    let check = async |token: String, want: &str| {
        let reason = refused(auth.authenticate(&bearer(&token)).await, "jwt");
        assert!(reason.contains(want), "want {want:?} in {reason:?}");
    };

    // Signed by another key that claims our kid.
    let other = fixture();
    let forged = sign_with(
        other.dir.path(),
        Some(f.issuer.kid()),
        &claims("ns1", "sa1"),
    );
    check(forged, "bad signature").await;

    let mut c = claims("ns1", "sa1");
    c["exp"] = json!(now() - 3600);
    c["iat"] = json!(now() - 7200);
    c["nbf"] = json!(now() - 7200);
    check(f.sign(&c), "expired at").await;

    let mut c = claims("ns1", "sa1");
    c["nbf"] = json!(now() + 600);
    check(f.sign(&c), "not valid before").await;

    let mut c = claims("ns1", "sa1");
    c["aud"] = json!(["someone-else"]);
    check(
        f.sign(&c),
        "wrong audience (got [\"someone-else\"], want \"istio-ca\")",
    )
    .await;

    let mut c = claims("ns1", "sa1");
    c["iss"] = json!("https://elsewhere.example");
    check(f.sign(&c), "wrong issuer").await;

    let mut c = claims("ns1", "sa1");
    c["sub"] = json!("alice@example.com");
    check(f.sign(&c), "not a service account").await;

    let mut c = claims("ns1", "sa1");
    c.as_object_mut().unwrap().remove("exp");
    check(f.sign(&c), "no expiry").await;

    let unknown = sign_with(f.dir.path(), Some("nobody"), &claims("ns1", "sa1"));
    check(unknown, "unknown key id \"nobody\"").await;

    let hmac = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("ns1", "sa1"),
        &EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    check(hmac, "not accepted").await;

    check("garbage".into(), "not a JWT").await;
    check("a.b.c".into(), "not a JWT").await;
    check("x".repeat(16 * 1024 + 1), "larger than the limit").await;
}

#[tokio::test]
async fn leeway_and_tokens_without_kid() {
    let f = fixture();
    let auth = jwt(JwksSource::Static(f.issuer.jwks())).await;
    // Expired 10 s ago: within the 30 s leeway.
    let mut c = claims("ns1", "sa1");
    c["exp"] = json!(now() - 10);
    assert!(
        auth.authenticate(&bearer(&f.sign(&c)))
            .await
            .unwrap()
            .is_some()
    );
    // No kid: every key is tried.
    let no_kid = sign_with(f.dir.path(), None, &claims("ns2", "sa2"));
    let caller = auth.authenticate(&bearer(&no_kid)).await.unwrap().unwrap();
    assert_eq!(
        caller.identity.to_string(),
        "spiffe://cluster.local/ns/ns2/sa/sa2"
    );
    let other = fixture();
    let foreign = sign_with(other.dir.path(), None, &claims("ns1", "sa1"));
    let reason = refused(auth.authenticate(&bearer(&foreign)).await, "jwt");
    assert!(
        reason.contains("no key in the JWKS verifies it"),
        "{reason}"
    );
}

#[tokio::test]
async fn rs256_keys_from_a_jwks_verify() {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let key = EncodingKey::from_rsa_pem(pair.serialize_pem().as_bytes()).unwrap();
    let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("rsa-1".into());
    let auth = jwt(JwksSource::Static(JwkSet { keys: vec![jwk] })).await;

    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".into());
    let token = jsonwebtoken::encode(&header, &claims("web", "frontend"), &key).unwrap();
    let caller = auth.authenticate(&bearer(&token)).await.unwrap().unwrap();
    assert_eq!(
        caller.identity.to_string(),
        "spiffe://cluster.local/ns/web/sa/frontend"
    );

    // An EC token naming the RSA key is refused before any signature check.
    let f = fixture();
    let confused = sign_with(f.dir.path(), Some("rsa-1"), &claims("web", "frontend"));
    let reason = refused(auth.authenticate(&bearer(&confused)).await, "jwt");
    assert!(reason.contains("not for algorithm ES256"), "{reason}");
}

fn write_jwks(path: &Path, set: &JwkSet) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(set).unwrap()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn a_jwks_file_is_reloaded_after_rotation() {
    let old = fixture();
    let new = fixture();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    write_jwks(&path, &old.issuer.jwks());
    let auth = jwt(JwksSource::File(path.clone())).await;
    let old_token = old.issuer.mint("ns1", "sa1", AUD, hour()).unwrap();
    let new_token = new.issuer.mint("ns1", "sa1", AUD, hour()).unwrap();
    assert!(
        auth.authenticate(&bearer(&old_token))
            .await
            .unwrap()
            .is_some()
    );

    write_jwks(&path, &new.issuer.jwks());
    // The unknown kid makes the authenticator look at the file at once.
    assert!(
        auth.authenticate(&bearer(&new_token))
            .await
            .unwrap()
            .is_some()
    );
    let reason = refused(auth.authenticate(&bearer(&old_token)).await, "jwt");
    assert!(reason.contains("unknown key id"), "{reason}");

    // A broken file keeps the last good set.
    std::fs::write(&path, "{ not json").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(
        auth.authenticate(&bearer(&new_token))
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_jwks_file_must_exist_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let err = JwtAuthenticator::new(
        JwksSource::File(missing),
        ISSUER.into(),
        AUD.into(),
        TD.into(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("nope.json"), "{err}");
}

/// A one-route HTTP/1.1 server answering every request with the current body.
struct JwksServer {
    url: String,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

async fn jwks_server(set: &JwkSet) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    let body = Arc::new(Mutex::new(serde_json::to_string(set).unwrap()));
    let hits = Arc::new(AtomicUsize::new(0));
    let (b, h) = (body.clone(), hits.clone());
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let (b, h) = (b.clone(), h.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                assert!(request.starts_with(b"GET /keys HTTP/1.1\r\n"));
                h.fetch_add(1, Ordering::SeqCst);
                let body = b.lock().unwrap().clone();
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(answer.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    JwksServer { url, body, hits }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_refreshed_on_an_unknown_kid() {
    let old = fixture();
    let new = fixture();
    let server = jwks_server(&old.issuer.jwks()).await;
    let auth = jwt(JwksSource::url(server.url.clone())).await;
    assert_eq!(server.hits.load(Ordering::SeqCst), 1);
    let old_token = old.issuer.mint("ns1", "sa1", AUD, hour()).unwrap();
    assert!(
        auth.authenticate(&bearer(&old_token))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(server.hits.load(Ordering::SeqCst), 1, "known kid: no fetch");

    *server.body.lock().unwrap() = serde_json::to_string(&new.issuer.jwks()).unwrap();
    let new_token = new.issuer.mint("ns1", "sa1", AUD, hour()).unwrap();
    assert!(
        auth.authenticate(&bearer(&new_token))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        server.hits.load(Ordering::SeqCst),
        2,
        "unknown kid: one fetch"
    );

    // Another unknown kid within 30 s does not fetch again.
    let stranger = fixture();
    let token = stranger.issuer.mint("ns1", "sa1", AUD, hour()).unwrap();
    let reason = refused(auth.authenticate(&bearer(&token)).await, "jwt");
    assert!(reason.contains("unknown key id"), "{reason}");
    assert_eq!(server.hits.load(Ordering::SeqCst), 2, "rate-limited");
}

#[tokio::test]
async fn an_unreachable_jwks_url_makes_the_authenticator_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/keys", listener.local_addr().unwrap());
    drop(listener);
    let auth = jwt(JwksSource::url(url)).await;
    let f = fixture();
    let token = f.issuer.mint("ns1", "sa1", AUD, hour()).unwrap();
    match auth.authenticate(&bearer(&token)).await {
        Err(AuthError::Unavailable {
            authenticator: "jwt",
            reason,
        }) => {
            assert!(reason.contains("no JWKS fetched"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
    #[test]
    fn arbitrary_bearer_strings_never_panic(
        s in proptest::prelude::any::<String>(),
        jwtish in "[A-Za-z0-9_=.-]{0,300}",
        cut in 0usize..400,
    ) {
        static STATE: std::sync::OnceLock<(tokio::runtime::Runtime, JwtAuthenticator, String)> =
            std::sync::OnceLock::new();
        let (rt, auth, token) = STATE.get_or_init(|| {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let f = fixture();
            let auth = rt.block_on(jwt(JwksSource::Static(f.issuer.jwks())));
            let token = f.issuer.mint("ns1", "sa1", AUD, hour()).unwrap();
            (rt, auth, token)
        });
        let mut mangled = token.clone();
        mangled.truncate(cut.min(token.len()));
        mangled.push_str(&jwtish);
        for candidate in [s, jwtish.clone(), mangled] {
            let _ = rt.block_on(auth.authenticate(&bearer(&candidate)));
        }
    }
}

// ---- TokenReview ----

/// The requests a mocked API server got: method, path, JSON body.
type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A mocked API server: records each request body, answers `status` with `answer`.
fn mock_api(status: u16, answer: Value) -> (kube::Client, Seen) {
    use http_body_util::BodyExt;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let service = tower::service_fn(move |req: hyper::Request<kube::client::Body>| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&body).unwrap();
            log.lock().unwrap().push((method, path, body));
            let response = hyper::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(hyper::body::Bytes::from(
                    answer.to_string(),
                )))
                .unwrap();
            Ok::<_, Infallible>(response)
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn review_answer(status: Value) -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": {},
        "spec": {},
        "status": status,
    })
}

#[tokio::test]
async fn token_review_accepts_an_authenticated_service_account() {
    let (client, seen) = mock_api(
        201,
        review_answer(json!({
            "authenticated": true,
            "user": {"username": "system:serviceaccount:ns1:sa1", "uid": "u"},
            "audiences": ["istio-ca"],
        })),
    );
    let auth = TokenReviewAuthenticator::new(client, vec![AUD.into()], TD.into());
    let caller = auth
        .authenticate(&bearer("the-token"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        caller.identity.to_string(),
        "spiffe://cluster.local/ns/ns1/sa/sa1"
    );
    assert_eq!(caller.authenticator, "token-review");
    assert_eq!(caller.requester, "system:serviceaccount:ns1:sa1");

    assert_eq!(auth.authenticate(&CallContext::default()).await, Ok(None));
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "one review, none for a call without a token");
    let (method, path, body) = &seen[0];
    assert_eq!(method, "POST");
    assert_eq!(path, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(
        body["spec"],
        json!({"token": "the-token", "audiences": ["istio-ca"]})
    );
}

#[tokio::test]
async fn token_review_refusals_carry_the_reason() {
    let (client, _) = mock_api(
        201,
        review_answer(json!({"authenticated": false, "error": "token has been invalidated"})),
    );
    let auth = TokenReviewAuthenticator::new(client, vec![AUD.into()], TD.into());
    let reason = refused(auth.authenticate(&bearer("t")).await, "token-review");
    assert!(reason.contains("token has been invalidated"), "{reason}");

    let (client, _) = mock_api(
        201,
        review_answer(json!({"authenticated": true, "user": {"username": "kubernetes-admin"}})),
    );
    let auth = TokenReviewAuthenticator::new(client, vec![AUD.into()], TD.into());
    let reason = refused(auth.authenticate(&bearer("t")).await, "token-review");
    assert!(reason.contains("not a service account"), "{reason}");

    let (client, _) = mock_api(
        201,
        review_answer(json!({
            "authenticated": true,
            "user": {"username": "system:serviceaccount:ns1:sa1"},
            "audiences": ["api"],
        })),
    );
    let auth = TokenReviewAuthenticator::new(client, vec![AUD.into()], TD.into());
    let reason = refused(auth.authenticate(&bearer("t")).await, "token-review");
    assert!(reason.contains("wrong audience"), "{reason}");
}

#[tokio::test]
async fn token_review_api_failure_is_unavailable() {
    let (client, _) = mock_api(
        500,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "etcd is down", "reason": "InternalError", "code": 500,
        }),
    );
    let auth = TokenReviewAuthenticator::new(client, vec![AUD.into()], TD.into());
    match auth.authenticate(&bearer("t")).await {
        Err(AuthError::Unavailable {
            authenticator: "token-review",
            reason,
        }) => {
            assert!(reason.contains("etcd is down"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

// ---- client certificates ----

struct Ca {
    cert: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

fn ca(name: &str) -> Ca {
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        cert,
        issuer: rcgen::Issuer::new(params, key),
    }
}

fn leaf(
    ca: &Ca,
    uris: &[&str],
    serial: &[u8],
    expired: bool,
) -> rustls_pki_types::CertificateDer<'static> {
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.subject_alt_names = uris
        .iter()
        .map(|u| rcgen::SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(rcgen::SerialNumber::from_slice(serial));
    let now = time::OffsetDateTime::now_utc();
    if expired {
        params.not_before = now - time::Duration::days(2);
        params.not_after = now - time::Duration::days(1);
    } else {
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::hours(1);
    }
    let key = rcgen::KeyPair::generate().unwrap();
    params.signed_by(&key, &ca.issuer).unwrap().der().clone()
}

fn certs(chain: Vec<rustls_pki_types::CertificateDer<'static>>) -> CallContext {
    CallContext {
        peer_certs: chain,
        ..Default::default()
    }
}

#[tokio::test]
async fn client_certificates_from_this_ca_name_their_spiffe_id() {
    let root = ca("root");
    let auth = ClientCertAuthenticator::new(TD.into(), vec![root.cert.der().clone()]);
    assert_eq!(auth.authenticate(&CallContext::default()).await, Ok(None));

    let good = leaf(
        &root,
        &["spiffe://cluster.local/ns/ns1/sa/sa1"],
        &[0x1a, 0x2b, 0x3c],
        false,
    );
    let caller = auth
        .authenticate(&certs(vec![good]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        caller.identity.to_string(),
        "spiffe://cluster.local/ns/ns1/sa/sa1"
    );
    assert_eq!(caller.authenticator, "client-cert");
    assert_eq!(caller.requester, "1a2b3c");

    // Through an intermediate presented after the leaf.
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "intermediate");
    let key = rcgen::KeyPair::generate().unwrap();
    let inter_cert = params.signed_by(&key, &root.issuer).unwrap();
    let inter = Ca {
        cert: inter_cert,
        issuer: rcgen::Issuer::new(params, key),
    };
    let via = leaf(
        &inter,
        &["spiffe://cluster.local/ns/ns2/sa/sa2"],
        &[0x07],
        false,
    );
    let caller = auth
        .authenticate(&certs(vec![via.clone(), inter.cert.der().clone()]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        caller.identity.to_string(),
        "spiffe://cluster.local/ns/ns2/sa/sa2"
    );
    // Without the intermediate it does not chain.
    let reason = refused(auth.authenticate(&certs(vec![via])).await, "client-cert");
    assert!(reason.contains("not issued by this CA"), "{reason}");
}

#[tokio::test]
async fn client_certificates_are_refused_precisely() {
    let root = ca("root");
    let auth = ClientCertAuthenticator::new(TD.into(), vec![root.cert.der().clone()]);
    let check = async |cert, want: &str| {
        let reason = refused(auth.authenticate(&certs(vec![cert])).await, "client-cert");
        assert!(reason.contains(want), "want {want:?} in {reason:?}");
    };
    let other = ca("other");
    check(
        leaf(&other, &["spiffe://cluster.local/ns/a/sa/b"], &[1], false),
        "not issued by this CA",
    )
    .await;
    check(
        leaf(&root, &["spiffe://cluster.local/ns/a/sa/b"], &[2], true),
        "expired at",
    )
    .await;
    check(
        leaf(&root, &["https://example.com/x"], &[3], false),
        "no SPIFFE ID",
    )
    .await;
    check(leaf(&root, &[], &[4], false), "no SPIFFE ID").await;
    check(
        leaf(
            &root,
            &[
                "spiffe://cluster.local/ns/a/sa/b",
                "spiffe://cluster.local/ns/a/sa/c",
            ],
            &[5],
            false,
        ),
        "several SPIFFE IDs",
    )
    .await;
    check(
        leaf(&root, &["spiffe://other.domain/ns/a/sa/b"], &[6], false),
        "trust domain",
    )
    .await;
    check(
        leaf(&root, &["spiffe://cluster.local/foo"], &[7], false),
        "not an Istio identity",
    )
    .await;

    let no_roots = ClientCertAuthenticator::new(TD.into(), vec![]);
    let good = leaf(&root, &["spiffe://cluster.local/ns/a/sa/b"], &[8], false);
    let reason = refused(
        no_roots.authenticate(&certs(vec![good])).await,
        "client-cert",
    );
    assert!(reason.contains("no usable CA root"), "{reason}");
}

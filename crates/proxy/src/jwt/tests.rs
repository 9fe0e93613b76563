use std::collections::HashMap;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement,
    JwtRequirementOrList, RemoteJwks, RequirementRule, jwt_provider, jwt_requirement,
    requirement_rule,
};
use envoy_types::pb::google::protobuf::Empty;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use prost::Message;
use serde_json::{Value, json};

use super::*;

const SECRET: &[u8] = b"mizzen-jwt-unit-test-secret";
const ISSUER: &str = "https://issuer.test";

fn b64url(b: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, x| (acc << 8) | u32::from(*x)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn hs_jwks() -> String {
    json!({"keys": [{"kty": "oct", "alg": "HS256", "kid": "k1", "k": b64url(SECRET)}]}).to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs_token(claims: Value) -> String {
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    encode(&h, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn provider(jwks: &str) -> JwtProvider {
    JwtProvider {
        issuer: ISSUER.into(),
        audiences: vec!["api.test".into()],
        payload_in_metadata: "payload".into(),
        jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(data_source::Specifier::InlineString(jwks.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// Istio's shape: one rule on `/`, any provider or no token.
fn config(providers: Vec<(&str, JwtProvider)>) -> JwtAuthentication {
    let mut any: Vec<JwtRequirement> = providers
        .iter()
        .map(|(n, _)| JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::ProviderName(n.to_string())),
        })
        .collect();
    any.push(JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
    });
    JwtAuthentication {
        providers: providers
            .into_iter()
            .map(|(n, p)| (n.to_string(), p))
            .collect::<HashMap<_, _>>(),
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(requirement_rule::RequirementType::Requires(
                JwtRequirement {
                    requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                        JwtRequirementOrList { requirements: any },
                    )),
                },
            )),
        }],
        bypass_cors_preflight: true,
        ..Default::default()
    }
}

fn compile(c: &JwtAuthentication) -> JwtAuthn {
    filter(&c.encode_to_vec()).unwrap()
}

fn check(f: &JwtAuthn, path: &str, headers: &[(&str, &str)]) -> Outcome {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    f.check(&RequestView {
        authority: "example.com",
        method: "GET",
        path_and_query: path,
        scheme: "http",
        headers: &map,
        random: 0,
    })
}

fn denied(o: Outcome) -> Status {
    match o {
        Outcome::Denied(s) => s,
        other => panic!("not denied: {other:?}"),
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn a_valid_token_passes_and_lands_in_metadata() {
    let f = compile(&config(vec![("origins-0", provider(&hs_jwks()))]));
    let t =
        hs_token(json!({"iss": ISSUER, "sub": "user-1", "aud": "api.test", "exp": now() + 600}));
    let Outcome::Allowed(changes) = check(&f, "/x", &[("authorization", &bearer(&t))]) else {
        panic!("refused a valid token");
    };
    let sub = changes
        .metadata
        .get(JWT_FILTER, &["payload".into(), "sub".into()])
        .cloned();
    assert_eq!(sub, Some(json!("user-1")));
    // `forward` is false by default: the header goes.
    assert_eq!(changes.remove, vec![http::header::AUTHORIZATION]);
    assert_eq!(changes.verified, 1);
}

#[test]
fn a_missing_token_is_allowed_a_bad_one_refused() {
    let f = compile(&config(vec![("origins-0", provider(&hs_jwks()))]));
    assert!(matches!(check(&f, "/x", &[]), Outcome::Allowed(_)));
    // Another scheme is no token.
    assert!(matches!(
        check(&f, "/x", &[("authorization", "Basic abc")]),
        Outcome::Allowed(_)
    ));
    let cases = [
        ("abc", Status::BadFormat),
        ("not.a.token", Status::HeaderBadJson),
    ];
    for (t, want) in cases {
        assert_eq!(
            denied(check(&f, "/x", &[("authorization", &bearer(t))])),
            want
        );
    }
    // The default locations include the `access_token` parameter.
    assert_eq!(
        denied(check(&f, "/x?access_token=garbage", &[])),
        Status::BadFormat
    );
    let good = hs_token(json!({"iss": ISSUER, "aud": "api.test"}));
    let mut forged = good.clone();
    forged.pop();
    forged.push(if good.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(
        denied(check(&f, "/x", &[("authorization", &bearer(&forged))])),
        Status::VerificationFail
    );
    assert_eq!(Status::VerificationFail.message(), "Jwt verification fails");
}

#[test]
fn issuer_times_and_audiences_are_checked() {
    let f = compile(&config(vec![("origins-0", provider(&hs_jwks()))]));
    let with = |claims: Value| {
        denied(check(
            &f,
            "/",
            &[("authorization", &bearer(&hs_token(claims)))],
        ))
    };
    assert_eq!(
        with(json!({"iss": "https://other.test", "aud": "api.test"})),
        Status::UnknownIssuer
    );
    assert_eq!(
        with(json!({"iss": ISSUER, "aud": "api.test", "exp": now() - 120})),
        Status::Expired
    );
    assert_eq!(
        with(json!({"iss": ISSUER, "aud": "api.test", "nbf": now() + 120})),
        Status::NotYetValid
    );
    assert_eq!(
        with(json!({"iss": ISSUER, "aud": ["other"]})),
        Status::AudienceNotAllowed
    );
    // Within the 60 s clock skew; audiences compare without scheme and slash.
    let t = hs_token(json!({"iss": ISSUER, "aud": ["x", "https://api.test/"], "exp": now() - 30}));
    assert!(matches!(
        check(&f, "/", &[("authorization", &bearer(&t))]),
        Outcome::Allowed(_)
    ));
}

#[test]
fn es256_keys_are_picked_by_kid() {
    let key = rcgen::KeyPair::generate().unwrap();
    let raw = key.public_key_raw();
    let (x, y) = (b64url(&raw[1..33]), b64url(&raw[33..65]));
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "alg": "ES256", "kid": "ec1", "x": x, "y": y},
        {"kty": "oct", "alg": "HS256", "kid": "k1", "k": b64url(SECRET)},
    ]})
    .to_string();
    let f = compile(&config(vec![("origins-0", provider(&jwks))]));
    let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let sign = |kid: &str| {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        encode(&h, &json!({"iss": ISSUER, "aud": "api.test"}), &enc).unwrap()
    };
    assert!(matches!(
        check(&f, "/", &[("authorization", &bearer(&sign("ec1")))]),
        Outcome::Allowed(_)
    ));
    assert_eq!(
        denied(check(&f, "/", &[("authorization", &bearer(&sign("nope")))])),
        Status::KidAlgMismatch
    );
}

#[test]
fn configured_locations_claims_and_forwarding() {
    let mut p = provider(&hs_jwks());
    p.from_headers = vec![JwtHeader {
        name: "x-token".into(),
        value_prefix: "Token ".into(),
    }];
    p.from_params = vec!["jwt".into()];
    p.forward = true;
    p.claim_to_headers = vec![JwtClaimToHeader {
        header_name: "x-jwt-sub".into(),
        claim_name: "sub".into(),
        ..Default::default()
    }];
    let f = compile(&config(vec![("origins-0", p)]));
    let t = hs_token(json!({"iss": ISSUER, "sub": "user-9", "aud": "api.test"}));
    // Authorization is not a location any more.
    assert!(matches!(
        check(&f, "/", &[("authorization", "Bearer garbage")]),
        Outcome::Allowed(_)
    ));
    let Outcome::Allowed(c) = check(&f, "/", &[("x-token", &format!("Token {t}"))]) else {
        panic!("header token refused");
    };
    assert!(c.remove.is_empty(), "forward: true keeps the token");
    assert_eq!(c.set[0].0.as_str(), "x-jwt-sub");
    assert_eq!(c.set[0].1, "user-9");
    assert!(matches!(
        check(&f, &format!("/?jwt={t}"), &[]),
        Outcome::Allowed(_)
    ));
}

#[test]
fn unsupported_fields_are_refused() {
    let mut p = provider(&hs_jwks());
    p.jwks_source_specifier = Some(jwt_provider::JwksSourceSpecifier::RemoteJwks(
        RemoteJwks::default(),
    ));
    p.require_expiration = true;
    let Err(e) = filter(&config(vec![("origins-0", p)]).encode_to_vec()) else {
        panic!("accepted remote_jwks");
    };
    assert!(
        e.iter()
            .any(|e| e.starts_with(r#"providers["origins-0"].remote_jwks: not supported"#)),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|e| e == r#"providers["origins-0"].require_expiration: not supported"#),
        "{e:?}"
    );
}

#[test]
fn an_unreadable_jwks_fails_tokens_not_config() {
    let f = compile(&config(vec![("origins-0", provider("not json"))]));
    let t = hs_token(json!({"iss": ISSUER, "aud": "api.test"}));
    assert_eq!(
        denied(check(&f, "/", &[("authorization", &bearer(&t))])),
        Status::JwksFetchFail
    );
    assert!(matches!(check(&f, "/", &[]), Outcome::Allowed(_)));
}

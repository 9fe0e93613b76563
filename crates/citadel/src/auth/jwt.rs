//! Bearer JWTs checked against a JWKS: Kubernetes service-account tokens, an OIDC
//! issuer's tokens, and `mizzen token create` tokens.
//!
//! A token goes: size limit (16 KiB, before any parsing) → header (`alg`, `kid`) →
//! the key: by `kid` in the current set, refreshing the set once if the kid is
//! unknown, or every key of the right type when the token has no kid → signature
//! (public-key algorithms only; a key that states its `alg` is used only for it) →
//! `iss` → `aud` → `exp`/`nbf` with [`LEEWAY`] → `sub` must be
//! `system:serviceaccount:<ns>:<sa>`, which becomes the identity
//! `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`. Each refusal says which step failed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::spiffe::Identity;
use futures::future::BoxFuture;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::jwks::{JwksError, JwksSource, KeyStore};
use super::{AuthError, BearerAuthenticator, Caller};

/// The authenticator's name.
pub const NAME: &str = "jwt";
/// The audience Istio's CA expects by default.
pub const DEFAULT_AUDIENCE: &str = "istio-ca";
/// The largest token looked at.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Clock skew allowed on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);
/// The subject prefix of Kubernetes service-account tokens.
pub const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Verifies bearer JWTs against a JWKS.
#[derive(Debug, Clone)]
pub struct JwtAuthenticator {
    keys: KeyStore,
    issuer: String,
    audience: String,
    trust_domain: String,
}

/// The claims looked at; anything else is ignored.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn into_vec(self) -> Vec<String> {
        match self {
            Audience::One(a) => vec![a],
            Audience::Many(v) => v,
        }
    }
}

impl JwtAuthenticator {
    /// An authenticator accepting tokens from `issuer` for `audience`, signed by a
    /// key of `source`, naming identities in `trust_domain`. Fails only for a JWKS
    /// file that is missing or invalid, or a URL that is not one.
    pub async fn new(
        source: JwksSource,
        issuer: String,
        audience: String,
        trust_domain: String,
    ) -> Result<JwtAuthenticator, JwksError> {
        Ok(JwtAuthenticator {
            keys: KeyStore::new(source).await?,
            issuer,
            audience,
            trust_domain,
        })
    }

    /// Verifies `token` and names its subject.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let refuse = |reason: String| AuthError::Refused {
            authenticator: NAME,
            reason,
        };
        check_token_size(NAME, token)?;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| refuse(format!("not a JWT (want header.payload.signature): {e}")))?;
        let alg = header.alg;
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(refuse(format!(
                "algorithm {alg:?} is not accepted: tokens must be signed with a public-key algorithm"
            )));
        }
        let unavailable = |reason: String| AuthError::Unavailable {
            authenticator: NAME,
            reason,
        };
        let mut set = self.keys.current().await.map_err(unavailable)?;
        let candidates: Vec<Jwk> = match &header.kid {
            Some(kid) => {
                if set.find(kid).is_none() {
                    set = self
                        .keys
                        .refresh_for_unknown_kid()
                        .await
                        .map_err(unavailable)?;
                }
                let jwk = set.find(kid).ok_or_else(|| {
                    refuse(format!(
                        "unknown key id {kid:?} (the JWKS has {})",
                        kids(&set)
                    ))
                })?;
                if !accepts(jwk, alg) {
                    return Err(refuse(format!(
                        "key {kid:?} is not for algorithm {alg:?} (it is {})",
                        describe(jwk)
                    )));
                }
                vec![jwk.clone()]
            }
            None => {
                let usable: Vec<Jwk> = set
                    .keys
                    .iter()
                    .filter(|k| accepts(k, alg))
                    .cloned()
                    .collect();
                if usable.is_empty() {
                    return Err(refuse(format!(
                        "the token has no key id and no key in the JWKS is for algorithm {alg:?}"
                    )));
                }
                usable
            }
        };

        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let mut last = String::from("bad signature");
        let mut claims = None;
        for jwk in &candidates {
            let key = match DecodingKey::from_jwk(jwk) {
                Ok(key) => key,
                Err(e) => {
                    last = format!("key {} in the JWKS is unusable: {e}", describe_kid(jwk));
                    continue;
                }
            };
            match jsonwebtoken::decode::<Claims>(token, &key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind;
                    last = match e.kind() {
                        ErrorKind::InvalidSignature => match &header.kid {
                            Some(kid) => format!("bad signature: not signed by key {kid:?}"),
                            None => "bad signature: no key in the JWKS verifies it".to_string(),
                        },
                        ErrorKind::InvalidEcdsaKey
                        | ErrorKind::InvalidRsaKey(_)
                        | ErrorKind::InvalidKeyFormat => {
                            format!("key {} in the JWKS is unusable: {e}", describe_kid(jwk))
                        }
                        _ => return Err(refuse(format!("malformed token: {e}"))),
                    };
                }
            }
        }
        let claims = claims.ok_or_else(|| refuse(last))?;
        self.check_claims(claims).map_err(refuse)
    }

    fn check_claims(&self, claims: Claims) -> Result<Caller, String> {
        match claims.iss {
            None => return Err(format!("no issuer (iss); want {:?}", self.issuer)),
            Some(iss) if iss != self.issuer => {
                return Err(format!(
                    "wrong issuer (got {iss:?}, want {:?})",
                    self.issuer
                ));
            }
            Some(_) => {}
        }
        let aud = claims.aud.map(Audience::into_vec).unwrap_or_default();
        if !aud.contains(&self.audience) {
            return Err(format!(
                "wrong audience (got {aud:?}, want {:?})",
                self.audience
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let leeway = LEEWAY.as_secs_f64();
        match claims.exp {
            None => return Err("no expiry (exp): tokens must expire".into()),
            Some(exp) if exp + leeway < now => return Err(format!("expired at {}", at(exp))),
            Some(_) => {}
        }
        if let Some(nbf) = claims.nbf.filter(|nbf| *nbf > now + leeway) {
            return Err(format!("not valid before {}", at(nbf)));
        }
        service_account_caller(
            NAME,
            "subject",
            claims.sub.unwrap_or_default(),
            &self.trust_domain,
        )
    }
}

impl BearerAuthenticator for JwtAuthenticator {
    const NAME: &'static str = NAME;

    fn verify_token<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(self.verify(token))
    }
}

/// Refuses a bearer token larger than [`MAX_TOKEN_BYTES`] before any parsing.
pub(crate) fn check_token_size(authenticator: &'static str, token: &str) -> Result<(), AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Refused {
            authenticator,
            reason: format!(
                "token of {} bytes is larger than the limit of {MAX_TOKEN_BYTES}",
                token.len()
            ),
        });
    }
    Ok(())
}

/// The caller a Kubernetes service-account name (`system:serviceaccount:NS:SA`)
/// stands for, in `trust_domain`; `what` says where the name came from (the
/// token's "subject", the review's "user") for the refusal.
pub(crate) fn service_account_caller(
    authenticator: &'static str,
    what: &str,
    name: String,
    trust_domain: &str,
) -> Result<Caller, String> {
    let identity = service_account(&name)
        .and_then(|(ns, sa)| Identity::new(trust_domain, ns, sa).map_err(|e| e.to_string()))
        .map_err(|why| {
            format!(
                "{what} {name:?} is not a service account (want {SERVICE_ACCOUNT_PREFIX}<namespace>:<service-account>): {why}"
            )
        })?;
    Ok(Caller {
        identity,
        authenticator,
        requester: name,
    })
}

/// Splits `system:serviceaccount:NS:SA` into its namespace and name.
pub(crate) fn service_account(subject: &str) -> Result<(&str, &str), String> {
    let rest = subject
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .ok_or_else(|| format!("it does not start with {SERVICE_ACCOUNT_PREFIX}"))?;
    let (ns, sa) = rest
        .split_once(':')
        .ok_or_else(|| "it has no <namespace>:<service-account>".to_string())?;
    if sa.contains(':') {
        return Err("too many ':'".into());
    }
    Ok((ns, sa))
}

/// Whether `jwk` may verify a token signed with `alg`.
fn accepts(jwk: &Jwk, alg: Algorithm) -> bool {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return false;
    }
    if let Some(stated) = jwk.common.key_algorithm
        && stated.to_string() != format!("{alg:?}")
    {
        return false;
    }
    use Algorithm::*;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::EllipticCurve(ec) => {
            matches!(
                (&ec.curve, alg),
                (EllipticCurve::P256, ES256) | (EllipticCurve::P384, ES384)
            )
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            matches!((&okp.curve, alg), (EllipticCurve::Ed25519, EdDSA))
        }
        // Symmetric keys are never accepted: anyone who can read the JWKS could sign.
        _ => false,
    }
}

fn describe(jwk: &Jwk) -> String {
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => "an RSA key".to_string(),
        AlgorithmParameters::EllipticCurve(ec) => format!("an EC {:?} key", ec.curve),
        AlgorithmParameters::OctetKeyPair(okp) => format!("an OKP {:?} key", okp.curve),
        AlgorithmParameters::OctetKey(_) => "a symmetric key, never accepted".to_string(),
        _ => "a key of an unknown type".to_string(),
    };
    match jwk.common.key_algorithm {
        Some(alg) => format!("{kind} for {alg}"),
        None => kind,
    }
}

fn describe_kid(jwk: &Jwk) -> String {
    format!("{:?}", jwk.common.key_id.as_deref().unwrap_or("(no kid)"))
}

fn kids(set: &JwkSet) -> String {
    let kids: Vec<&str> = set
        .keys
        .iter()
        .map(|k| k.common.key_id.as_deref().unwrap_or("(no kid)"))
        .collect();
    if kids.is_empty() {
        "no keys".to_string()
    } else {
        format!("{kids:?}")
    }
}

/// A Unix time as RFC 3339 (UTC).
fn at(secs: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs.floor() as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{secs} (Unix time)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_subjects_split() {
        assert_eq!(
            service_account("system:serviceaccount:ns:sa"),
            Ok(("ns", "sa"))
        );
        assert!(service_account("system:serviceaccount:ns").is_err());
        assert!(service_account("system:serviceaccount:a:b:c").is_err());
        assert!(service_account("user@example.com").is_err());
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(at(0.0), "1970-01-01T00:00:00Z");
    }
}

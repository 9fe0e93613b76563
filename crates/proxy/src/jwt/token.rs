//! One JWT checked the way Envoy's `jwt_verify_lib` and `jwt_authn`
//! authenticator check it, in their order: the three base64url sections and
//! their JSON, the header's `alg`/`kid`, the payload's registered claims'
//! types; then the issuer, `nbf`/`exp` with the clock skew, the audiences,
//! and the signature against a JWKS key whose `kid` and `alg` fit. Each
//! failure is a [`Status`] whose text is Envoy's response body.

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::Jwk;
use serde_json::{Map, Value};

/// Why a token was refused (Envoy's `jwt_verify::Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No token where the provider looks.
    Missed,
    /// Not three dot-separated sections.
    BadFormat,
    /// Header not base64url.
    HeaderBadBase64,
    /// Header not a JSON object.
    HeaderBadJson,
    /// `alg` missing or not a string.
    HeaderBadAlg,
    /// `alg` not implemented.
    HeaderNotImplementedAlg,
    /// `kid` not a string.
    HeaderBadKid,
    /// Payload not base64url.
    PayloadBadBase64,
    /// Payload not a JSON object.
    PayloadBadJson,
    /// A registered claim has the wrong type (`iss`, `sub`, `aud`, times).
    PayloadBadClaim(&'static str),
    /// Signature not base64url.
    SignatureBadBase64,
    /// The issuer is not the provider's.
    UnknownIssuer,
    /// `nbf` in the future.
    NotYetValid,
    /// `exp` in the past.
    Expired,
    /// No audience of the token is allowed.
    AudienceNotAllowed,
    /// The key set could not be read.
    JwksFetchFail,
    /// No key fits the token's `kid` and `alg`.
    KidAlgMismatch,
    /// The signature does not verify.
    VerificationFail,
}

impl Status {
    /// Envoy's text for the status (the 401 body).
    pub fn message(self) -> &'static str {
        match self {
            Status::Missed => "Jwt is missing",
            Status::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Status::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            Status::HeaderBadJson => "Jwt header is an invalid JSON",
            Status::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Status::HeaderNotImplementedAlg => "Jwt header [alg] is not supported",
            Status::HeaderBadKid => "Jwt header [kid] field is not a string",
            Status::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            Status::PayloadBadJson => "Jwt payload is an invalid JSON",
            Status::PayloadBadClaim("iss") => "Jwt payload [iss] field is not a string",
            Status::PayloadBadClaim("sub") => "Jwt payload [sub] field is not a string",
            Status::PayloadBadClaim("aud") => {
                "Jwt payload [aud] field is not a string or string list"
            }
            Status::PayloadBadClaim("iat") => "Jwt payload [iat] field is not an integer",
            Status::PayloadBadClaim("nbf") => "Jwt payload [nbf] field is not an integer",
            Status::PayloadBadClaim(_) => "Jwt payload [exp] field is not an integer",
            Status::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            Status::UnknownIssuer => "Jwt issuer is not configured",
            Status::NotYetValid => "Jwt not yet valid",
            Status::Expired => "Jwt is expired",
            Status::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Status::JwksFetchFail => "Jwks remote fetch is failed",
            Status::KidAlgMismatch => "Jwks doesn't have key to match kid or alg from Jwt",
            Status::VerificationFail => "Jwt verification fails",
        }
    }
}

/// A parsed (not yet verified) token.
#[derive(Debug)]
pub struct Jwt<'t> {
    alg: Algorithm,
    alg_name: String,
    kid: Option<String>,
    /// The payload.
    pub payload: Map<String, Value>,
    /// The payload section as sent (base64url).
    pub payload_b64: &'t str,
    signed: &'t str,
    signature: &'t str,
    iss: String,
    audiences: Vec<String>,
    exp: Option<u64>,
    nbf: Option<u64>,
}

/// A key of a provider's JWKS.
#[derive(Debug)]
pub struct Key {
    kid: Option<String>,
    alg: Option<String>,
    kty: String,
    key: jsonwebtoken::DecodingKey,
}

/// Reads a JWKS (`{"keys": [...]}`); `None` when it or one of its keys is
/// invalid (Envoy then has no key set for the provider).
pub fn keys(json: &str) -> Option<Vec<Key>> {
    let v: Value = serde_json::from_str(json).ok()?;
    let mut out = Vec::new();
    for k in v.get("keys")?.as_array()? {
        let jwk: Jwk = serde_json::from_value(k.clone()).ok()?;
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).ok()?;
        let text = |f: &str| k.get(f).and_then(Value::as_str).map(str::to_string);
        out.push(Key {
            kid: text("kid"),
            alg: text("alg"),
            kty: text("kty").unwrap_or_default(),
            key,
        });
    }
    (!out.is_empty()).then_some(out)
}

fn algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

fn object(section: &str, bad_b64: Status, bad_json: Status) -> Result<Map<String, Value>, Status> {
    let bytes = b64(section).ok_or(bad_b64)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad_json),
    }
}

fn time(payload: &Map<String, Value>, claim: &'static str) -> Result<Option<u64>, Status> {
    match payload.get(claim) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(Status::PayloadBadClaim(claim)),
    }
}

impl<'t> Jwt<'t> {
    /// Parses `token`.
    pub fn parse(token: &'t str) -> Result<Jwt<'t>, Status> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Status::BadFormat);
        };
        let header = object(h, Status::HeaderBadBase64, Status::HeaderBadJson)?;
        let alg_name = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or(Status::HeaderBadAlg)?
            .to_string();
        let alg = algorithm(&alg_name).ok_or(Status::HeaderNotImplementedAlg)?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.clone()),
            Some(_) => return Err(Status::HeaderBadKid),
        };
        let payload = object(p, Status::PayloadBadBase64, Status::PayloadBadJson)?;
        let text = |claim: &'static str| match payload.get(claim) {
            None => Ok(String::new()),
            Some(Value::String(v)) => Ok(v.clone()),
            Some(_) => Err(Status::PayloadBadClaim(claim)),
        };
        let iss = text("iss")?;
        text("sub")?;
        let audiences = match payload.get("aud") {
            None => Vec::new(),
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|a| a.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(Status::PayloadBadClaim("aud"))?,
            Some(_) => return Err(Status::PayloadBadClaim("aud")),
        };
        time(&payload, "iat")?;
        let nbf = time(&payload, "nbf")?;
        let exp = time(&payload, "exp")?;
        b64(s).ok_or(Status::SignatureBadBase64)?;
        Ok(Jwt {
            alg,
            alg_name,
            kid,
            payload,
            payload_b64: p,
            signed: &token[..h.len() + 1 + p.len()],
            signature: s,
            iss,
            audiences,
            exp,
            nbf,
        })
    }

    /// The `iss` claim (empty when absent).
    pub fn issuer(&self) -> &str {
        &self.iss
    }

    /// Checks `nbf` and `exp` against `now` (Unix seconds) with `skew`.
    pub fn check_time(&self, now: u64, skew: u64) -> Result<(), Status> {
        if self.nbf.is_some_and(|nbf| now.saturating_add(skew) < nbf) {
            return Err(Status::NotYetValid);
        }
        if self.exp.is_some_and(|exp| now > exp.saturating_add(skew)) {
            return Err(Status::Expired);
        }
        Ok(())
    }

    /// Whether an audience of the token is in `allowed` (normalized: no
    /// `http://`/`https://` prefix nor trailing `/`); any when empty.
    pub fn audience_allowed(&self, allowed: &[String]) -> bool {
        allowed.is_empty()
            || self
                .audiences
                .iter()
                .any(|a| allowed.iter().any(|x| *x == normalize_audience(a)))
    }

    /// Verifies the signature with the keys whose `kid` and `alg` fit.
    pub fn verify(&self, keys: &[Key]) -> Result<(), Status> {
        let mut fitting = false;
        for k in keys {
            if let (Some(want), Some(have)) = (&self.kid, &k.kid)
                && want != have
            {
                continue;
            }
            if k.alg.as_ref().is_some_and(|a| *a != self.alg_name) {
                continue;
            }
            fitting = true;
            let family = match self.alg_name.get(..2) {
                Some("HS") => "oct",
                Some("RS" | "PS") => "RSA",
                Some("ES") => "EC",
                _ => "OKP",
            };
            if k.kty != family {
                continue;
            }
            if jsonwebtoken::crypto::verify(
                self.signature,
                self.signed.as_bytes(),
                &k.key,
                self.alg,
            )
            .unwrap_or(false)
            {
                return Ok(());
            }
        }
        Err(if fitting {
            Status::VerificationFail
        } else {
            Status::KidAlgMismatch
        })
    }
}

/// Decodes base64url (padding optional, as absl's `WebSafeBase64Unescape`).
pub fn b64(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if s.len() % 4 == 1 {
        return None;
    }
    Some(out)
}

/// Encodes base64url with padding (`pad_forward_payload_header`).
pub fn pad(b64url: &str) -> String {
    let mut s = b64url.to_string();
    while !s.len().is_multiple_of(4) {
        s.push('=');
    }
    s
}

/// An audience as Envoy compares it.
pub fn normalize_audience(a: &str) -> String {
    let a = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"))
        .unwrap_or(a);
    a.strip_suffix('/').unwrap_or(a).to_string()
}

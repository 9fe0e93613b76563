//! The local-mode token issuer: service-account tokens without Kubernetes.
//!
//! Outside a cluster nobody mints projected service-account tokens, so Mizzen does:
//! an ECDSA P-256 key kept in `<key-dir>/issuer-key.pem` signs ES256 JWTs shaped
//! like Kubernetes' (`sub` = `system:serviceaccount:NS:SA`, a `kubernetes.io`
//! claim), and its public half is published as `<key-dir>/jwks.json`. Citadel's
//! [`crate::auth::jwt::JwtAuthenticator`] verifies them against that file, exactly
//! as it verifies a cluster's tokens against the cluster's JWKS.
//!
//! Citadel calls [`LocalIssuer::load_or_create`] at start and `mizzen token create`
//! calls it too, so whichever runs first creates the key and both agree on the same
//! files afterwards. An existing key file is never overwritten.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The `iss` of every token this issuer mints.
pub const ISSUER: &str = "mizzen-local";

/// The private key's file name inside the key directory.
pub const KEY_FILE: &str = "issuer-key.pem";

/// The public JWKS's file name inside the key directory.
pub const JWKS_FILE: &str = "jwks.json";

/// Why the issuer could not be loaded or could not mint a token.
#[derive(Debug, thiserror::Error)]
pub enum LocalIssuerError {
    /// A file or directory could not be read or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done (e.g. "cannot read issuer key").
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The key file exists but is not a usable ECDSA P-256 key.
    #[error(
        "issuer key {path} is not a PKCS#8 ECDSA P-256 key in PEM ({reason}); it was left untouched: fix or remove it to have a new one created"
    )]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key directory holds no issuer key (see [`LocalIssuer::load`]).
    #[error(
        "no issuer key in {0}: start citadel with --key-dir {0}, or run `mizzen token create` with the same --key-dir, to create one"
    )]
    Missing(PathBuf),
    /// The namespace or service account is not a valid Kubernetes name.
    #[error("{0}")]
    Name(#[from] common::spiffe::IdentityError),
    /// The token lifetime is zero or absurdly long.
    #[error("token lifetime {0:?} must be between 1 second and 1 year")]
    Ttl(Duration),
    /// Signing failed (should not happen with a key that loaded).
    #[error("cannot sign the token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// An ES256 token issuer backed by a key in a directory.
pub struct LocalIssuer {
    key: EncodingKey,
    jwk: Jwk,
    kid: String,
    dir: PathBuf,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("dir", &self.dir)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// The claims of a minted token, shaped like a projected Kubernetes token.
#[derive(Serialize)]
struct Claims<'a> {
    iss: &'static str,
    sub: String,
    aud: [&'a str; 1],
    iat: u64,
    nbf: u64,
    exp: u64,
    #[serde(rename = "kubernetes.io")]
    kubernetes: KubernetesClaim<'a>,
}

#[derive(Serialize)]
struct KubernetesClaim<'a> {
    namespace: &'a str,
    serviceaccount: Named<'a>,
}

#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
}

impl LocalIssuer {
    /// Loads the key from `<key_dir>/issuer-key.pem`, creating the directory (0700)
    /// and the key (0600) if missing, and (re)writes `<key_dir>/jwks.json`.
    pub fn load_or_create(key_dir: &Path) -> Result<LocalIssuer, LocalIssuerError> {
        let path = key_dir.join(KEY_FILE);
        if !path.exists() {
            create_dir(key_dir)?;
            create_key(&path)?;
        }
        Self::load(key_dir)
    }

    /// Loads an existing key (never creates one) and (re)writes
    /// `<key_dir>/jwks.json`.
    pub fn load(key_dir: &Path) -> Result<LocalIssuer, LocalIssuerError> {
        let path = key_dir.join(KEY_FILE);
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LocalIssuerError::Missing(key_dir.to_path_buf()));
            }
            Err(source) => {
                return Err(LocalIssuerError::Io {
                    what: "cannot read issuer key",
                    path,
                    source,
                });
            }
        };
        let bad = |reason: String| LocalIssuerError::BadKey {
            path: path.clone(),
            reason,
        };
        let text = std::str::from_utf8(&pem).map_err(|_| bad("not text".into()))?;
        let pair = rcgen::KeyPair::from_pem(text).map_err(|e| bad(e.to_string()))?;
        if pair.algorithm() != &rcgen::PKCS_ECDSA_P256_SHA256 {
            return Err(bad("not an ECDSA P-256 key".into()));
        }
        let key = EncodingKey::from_ec_pem(&pem).map_err(|e| bad(e.to_string()))?;
        let mut jwk =
            Jwk::from_encoding_key(&key, Algorithm::ES256).map_err(|e| bad(e.to_string()))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| bad(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        let issuer = LocalIssuer {
            key,
            jwk,
            kid,
            dir: key_dir.to_path_buf(),
        };
        issuer.write_jwks()?;
        Ok(issuer)
    }

    /// The key id (`kid`): the base64url SHA-256 JWK thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The path of the published JWKS, `<key_dir>/jwks.json`.
    pub fn jwks_path(&self) -> PathBuf {
        self.dir.join(JWKS_FILE)
    }

    /// The public key as a JWK set (one key).
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.jwk.clone()],
        }
    }

    /// Mints an ES256 token for `system:serviceaccount:<namespace>:<service_account>`
    /// with audience `audience`, valid from now for `ttl`.
    pub fn mint(
        &self,
        namespace: &str,
        service_account: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<String, LocalIssuerError> {
        common::spiffe::Identity::new(
            common::spiffe::DEFAULT_TRUST_DOMAIN,
            namespace,
            service_account,
        )?;
        if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(366 * 24 * 3600) {
            return Err(LocalIssuerError::Ttl(ttl));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iss: ISSUER,
            sub: format!("system:serviceaccount:{namespace}:{service_account}"),
            aud: [audience],
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            kubernetes: KubernetesClaim {
                namespace,
                serviceaccount: Named {
                    name: service_account,
                },
            },
        };
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.key).map_err(LocalIssuerError::Sign)
    }

    /// Writes `jwks.json` atomically (temporary file, then rename), only when its
    /// content changes, so readers watching its mtime see one change per rotation.
    fn write_jwks(&self) -> Result<(), LocalIssuerError> {
        let path = self.jwks_path();
        let mut body = serde_json::to_vec_pretty(&self.jwks()).expect("a JWK set serializes");
        body.push(b'\n');
        if std::fs::read(&path).is_ok_and(|old| old == body) {
            return Ok(());
        }
        crate::files::write_atomic(&path, &body, 0o644).map_err(|source| LocalIssuerError::Io {
            what: "cannot write JWKS",
            path: path.clone(),
            source,
        })
    }
}

fn create_dir(dir: &Path) -> Result<(), LocalIssuerError> {
    crate::files::private_dir(dir).map_err(|source| LocalIssuerError::Io {
        what: "cannot create key directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// Creates the key file with mode 0600; if another process created it first, that
/// key is kept.
fn create_key(path: &Path) -> Result<(), LocalIssuerError> {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| {
        LocalIssuerError::BadKey {
            path: path.to_path_buf(),
            reason: format!("cannot generate: {e}"),
        }
    })?;
    crate::files::create_new(path, pair.serialize_pem().as_bytes(), 0o600)
        .map(|_| ())
        .map_err(|source| LocalIssuerError::Io {
            what: "cannot create issuer key",
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_and_reloads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = dir.path().join("a/b");
        let first = LocalIssuer::load_or_create(&key_dir).unwrap();
        let second = LocalIssuer::load_or_create(&key_dir).unwrap();
        assert_eq!(first.kid(), second.kid());
        assert_eq!(first.jwks(), second.jwks());
        let on_disk: JwkSet =
            serde_json::from_slice(&std::fs::read(key_dir.join(JWKS_FILE)).unwrap()).unwrap();
        assert_eq!(on_disk, first.jwks());
        assert_eq!(on_disk.keys[0].common.key_id.as_deref(), Some(first.kid()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&key_dir.join(KEY_FILE)), 0o600);
            assert_eq!(mode(&key_dir), 0o700);
        }
    }

    #[test]
    fn a_bad_key_file_is_an_error_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(KEY_FILE), "not a key").unwrap();
        let err = LocalIssuer::load_or_create(dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains(KEY_FILE), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap(),
            "not a key"
        );
    }

    #[test]
    fn load_without_a_key_says_how_to_make_one() {
        let dir = tempfile::tempdir().unwrap();
        let err = LocalIssuer::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("mizzen token create"), "{err}");
        assert!(!dir.path().join(KEY_FILE).exists());
    }

    #[test]
    fn mint_checks_names_and_shapes_claims_like_kubernetes() {
        let dir = tempfile::tempdir().unwrap();
        let issuer = LocalIssuer::load_or_create(dir.path()).unwrap();
        assert!(
            issuer
                .mint("Bad_NS", "sa", "istio-ca", Duration::from_secs(60))
                .is_err()
        );
        assert!(
            issuer
                .mint("ns", "", "istio-ca", Duration::from_secs(60))
                .is_err()
        );
        let token = issuer
            .mint("ns", "sa", "istio-ca", Duration::from_secs(60))
            .unwrap();
        let claims: serde_json::Value =
            jsonwebtoken::dangerous::insecure_decode_claims(&token).unwrap();
        assert_eq!(claims["iss"], ISSUER);
        assert_eq!(claims["sub"], "system:serviceaccount:ns:sa");
        assert_eq!(claims["aud"], serde_json::json!(["istio-ca"]));
        assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "sa");
        assert_eq!(
            claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
            60
        );
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.kid.as_deref(), Some(issuer.kid()));
        assert_eq!(header.alg, Algorithm::ES256);
    }
}

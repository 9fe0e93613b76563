//! The signing authority: keys, roots and certificate issuance.
//!
//! [`Ca::load_or_create`] sets the CA up in one of two modes:
//! - **self-signed** (default): a root key and certificate in `--key-dir`
//!   (`root-key.pem`, mode 0600, and `root-cert.pem`), created on first start with
//!   the chosen [`KeyAlgorithm`] and reused afterwards;
//! - **plug-in**: Istio's `cacerts` layout in `--cacerts-dir` (`ca-cert.pem`,
//!   `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`); citadel signs as that
//!   intermediate, and the root is copied to `<key-dir>/root-cert.pem`.
//!
//! In cluster mode (`crate::cluster`) the same material comes from Secrets instead
//! ([`Ca::from_root_pem`], [`Ca::from_plug_in_pem`], a new root from [`new_root`]).
//!
//! Either way a key that does not match its certificate, a signing certificate that is
//! not a CA, or a chain that does not lead to the root stops the start with a message
//! naming the file. [`Ca::sign`] issues workload leaves: the SPIFFE ID as the only SAN,
//! digital-signature and key-encipherment usages, server and client auth, a random
//! 128-bit serial, and a lifetime capped by the maximum and by the signing
//! certificate's own expiry.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::spiffe::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::csr::Csr;

/// The algorithm of a root key citadel creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256 (the default; fastest to sign with).
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// RSA 2048 with SHA-256.
    #[value(name = "rsa-2048")]
    Rsa2048,
    /// RSA 4096 with SHA-256.
    #[value(name = "rsa-4096")]
    Rsa4096,
}

/// How the CA is set up.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Where the self-signed root lives, and where `root-cert.pem` is always written.
    pub key_dir: PathBuf,
    /// Istio's plug-in CA directory; when set, citadel signs as that intermediate.
    pub cacerts_dir: Option<PathBuf>,
    /// The algorithm of a root created on first start.
    pub key_algorithm: KeyAlgorithm,
    /// The mesh's trust domain; also the root's organization.
    pub trust_domain: String,
    /// Lifetime of a root created on first start.
    pub root_ttl: Duration,
    /// The longest lifetime a workload certificate gets.
    pub max_ttl: Duration,
    /// The lifetime when the request does not name one.
    pub default_ttl: Duration,
}

/// Why the CA could not be set up or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file's (or a Secret key's) content is not what it must be.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file, or `Secret <ns>/<name>/<key>`.
        path: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// A certificate could not be built or signed.
    #[error("signing failed: {0}")]
    Sign(#[from] rcgen::Error),
}

type Result<T, E = CaError> = std::result::Result<T, E>;

/// Self-signed root key file name in the key directory.
pub const ROOT_KEY: &str = "root-key.pem";
/// Root certificate file name in the key directory (always present after start).
pub const ROOT_CERT: &str = "root-cert.pem";

/// Istio's plug-in CA keys (files in `--cacerts-dir`, keys of Secret `cacerts`).
pub const PLUG_IN_CA_CERT: &str = "ca-cert.pem";
/// The plug-in signing key.
pub const PLUG_IN_CA_KEY: &str = "ca-key.pem";
/// The plug-in root.
pub const PLUG_IN_ROOT_CERT: &str = "root-cert.pem";
/// The plug-in chain from the signing certificate towards the root.
pub const PLUG_IN_CERT_CHAIN: &str = "cert-chain.pem";

/// A self-signed root in PEM.
#[derive(Clone)]
pub struct RootPem {
    /// The root certificate.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl std::fmt::Debug for RootPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootPem")
            .field("cert", &self.cert)
            .finish_non_exhaustive()
    }
}

/// Istio's plug-in CA material in PEM (the `cacerts` layout).
#[derive(Clone)]
pub struct PlugInPem {
    /// `ca-cert.pem`: the signing (intermediate) certificate.
    pub ca_cert: String,
    /// `ca-key.pem`: its key.
    pub ca_key: String,
    /// `root-cert.pem`: the root workloads trust.
    pub root_cert: String,
    /// `cert-chain.pem`, when present: the signing certificate .. the root.
    pub cert_chain: Option<String>,
}

/// A certificate just issued.
#[derive(Debug, Clone)]
pub struct Signed {
    /// PEM certificates, the leaf first and the root last.
    pub chain: Vec<String>,
    /// The leaf's serial, lowercase hex.
    pub serial: String,
    /// Validity start, unix seconds.
    pub not_before: i64,
    /// Validity end, unix seconds.
    pub not_after: i64,
}

/// Whether citadel holds its own root or signs for a plugged-in one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A root created and kept by citadel.
    SelfSigned,
    /// An intermediate from Istio's `cacerts` layout.
    PlugIn,
}

/// The signing authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Certificates after the leaf in every chain: the signing cert up to the root.
    chain_tail: Vec<String>,
    roots: Vec<String>,
    signer_not_after: OffsetDateTime,
    root_not_after: i64,
    trust_domain: String,
    max_ttl: Duration,
    default_ttl: Duration,
    mode: Mode,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("mode", &self.mode)
            .field("trust_domain", &self.trust_domain)
            .field("root_not_after", &self.root_not_after)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from the plug-in directory or the key directory, creating a
    /// self-signed root there on first start.
    pub fn load_or_create(config: &CaConfig) -> Result<Ca> {
        create_private_dir(&config.key_dir)?;
        let ca = match &config.cacerts_dir {
            Some(dir) => Self::plug_in(config, dir)?,
            None => Self::self_signed(config)?,
        };
        ca.write_root(&config.key_dir)?;
        Ok(ca)
    }

    /// Writes the roots to `<key_dir>/root-cert.pem` unless it already holds them.
    pub fn write_root(&self, key_dir: &Path) -> Result<()> {
        create_private_dir(key_dir)?;
        let root_path = key_dir.join(ROOT_CERT);
        let root_pem = self.roots.join("");
        if fs::read_to_string(&root_path).ok().as_deref() != Some(root_pem.as_str()) {
            write_atomic(&root_path, root_pem.as_bytes(), 0o644)?;
        }
        Ok(())
    }

    fn self_signed(config: &CaConfig) -> Result<Ca> {
        let key_path = config.key_dir.join(ROOT_KEY);
        let cert_path = config.key_dir.join(ROOT_CERT);
        match (key_path.exists(), cert_path.exists()) {
            (false, false) => create_root(config, &key_path, &cert_path)?,
            (true, false) => {
                return Err(CaError::Invalid {
                    path: cert_path,
                    reason: format!(
                        "missing, but {} exists; restore the certificate, or move the key away to create a new root (workloads will need the new root)",
                        key_path.display()
                    ),
                });
            }
            (false, true) => {
                return Err(CaError::Invalid {
                    path: key_path,
                    reason: format!(
                        "missing, but {} exists; restore the key, or move the certificate away to create a new root",
                        cert_path.display()
                    ),
                });
            }
            (true, true) => {}
        }
        let root = RootPem {
            cert: read(&cert_path)?,
            key: read(&key_path)?,
        };
        Self::from_root_pem(config, &root, &cert_path, &key_path)
    }

    /// A self-signed CA from its root certificate and key in PEM; `cert_at` and
    /// `key_at` name where they came from (a file, or a Secret's key) in errors.
    pub fn from_root_pem(
        config: &CaConfig,
        root: &RootPem,
        cert_at: &Path,
        key_at: &Path,
    ) -> Result<Ca> {
        let key = parse_key(key_at, &root.key)?;
        let cert_der = single_cert(cert_at, &root.cert)?;
        let info = check_signing_cert(cert_at, &cert_der, &key, key_at)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::Invalid {
            path: cert_at.to_path_buf(),
            reason: format!("cannot sign with it: {e}"),
        })?;
        let root = pem_of(&cert_der);
        Ok(Ca {
            issuer,
            chain_tail: vec![root.clone()],
            roots: vec![root],
            signer_not_after: info.not_after,
            root_not_after: info.not_after.unix_timestamp(),
            trust_domain: config.trust_domain.clone(),
            max_ttl: config.max_ttl,
            default_ttl: config.default_ttl,
            mode: Mode::SelfSigned,
        })
    }

    fn plug_in(config: &CaConfig, dir: &Path) -> Result<Ca> {
        let chain_path = dir.join(PLUG_IN_CERT_CHAIN);
        let pems = PlugInPem {
            ca_key: read(&dir.join(PLUG_IN_CA_KEY))?,
            ca_cert: read(&dir.join(PLUG_IN_CA_CERT))?,
            root_cert: read(&dir.join(PLUG_IN_ROOT_CERT))?,
            cert_chain: match chain_path.exists() {
                true => Some(read(&chain_path)?),
                false => None,
            },
        };
        Self::from_plug_in_pem(config, &pems, dir)
    }

    /// A plug-in CA from Istio's `cacerts` PEM texts; `at` names where they came
    /// from (a directory, or a Secret) in errors, each key as a file in it.
    pub fn from_plug_in_pem(config: &CaConfig, pems: &PlugInPem, at: &Path) -> Result<Ca> {
        let cert_path = at.join(PLUG_IN_CA_CERT);
        let key_path = at.join(PLUG_IN_CA_KEY);
        let root_path = at.join(PLUG_IN_ROOT_CERT);
        let chain_path = at.join(PLUG_IN_CERT_CHAIN);
        let key = parse_key(&key_path, &pems.ca_key)?;
        let cert_der = single_cert(&cert_path, &pems.ca_cert)?;
        let info = check_signing_cert(&cert_path, &cert_der, &key, &key_path)?;
        let root_der = single_cert(&root_path, &pems.root_cert)?;
        let root_info = cert_info(&root_path, &root_der)?;

        // cert-chain.pem: the signing cert, its intermediates, and possibly the root.
        // Normalized to signing cert .. root, each link verified. Istio's self-signed
        // secret leaves it empty.
        let mut tail: Vec<CertificateDer<'static>> = match &pems.cert_chain {
            Some(chain) if !chain.trim().is_empty() => certs(&chain_path, chain)?,
            _ => Vec::new(),
        };
        tail.retain(|c| c.as_ref() != root_der.as_ref());
        if tail.first().map(|c| c.as_ref()) != Some(cert_der.as_ref()) {
            tail.insert(0, cert_der.clone());
        }
        tail.push(root_der.clone());
        for pair in tail.windows(2) {
            let (child, parent) = (&pair[0], &pair[1]);
            let (_, c) = X509Certificate::from_der(child).map_err(|e| invalid(&chain_path, e))?;
            let (_, p) = X509Certificate::from_der(parent).map_err(|e| invalid(&chain_path, e))?;
            if c.verify_signature(Some(p.public_key())).is_err() {
                return Err(CaError::Invalid {
                    path: chain_path.clone(),
                    reason: format!(
                        "the chain does not lead to {}: {:?} is not signed by {:?}; put ca-cert.pem, then each intermediate, in cert-chain.pem",
                        root_path.display(),
                        c.subject().to_string(),
                        p.subject().to_string()
                    ),
                });
            }
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| CaError::Invalid {
            path: cert_path.clone(),
            reason: format!("cannot sign with it: {e}"),
        })?;
        Ok(Ca {
            issuer,
            chain_tail: tail.iter().map(|c| pem_of(c)).collect(),
            roots: vec![pem_of(&root_der)],
            signer_not_after: info.not_after,
            root_not_after: root_info.not_after.unix_timestamp(),
            trust_domain: config.trust_domain.clone(),
            max_ttl: config.max_ttl,
            default_ttl: config.default_ttl,
            mode: Mode::PlugIn,
        })
    }

    /// Self-signed or plug-in.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The trust domain identities are issued in.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The PEM roots workloads should trust.
    pub fn roots(&self) -> &[String] {
        &self.roots
    }

    /// The roots as DER, for TLS verifiers.
    pub fn root_ders(&self) -> Vec<CertificateDer<'static>> {
        self.roots
            .iter()
            .flat_map(|p| CertificateDer::pem_slice_iter(p.as_bytes()).flatten())
            .collect()
    }

    /// When the root expires, unix seconds.
    pub fn root_not_after(&self) -> i64 {
        self.root_not_after
    }

    /// The largest lifetime a leaf gets.
    pub fn max_ttl(&self) -> Duration {
        self.max_ttl
    }

    /// The lifetime a request gets: its own (if positive) capped by the maximum.
    pub fn ttl_for(&self, requested_secs: i64) -> Duration {
        let requested = match requested_secs {
            n if n > 0 => Duration::from_secs(n as u64),
            _ => self.default_ttl,
        };
        requested.min(self.max_ttl)
    }

    /// Issues a workload certificate for `identity` over the CSR's public key.
    pub fn sign(&self, csr: &Csr, identity: &Identity, ttl: Duration) -> Result<Signed> {
        let spki = SubjectPublicKeyInfo::from_der(&csr.spki_der)?;
        let uri = rcgen::string::Ia5String::try_from(identity.uri())?;
        let mut params = leaf_params(ttl, self.signer_not_after)?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        self.finish(params, &spki)
    }

    /// A serving certificate for citadel itself (DNS names and IPs), with a fresh
    /// P-256 key. Returns the PEM chain (leaf first) and the PEM key.
    pub fn serving_cert(&self, hosts: &[String], ttl: Duration) -> Result<(String, String)> {
        self.dns_cert("citadel", hosts, ttl)
    }

    /// A serving certificate named `common_name` for `hosts` (DNS names and IPs),
    /// with a fresh P-256 key: the webhooks' certificates in cluster mode. Returns
    /// the PEM chain (leaf first) and the PEM key.
    pub fn dns_cert(
        &self,
        common_name: &str,
        hosts: &[String],
        ttl: Duration,
    ) -> Result<(String, String)> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = leaf_params(ttl, self.signer_not_after)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for host in hosts {
            params.subject_alt_names.push(match host.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.as_str().try_into()?),
            });
        }
        let signed = self.finish(params, &key)?;
        Ok((signed.chain.concat(), key.serialize_pem()))
    }

    /// Whether `leaf` (DER) was signed by this CA's signing certificate.
    pub fn signed_leaf(&self, leaf: &[u8]) -> bool {
        let Some(signer) = self
            .chain_tail
            .first()
            .and_then(|p| CertificateDer::from_pem_slice(p.as_bytes()).ok())
        else {
            return false;
        };
        let (Ok((_, leaf)), Ok((_, signer))) = (
            X509Certificate::from_der(leaf),
            X509Certificate::from_der(&signer),
        ) else {
            return false;
        };
        leaf.verify_signature(Some(signer.public_key())).is_ok()
    }

    fn finish(
        &self,
        mut params: CertificateParams,
        key: &impl rcgen::PublicKeyData,
    ) -> Result<Signed> {
        let serial = random_serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let (not_before, not_after) = (params.not_before, params.not_after);
        let cert = params.signed_by(key, &self.issuer)?;
        let mut chain = Vec::with_capacity(self.chain_tail.len() + 1);
        chain.push(cert.pem());
        chain.extend(self.chain_tail.iter().cloned());
        Ok(Signed {
            chain,
            serial: hex(&serial),
            not_before: not_before.unix_timestamp(),
            not_after: not_after.unix_timestamp(),
        })
    }
}

/// A random 128-bit serial: positive, 16 bytes in DER, and without a leading zero in
/// hex, so it reads the same in the ledger, in `openssl x509` and as the
/// client-cert requester.
fn random_serial() -> Result<[u8; 16]> {
    let mut serial = [0u8; 16];
    aws_lc_rs::rand::fill(&mut serial).map_err(|_| rcgen::Error::RingUnspecified)?;
    serial[0] = (serial[0] & 0x7f) | 0x40;
    Ok(serial)
}

fn leaf_params(ttl: Duration, signer_not_after: OffsetDateTime) -> Result<CertificateParams> {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.not_before = now;
    params.not_after = (now + ttl).min(signer_not_after);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    Ok(params)
}

/// A new self-signed root for `config` (its algorithm, trust domain and lifetime).
pub fn new_root(config: &CaConfig) -> Result<RootPem> {
    let key = match config.key_algorithm {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?,
        KeyAlgorithm::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)?
        }
        KeyAlgorithm::Rsa4096 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_4096)?
        }
    };
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, config.trust_domain.as_str());
    params
        .distinguished_name
        .push(DnType::CommonName, "Mizzen root CA");
    params.not_before = now;
    params.not_after = now + config.root_ttl;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    let cert = params.self_signed(&key)?;
    Ok(RootPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn create_root(config: &CaConfig, key_path: &Path, cert_path: &Path) -> Result<()> {
    let root = new_root(config)?;
    // The key first: a crash between the two writes leaves a key without a
    // certificate, which the next start reports instead of silently replacing.
    write_atomic(key_path, root.key.as_bytes(), 0o600)?;
    write_atomic(cert_path, root.cert.as_bytes(), 0o644)?;
    tracing::info!(
        key = %key_path.display(),
        cert = %cert_path.display(),
        algorithm = ?config.key_algorithm,
        "created a self-signed root"
    );
    Ok(())
}

struct CertInfo {
    not_after: OffsetDateTime,
}

fn cert_info(path: &Path, der: &CertificateDer<'_>) -> Result<CertInfo> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| invalid(path, e))?;
    Ok(CertInfo {
        not_after: cert.validity().not_after.to_datetime(),
    })
}

/// Checks that `der` is a CA certificate, valid now, whose public key is `key`'s.
fn check_signing_cert(
    path: &Path,
    der: &CertificateDer<'_>,
    key: &KeyPair,
    key_path: &Path,
) -> Result<CertInfo> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| invalid(path, e))?;
    if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(CaError::Invalid {
            path: key_path.to_path_buf(),
            reason: format!(
                "this key does not match the certificate {}; use the key the certificate was issued for",
                path.display()
            ),
        });
    }
    let is_ca = cert
        .basic_constraints()
        .ok()
        .flatten()
        .is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(CaError::Invalid {
            path: path.to_path_buf(),
            reason: "not a CA certificate (basicConstraints CA:TRUE is missing); a CA needs a signing certificate".into(),
        });
    }
    let not_after = cert.validity().not_after.to_datetime();
    if not_after <= OffsetDateTime::now_utc() {
        return Err(CaError::Invalid {
            path: path.to_path_buf(),
            reason: format!("expired at {not_after}; install a new CA certificate"),
        });
    }
    Ok(CertInfo { not_after })
}

fn invalid(path: &Path, e: impl std::fmt::Display) -> CaError {
    CaError::Invalid {
        path: path.to_path_buf(),
        reason: format!("not a valid X.509 certificate: {e}"),
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_key(path: &Path, pem: &str) -> Result<KeyPair> {
    KeyPair::from_pem(pem).map_err(|e| CaError::Invalid {
        path: path.to_path_buf(),
        reason: format!("not a usable PEM private key (PKCS#8, ECDSA or RSA): {e}"),
    })
}

fn certs(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::Invalid {
            path: path.to_path_buf(),
            reason: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CaError::Invalid {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn single_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>> {
    let mut all = certs(path, pem)?;
    if all.len() > 1 {
        return Err(CaError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{} certificates; this file holds exactly one", all.len()),
        });
    }
    Ok(all.remove(0))
}

/// PEM text of one DER certificate.
pub fn pem_of(der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new("CERTIFICATE", der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn create_private_dir(dir: &Path) -> Result<()> {
    crate::files::private_dir(dir).map_err(|source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    crate::files::write_atomic(path, data, mode).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, alg: KeyAlgorithm) -> CaConfig {
        CaConfig {
            key_dir: dir.to_path_buf(),
            cacerts_dir: None,
            key_algorithm: alg,
            trust_domain: "cluster.local".into(),
            root_ttl: Duration::from_secs(3600 * 24 * 365),
            max_ttl: Duration::from_secs(3600),
            default_ttl: Duration::from_secs(600),
        }
    }

    fn csr_for(id: &Identity) -> Csr {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(id.uri().try_into().unwrap())];
        crate::csr::parse(&p.serialize_request(&key).unwrap().pem().unwrap()).unwrap()
    }

    #[test]
    fn every_root_algorithm_signs_leaves_that_verify() {
        let id = Identity::new("cluster.local", "default", "reviews").unwrap();
        for (alg, want) in [
            (KeyAlgorithm::EcdsaP256, 256),
            (KeyAlgorithm::Rsa2048, 2048),
            (KeyAlgorithm::Rsa4096, 4096),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let ca = Ca::load_or_create(&config(dir.path(), alg)).unwrap();
            let root_der = ca.root_ders().remove(0);
            let (_, root) = X509Certificate::from_der(&root_der).unwrap();
            let bits = root.public_key().parsed().unwrap().key_size();
            assert_eq!(bits, want, "{alg:?}");

            let signed = ca.sign(&csr_for(&id), &id, ca.ttl_for(0)).unwrap();
            assert_eq!(signed.not_after - signed.not_before, 600, "the default TTL");
            let leaf_der = CertificateDer::from_pem_slice(signed.chain[0].as_bytes()).unwrap();
            let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
            leaf.verify_signature(Some(root.public_key()))
                .unwrap_or_else(|e| panic!("{alg:?}: the leaf does not verify: {e}"));
            assert_eq!(signed.serial.len(), 32, "16 bytes, no leading zero");
            assert_eq!(format!("{:x}", leaf.tbs_certificate.serial), signed.serial);
        }
    }

    #[test]
    fn ttl_is_the_request_capped_by_the_maximum() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(&config(dir.path(), KeyAlgorithm::EcdsaP256)).unwrap();
        assert_eq!(ca.ttl_for(0), Duration::from_secs(600));
        assert_eq!(ca.ttl_for(-1), Duration::from_secs(600));
        assert_eq!(ca.ttl_for(60), Duration::from_secs(60));
        assert_eq!(ca.ttl_for(86_400), Duration::from_secs(3600));
    }
}

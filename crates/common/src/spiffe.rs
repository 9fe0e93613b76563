//! SPIFFE workload identities as Istio uses them:
//! `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Citadel puts one in every certificate it signs (as a URI SAN), the proxy reads it
//! back from the peer's certificate for authorization, and pilot writes it into
//! Envoy's SAN matchers. Parsing is strict: anything but exactly that shape is refused
//! with the reason, so a malformed SAN can never be mistaken for an identity.

use std::fmt;
use std::str::FromStr;

/// The default trust domain of an Istio mesh.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The longest SPIFFE ID accepted (the SPIFFE spec's limit).
pub const MAX_LEN: usize = 2048;

/// An Istio workload identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    /// The trust domain, e.g. `cluster.local`.
    pub trust_domain: String,
    /// The Kubernetes namespace.
    pub namespace: String,
    /// The Kubernetes service account.
    pub service_account: String,
}

/// Why a string is not an Istio SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The string does not start with `spiffe://`.
    #[error("{0:?} is not a SPIFFE ID: it must start with spiffe://")]
    Scheme(String),
    /// The path is not `/ns/<namespace>/sa/<service-account>`.
    #[error(
        "{0:?} is not an Istio identity: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    Shape(String),
    /// One part has characters or a length Kubernetes and SPIFFE do not allow.
    #[error("{id:?}: invalid {part} {value:?} ({why})")]
    Part {
        /// The whole ID.
        id: String,
        /// Which part: trust domain, namespace or service account.
        part: &'static str,
        /// The offending value.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The ID is longer than [`MAX_LEN`].
    #[error("SPIFFE ID of {0} bytes is longer than the limit of {MAX_LEN}")]
    TooLong(usize),
}

impl Identity {
    /// An identity from its parts, each checked.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, IdentityError> {
        let id = Identity {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        };
        id.check()?;
        Ok(id)
    }

    /// The URI form, `spiffe://td/ns/NS/sa/SA`.
    pub fn uri(&self) -> String {
        self.to_string()
    }

    fn check(&self) -> Result<(), IdentityError> {
        let id = self.to_string();
        if id.len() > MAX_LEN {
            return Err(IdentityError::TooLong(id.len()));
        }
        let part = |part: &'static str, value: &str, why: &'static str| IdentityError::Part {
            id: id.clone(),
            part,
            value: value.to_string(),
            why,
        };
        check_trust_domain(&self.trust_domain)
            .map_err(|why| part("trust domain", &self.trust_domain, why))?;
        check_segment(&self.namespace).map_err(|why| part("namespace", &self.namespace, why))?;
        check_segment(&self.service_account)
            .map_err(|why| part("service account", &self.service_account, why))?;
        Ok(())
    }
}

/// Checks a trust domain: lowercase letters, digits, `.`, `-`, `_`, not empty.
pub fn check_trust_domain(td: &str) -> Result<(), &'static str> {
    if td.is_empty() {
        return Err("empty");
    }
    if td.len() > 255 {
        return Err("longer than 255 characters");
    }
    if !td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err("only lowercase letters, digits, '.', '-' and '_' are allowed");
    }
    Ok(())
}

/// Checks a namespace or service-account name as Kubernetes would: a DNS-1123
/// subdomain (lowercase alphanumerics, `-` and `.`, starting and ending alphanumeric).
fn check_segment(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty");
    }
    if s.len() > 253 {
        return Err("longer than 253 characters");
    }
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !s.bytes().all(|b| ok_char(b) || b == b'-' || b == b'.') {
        return Err("only lowercase letters, digits, '-' and '.' are allowed");
    }
    let (first, last) = (s.as_bytes()[0], s.as_bytes()[s.len() - 1]);
    if !ok_char(first) || !ok_char(last) {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_LEN {
            return Err(IdentityError::TooLong(s.len()));
        }
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| IdentityError::Scheme(s.to_string()))?;
        let mut parts = rest.split('/');
        let shape = || IdentityError::Shape(s.to_string());
        let td = parts.next().ok_or_else(shape)?;
        let (Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(shape());
        };
        let id = Identity {
            trust_domain: td.to_string(),
            namespace: ns.to_string(),
            service_account: sa.to_string(),
        };
        id.check()?;
        Ok(id)
    }
}

/// Why a certificate does not name one identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertIdentityError {
    /// The bytes are not a DER X.509 certificate.
    #[error("not a DER X.509 certificate: {0}")]
    NotX509(String),
    /// The certificate has no `spiffe://` URI SAN.
    #[error("the certificate has no SPIFFE ID (URI SAN spiffe://…)")]
    None,
    /// The certificate has more than one.
    #[error("the certificate has several SPIFFE IDs {0:?}; exactly one is allowed")]
    Several(Vec<String>),
    /// The one it has is not an Istio identity.
    #[error("{0}")]
    Invalid(#[from] IdentityError),
}

/// The identity a workload certificate carries: its single `spiffe://` URI SAN,
/// parsed strictly. The certificate's chain and validity are the caller's to check.
pub fn from_certificate(der: &[u8]) -> Result<Identity, CertIdentityError> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::{FromDer, X509Certificate};
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| CertIdentityError::NotX509(e.to_string()))?;
    let mut ids = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name
                    && uri
                        .get(..9)
                        .is_some_and(|s| s.eq_ignore_ascii_case("spiffe://"))
                {
                    ids.push(uri.to_string());
                }
            }
        }
    }
    match ids.as_slice() {
        [] => Err(CertIdentityError::None),
        [one] => Ok(one.parse()?),
        _ => Err(CertIdentityError::Several(ids)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips_istio_form() {
        let id: Identity = "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(id.namespace, "default");
        assert_eq!(id.service_account, "bookinfo-reviews");
        assert_eq!(
            id.uri(),
            "spiffe://cluster.local/ns/default/sa/bookinfo-reviews"
        );
    }

    #[test]
    fn refuses_other_shapes_with_reason() {
        for (bad, want) in [
            (
                "https://cluster.local/ns/a/sa/b",
                "must start with spiffe://",
            ),
            ("spiffe://cluster.local/ns/a", "expected spiffe://"),
            (
                "spiffe://cluster.local/ns/a/sa/b/extra",
                "expected spiffe://",
            ),
            ("spiffe://cluster.local/sa/b/ns/a", "expected spiffe://"),
            ("spiffe://Cluster.Local/ns/a/sa/b", "invalid trust domain"),
            ("spiffe:///ns/a/sa/b", "invalid trust domain"),
            ("spiffe://cluster.local/ns/A/sa/b", "invalid namespace"),
            (
                "spiffe://cluster.local/ns/a/sa/-b",
                "invalid service account",
            ),
            ("spiffe://cluster.local/ns//sa/b", "invalid namespace"),
        ] {
            let err = bad.parse::<Identity>().unwrap_err().to_string();
            assert!(err.contains(want), "{bad}: {err}");
        }
        let long = format!("spiffe://cluster.local/ns/a/sa/{}", "b".repeat(MAX_LEN));
        assert!(matches!(
            long.parse::<Identity>(),
            Err(IdentityError::TooLong(_))
        ));
    }

    #[test]
    fn reads_the_identity_of_a_certificate() {
        let cert = |sans: Vec<rcgen::SanType>| {
            let mut p = rcgen::CertificateParams::default();
            p.subject_alt_names = sans;
            let key = rcgen::KeyPair::generate().unwrap();
            p.self_signed(&key).unwrap().der().to_vec()
        };
        let uri = |u: &str| rcgen::SanType::URI(u.try_into().unwrap());
        let one = cert(vec![
            uri("spiffe://cluster.local/ns/a/sa/b"),
            rcgen::SanType::DnsName("x".try_into().unwrap()),
        ]);
        assert_eq!(
            from_certificate(&one).unwrap(),
            Identity::new("cluster.local", "a", "b").unwrap()
        );
        assert_eq!(
            from_certificate(&cert(vec![])),
            Err(CertIdentityError::None)
        );
        let two = cert(vec![
            uri("spiffe://td/ns/a/sa/b"),
            uri("spiffe://td/ns/a/sa/c"),
        ]);
        assert!(
            matches!(from_certificate(&two), Err(CertIdentityError::Several(v)) if v.len() == 2)
        );
        let bad = cert(vec![uri("spiffe://td/ns/a")]);
        assert!(matches!(
            from_certificate(&bad),
            Err(CertIdentityError::Invalid(_))
        ));
        assert!(matches!(
            from_certificate(b"junk"),
            Err(CertIdentityError::NotX509(_))
        ));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = s.parse::<Identity>();
        }

        #[test]
        fn valid_parts_round_trip(
            td in "[a-z0-9][a-z0-9.-]{0,20}",
            ns in "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?",
            sa in "[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?",
        ) {
            let id = Identity::new(&td, &ns, &sa).unwrap();
            prop_assert_eq!(id.uri().parse::<Identity>().unwrap(), id);
        }
    }
}

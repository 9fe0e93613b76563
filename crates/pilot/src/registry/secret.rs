//! TLS secrets for Gateway `credentialName`, read from Kubernetes `Secret`s the way
//! Istio's credential controller reads them.
//!
//! A Secret counts when it holds a certificate and key — `tls.crt`/`tls.key` (type
//! `kubernetes.io/tls`) or Istio's generic `cert`/`key` — optionally with a CA
//! bundle (`ca.crt` or `cacert`) for MUTUAL, or when it holds a CA bundle alone.
//! `data` is base64 (decoded while reading the object); `stringData` entries are
//! plain text and win over `data`, as the API server merges them. Istio's
//! `<name>-cacert` convention is honoured: such a Secret's CA becomes the CA of
//! `<name>` when that one carries none. Keys are `namespace/name`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use crate::model::TlsSecret;

/// Suffix of a Secret holding the CA for the Secret named without it.
pub const CA_SECRET_SUFFIX: &str = "-cacert";

/// The TLS secrets among `secrets` (each with its namespace), by `namespace/name`.
pub fn tls_secrets(secrets: &[(String, Secret)]) -> BTreeMap<String, TlsSecret> {
    let mut out = BTreeMap::new();
    for (ns, s) in secrets {
        let name = s.metadata.name.clone().unwrap_or_default();
        if let Some(tls) = tls_secret(ns, &name, s) {
            out.insert(format!("{ns}/{name}"), tls);
        }
    }
    let cas: Vec<(String, String)> = out
        .iter()
        .filter_map(|(k, v)| {
            Some((
                k.strip_suffix(CA_SECRET_SUFFIX)?.to_string(),
                v.ca_cert.clone()?,
            ))
        })
        .collect();
    for (key, ca) in cas {
        if let Some(target) = out
            .get_mut(&key)
            .filter(|t| t.ca_cert.is_none() && !t.cert_chain.is_empty())
        {
            target.ca_cert = Some(ca);
        }
    }
    out
}

/// One Secret as a [`TlsSecret`], or `None` when it holds no TLS material.
fn tls_secret(ns: &str, name: &str, s: &Secret) -> Option<TlsSecret> {
    if s.type_.as_deref() == Some("kubernetes.io/service-account-token") {
        return None;
    }
    let mut entries: BTreeMap<&str, Result<String, ()>> = BTreeMap::new();
    for (k, v) in s.data.iter().flatten() {
        entries.insert(k.as_str(), String::from_utf8(v.0.clone()).map_err(drop));
    }
    for (k, v) in s.string_data.iter().flatten() {
        entries.insert(k.as_str(), Ok(v.clone()));
    }
    let mut bad_key = None;
    let mut get = |keys: &[&'static str]| -> Option<String> {
        for k in keys {
            match entries.get(k) {
                Some(Ok(v)) if !v.trim().is_empty() => return Some(v.clone()),
                Some(Err(())) => bad_key = Some(*k),
                _ => {}
            }
        }
        None
    };
    let cert = get(&["tls.crt", "cert"]);
    let key = get(&["tls.key", "key"]);
    let ca = get(&["ca.crt", "cacert"]);
    if let Some(k) = bad_key {
        tracing::warn!(
            secret = %format!("{ns}/{name}"),
            key = k,
            "secret entry is not UTF-8 PEM text; store PEM (base64-encoded under data, or plain under stringData)"
        );
    }
    match (cert, key) {
        (Some(cert_chain), Some(private_key)) => Some(TlsSecret {
            cert_chain,
            private_key,
            ca_cert: ca,
        }),
        (None, None) => ca.map(|ca| TlsSecret {
            cert_chain: String::new(),
            private_key: String::new(),
            ca_cert: Some(ca),
        }),
        (cert, _) => {
            if s.type_.as_deref() == Some("kubernetes.io/tls") || cert.is_some() {
                tracing::warn!(
                    secret = %format!("{ns}/{name}"),
                    "TLS secret has a certificate or a key but not both; add tls.crt and tls.key (or cert and key)"
                );
            }
            None
        }
    }
}

//! The CA's key material from the cluster, read once at start as istiod does.
//!
//! Secret `cacerts` in citadel's namespace wins (Istio's plug-in CA: `ca-cert.pem`,
//! `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`). Without it, the self-signed
//! root lives in Secret `istio-ca-secret` (type `istio.io/ca-root`, Istio's keys
//! `ca-cert.pem` and `ca-key.pem`, plus the empty `cert-chain.pem`, `key.pem` and
//! `root-cert.pem` istiod writes): loaded when present, otherwise a new root is
//! created and stored there. Two replicas starting together both try to create it;
//! the loser gets 409 AlreadyExists and loads the winner's, so the mesh has one root.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};

use super::{ClusterError, status_code};
use crate::ca::{
    Ca, CaConfig, PLUG_IN_CA_CERT, PLUG_IN_CA_KEY, PLUG_IN_CERT_CHAIN, PLUG_IN_ROOT_CERT,
    PlugInPem, RootPem, new_root,
};

/// Istio's plug-in CA Secret.
pub const CACERTS: &str = "cacerts";
/// Istio's self-signed root Secret.
pub const CA_SECRET: &str = "istio-ca-secret";
/// The type istiod gives `istio-ca-secret`.
pub const CA_SECRET_TYPE: &str = "istio.io/ca-root";

/// The CA from `cacerts`, or the root in `istio-ca-secret` (created if absent).
pub async fn load_ca(
    client: kube::Client,
    namespace: &str,
    config: &CaConfig,
) -> Result<Ca, ClusterError> {
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    let at = |name: &str| PathBuf::from(format!("Secret {namespace}/{name}"));
    let plug_in = secrets
        .get_opt(CACERTS)
        .await
        .map_err(ClusterError::api(format!(
            "reading Secret {namespace}/{CACERTS}"
        )))?;
    if let Some(secret) = plug_in {
        let pems = PlugInPem {
            ca_cert: text(&secret, PLUG_IN_CA_CERT)?,
            ca_key: text(&secret, PLUG_IN_CA_KEY)?,
            root_cert: text(&secret, PLUG_IN_ROOT_CERT)?,
            cert_chain: optional_text(&secret, PLUG_IN_CERT_CHAIN)?,
        };
        let ca = Ca::from_plug_in_pem(config, &pems, &at(CACERTS))?;
        tracing::info!(secret = %format!("{namespace}/{CACERTS}"), "plug-in CA: signing as the cacerts intermediate");
        return Ok(ca);
    }

    let stored = secrets
        .get_opt(CA_SECRET)
        .await
        .map_err(ClusterError::api(format!(
            "reading Secret {namespace}/{CA_SECRET}"
        )))?;
    let root = match stored {
        Some(secret) => {
            tracing::info!(secret = %format!("{namespace}/{CA_SECRET}"), "self-signed CA: using the stored root");
            root_of(&secret)?
        }
        None => {
            let root = new_root(config)?;
            match secrets
                .create(&PostParams::default(), &ca_secret(namespace, &root))
                .await
            {
                Ok(_) => {
                    tracing::info!(secret = %format!("{namespace}/{CA_SECRET}"), "self-signed CA: created a new root and stored it");
                    root
                }
                Err(e) if status_code(&e) == Some(409) => {
                    tracing::info!(secret = %format!("{namespace}/{CA_SECRET}"), "another replica stored a root first; using it");
                    let winner = secrets.get(CA_SECRET).await.map_err(ClusterError::api(
                        format!(
                            "reading Secret {namespace}/{CA_SECRET} after losing the create race"
                        ),
                    ))?;
                    root_of(&winner)?
                }
                Err(e) => {
                    return Err(ClusterError::api(format!(
                        "creating Secret {namespace}/{CA_SECRET}"
                    ))(e));
                }
            }
        }
    };
    let at = at(CA_SECRET);
    Ok(Ca::from_root_pem(
        config,
        &root,
        &at.join(PLUG_IN_CA_CERT),
        &at.join(PLUG_IN_CA_KEY),
    )?)
}

/// `istio-ca-secret` holding `root`, as istiod writes it.
pub fn ca_secret(namespace: &str, root: &RootPem) -> Secret {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(CA_SECRET.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        type_: Some(CA_SECRET_TYPE.into()),
        data: Some(BTreeMap::from([
            (PLUG_IN_CA_CERT.to_string(), bytes(&root.cert)),
            (PLUG_IN_CA_KEY.to_string(), bytes(&root.key)),
            (PLUG_IN_CERT_CHAIN.to_string(), bytes("")),
            ("key.pem".to_string(), bytes("")),
            (PLUG_IN_ROOT_CERT.to_string(), bytes("")),
        ])),
        ..Default::default()
    }
}

fn root_of(secret: &Secret) -> Result<RootPem, ClusterError> {
    Ok(RootPem {
        cert: text(secret, PLUG_IN_CA_CERT)?,
        key: text(secret, PLUG_IN_CA_KEY)?,
    })
}

fn secret_name(secret: &Secret) -> String {
    format!(
        "{}/{}",
        secret.metadata.namespace.as_deref().unwrap_or_default(),
        secret.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The value of `key` as text; a missing or empty key is an error naming it.
fn text(secret: &Secret, key: &str) -> Result<String, ClusterError> {
    optional_text(secret, key)?
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| ClusterError::Secret {
            secret: secret_name(secret),
            reason: format!(
                "key {key} is missing or empty; Istio's layout needs it (recreate the Secret with it, or delete the Secret to start over)"
            ),
        })
}

/// The value of `key` as text, if present (in `data` or `stringData`).
pub(crate) fn optional_text(secret: &Secret, key: &str) -> Result<Option<String>, ClusterError> {
    let raw = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|s| s.clone().into_bytes())
        });
    raw.map(|bytes| {
        String::from_utf8(bytes).map_err(|_| ClusterError::Secret {
            secret: secret_name(secret),
            reason: format!("key {key} is not UTF-8 text; it must hold PEM"),
        })
    })
    .transpose()
}

#[cfg(test)]
#[path = "ca_secret_tests.rs"]
mod tests;

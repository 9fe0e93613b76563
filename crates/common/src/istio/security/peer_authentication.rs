//! `PeerAuthentication`: the mutual TLS mode a workload accepts (istio/api
//! `security/v1beta1/peer_authentication.proto`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::istio::types::WorkloadSelector;

/// The spec of a `PeerAuthentication`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Workloads the policy applies to; the whole namespace (or mesh, in the root
    /// namespace) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Mutual TLS settings for the workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<PeerAuthenticationMutualTls>,
    /// Port-specific mutual TLS settings, keyed by workload port number; needs a
    /// `selector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<u32, PeerAuthenticationMutualTls>,
}

/// `PeerAuthentication.MutualTLS`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationMutualTls {
    /// The mTLS mode; inherited from the parent scope when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MutualTlsMode>,
}

/// `PeerAuthentication.MutualTLS.Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MutualTlsMode {
    /// Inherit from the parent; `PERMISSIVE` when no parent sets a mode.
    #[default]
    Unset,
    /// Connections are not tunneled through mTLS.
    Disable,
    /// Accept both plaintext and mTLS connections.
    Permissive,
    /// Accept only mTLS connections (with a client certificate).
    Strict,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: serde_json::Value) -> Result<PeerAuthenticationSpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn decodes_the_documented_examples() {
        let spec = decode(json!({
            "selector": {"matchLabels": {"app": "finance"}},
            "mtls": {"mode": "STRICT"},
            "portLevelMtls": {"8080": {"mode": "DISABLE"}}
        }))
        .unwrap();
        assert_eq!(spec.mtls.unwrap().mode, Some(MutualTlsMode::Strict));
        assert_eq!(
            spec.port_level_mtls[&8080].mode,
            Some(MutualTlsMode::Disable)
        );
        assert_eq!(
            decode(json!({"mtls": {"mode": "PERMISSIVE"}}))
                .unwrap()
                .mtls
                .unwrap()
                .mode,
            Some(MutualTlsMode::Permissive)
        );
        for mode in ["UNSET", "DISABLE", "PERMISSIVE", "STRICT"] {
            assert!(decode(json!({"mtls": {"mode": mode}})).is_ok(), "{mode}");
        }
    }

    #[test]
    fn round_trips_port_keys_as_strings() {
        let spec = decode(json!({"portLevelMtls": {"9000": {"mode": "PERMISSIVE"}}})).unwrap();
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            back,
            json!({"portLevelMtls": {"9000": {"mode": "PERMISSIVE"}}})
        );
    }

    #[test]
    fn refuses_unknown_fields_bad_modes_and_bad_ports() {
        let err = decode(json!({"mtls": {"mode": "STRICT", "enabled": true}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `enabled`"), "{err}");
        let err = decode(json!({"mtls": {"mode": "strict"}}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown variant `strict`"), "{err}");
        assert!(decode(json!({"portLevelMtls": {"http": {"mode": "STRICT"}}})).is_err());
        assert!(decode(json!({"targetRef": {"kind": "Service", "name": "a"}})).is_err());
    }
}

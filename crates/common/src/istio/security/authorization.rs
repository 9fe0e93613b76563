//! `AuthorizationPolicy`: access control on workloads (istio/api
//! `security/v1beta1/authorization_policy.proto`).
//!
//! An empty spec (`spec: {}`) is valid and means "allow nothing" for the selected
//! workloads; `rules: [{}]` means "allow everything".

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::istio::types::{PolicyTargetReference, WorkloadSelector};

/// The spec of an `AuthorizationPolicy`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicySpec {
    /// Workloads the policy applies to; all workloads of the namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The single resource (a Gateway or Service) the policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// The resources the policy applies to; exclusive with `selector` and `targetRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// Rules to match requests; a request matches when at least one rule matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// What to do with a matched request; `ALLOW` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AuthorizationPolicyAction>,
    /// The extension provider that decides for a `CUSTOM` action (oneof `action_detail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<AuthorizationPolicyProvider>,
}

/// `AuthorizationPolicy.Action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthorizationPolicyAction {
    /// Allow a request only if it matches the rules (the default).
    #[default]
    Allow,
    /// Deny a request if it matches any rule.
    Deny,
    /// Audit a request if it matches any rule.
    Audit,
    /// Delegate the decision to the extension named in `provider`.
    Custom,
}

/// `AuthorizationPolicy.ExtensionProvider`: the provider for a `CUSTOM` action.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorizationPolicyProvider {
    /// Name of an extension provider declared in `meshConfig.extensionProviders`.
    #[serde(default)]
    pub name: String,
}

/// A rule: matches when one source, one operation and all conditions match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Sources of the request; any source when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    /// Operations of the request; any operation when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    /// Extra conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

/// `Rule.From`: one source.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleFrom {
    /// The source of a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

/// `Rule.To`: one operation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleTo {
    /// The operation of a request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Operation>,
}

/// The source identities of a request; fields are ANDed together.
///
/// Every string supports exact, prefix (`abc*`), suffix (`*abc`) and presence (`*`)
/// match.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Source {
    /// Peer identities from the peer certificate (`<TRUST_DOMAIN>/ns/<NS>/sa/<SA>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    /// Negative match of peer identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    /// Request identities from the JWT (`<ISS>/<SUB>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    /// Negative match of request identities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    /// Namespaces from the peer certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Negative match of namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    /// Service accounts (`<NS>/<SA>`); exclusive with principals and namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    /// Negative match of service accounts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    /// IP blocks (single IP or CIDR) from the source address of the IP packet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    /// Negative match of IP blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    /// IP blocks from `X-Forwarded-For` or the proxy protocol.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    /// Negative match of remote IP blocks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
}

/// The operation of a request; fields are ANDed together.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Operation {
    /// Hosts of the HTTP request (case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Negative match of hosts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    /// Destination ports of the connection, as strings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// Negative match of ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    /// HTTP methods (always `POST` for gRPC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Negative match of methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    /// HTTP paths, after normalization (`/package.service/method` for gRPC).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// Negative match of paths.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

/// An extra condition on an Istio attribute.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Condition {
    /// The attribute name, e.g. `request.auth.claims[iss]` or `source.ip`.
    #[serde(default)]
    pub key: String,
    /// Allowed values; at least one of `values` and `notValues` must be set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    /// Negative match of values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: serde_json::Value) -> Result<AuthorizationPolicySpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn decodes_the_documented_allow_policy() {
        let spec = decode(json!({
            "action": "ALLOW",
            "rules": [{
                "from": [
                    {"source": {"principals": ["cluster.local/ns/default/sa/sleep"]}},
                    {"source": {"namespaces": ["test"]}}
                ],
                "to": [
                    {"operation": {"methods": ["GET"], "paths": ["/info*"]}},
                    {"operation": {"methods": ["POST"], "paths": ["/data"]}}
                ],
                "when": [{"key": "request.auth.claims[iss]", "values": ["https://accounts.google.com"]}]
            }]
        }))
        .unwrap();
        assert_eq!(spec.action, Some(AuthorizationPolicyAction::Allow));
        assert_eq!(spec.rules[0].from.len(), 2);
        assert_eq!(spec.rules[0].when[0].key, "request.auth.claims[iss]");
    }

    #[test]
    fn decodes_every_field() {
        let spec = decode(json!({
            "targetRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"}],
            "action": "CUSTOM",
            "provider": {"name": "my-custom-authz"},
            "rules": [{
                "from": [{"source": {
                    "principals": ["a"], "notPrincipals": ["b"],
                    "requestPrincipals": ["iss/sub"], "notRequestPrincipals": ["x/*"],
                    "namespaces": ["prod"], "notNamespaces": ["dev"],
                    "ipBlocks": ["10.0.0.0/8"], "notIpBlocks": ["10.1.2.3"],
                    "remoteIpBlocks": ["1.2.3.4"], "notRemoteIpBlocks": ["5.6.7.0/24"]
                }}, {"source": {"serviceAccounts": ["ns/sa"], "notServiceAccounts": ["ns/other"]}}],
                "to": [{"operation": {
                    "hosts": ["*.example.com"], "notHosts": ["admin.example.com"],
                    "ports": ["8080"], "notPorts": ["9090"],
                    "methods": ["GET"], "notMethods": ["DELETE"],
                    "paths": ["/api/*"], "notPaths": ["/admin*"]
                }}],
                "when": [{"key": "destination.port", "notValues": ["15000"]}]
            }]
        }))
        .unwrap();
        assert_eq!(spec.provider.as_ref().unwrap().name, "my-custom-authz");
        let src = spec.rules[0].from[0].source.as_ref().unwrap();
        assert_eq!(src.not_remote_ip_blocks, ["5.6.7.0/24"]);
        let op = spec.rules[0].to[0].operation.as_ref().unwrap();
        assert_eq!(op.not_paths, ["/admin*"]);
        assert_eq!(spec.rules[0].when[0].not_values, ["15000"]);
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(decode(back).unwrap(), spec);
    }

    #[test]
    fn empty_spec_and_empty_rule_decode() {
        assert_eq!(
            decode(json!({})).unwrap(),
            AuthorizationPolicySpec::default()
        );
        let allow_all = decode(json!({"rules": [{}]})).unwrap();
        assert_eq!(allow_all.rules, vec![Rule::default()]);
    }

    #[test]
    fn refuses_unknown_fields_and_bad_enums() {
        let err = decode(json!({"rules": [{"from": [{"source": {"principal": ["a"]}}]}]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `principal`"), "{err}");
        let err = decode(json!({"action": "REJECT"})).unwrap_err().to_string();
        assert!(err.contains("unknown variant `REJECT`"), "{err}");
        assert!(decode(json!({"action": "allow"})).is_err());
        assert!(decode(json!({"rules": [{"when": [{"key": "a", "value": ["x"]}]}]})).is_err());
    }
}

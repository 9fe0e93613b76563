//! `security.istio.io`: workload authentication and authorization (v1beta1, v1).
//!
//! Three kinds share the group: `PeerAuthentication` (mutual TLS mode per workload and
//! port), `RequestAuthentication` (JWT validation rules) and `AuthorizationPolicy`
//! (access control). Both served versions carry the same schema, so each kind has one
//! spec type here and one root type per version in [`v1beta1`] and [`v1`].

mod authorization;
mod peer_authentication;
mod request_authentication;

pub use authorization::{
    AuthorizationPolicyAction, AuthorizationPolicyProvider, AuthorizationPolicySpec, Condition,
    Operation, Rule, RuleFrom, RuleTo, Source,
};
pub use peer_authentication::{MutualTlsMode, PeerAuthenticationMutualTls, PeerAuthenticationSpec};
pub use request_authentication::{ClaimToHeader, JwtHeader, JwtRule, RequestAuthenticationSpec};

/// `security.istio.io/v1beta1` root types.
pub mod v1beta1 {
    crate::istio::crd!(
        "security.istio.io",
        "v1beta1",
        "PeerAuthentication",
        "peerauthentications",
        PeerAuthenticationSpec,
        super::PeerAuthenticationSpec
    );
    crate::istio::crd!(
        "security.istio.io",
        "v1beta1",
        "RequestAuthentication",
        "requestauthentications",
        RequestAuthenticationSpec,
        super::RequestAuthenticationSpec
    );
    crate::istio::crd!(
        "security.istio.io",
        "v1beta1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        AuthorizationPolicySpec,
        super::AuthorizationPolicySpec
    );
}

/// `security.istio.io/v1` root types.
pub mod v1 {
    crate::istio::crd!(
        "security.istio.io",
        "v1",
        "PeerAuthentication",
        "peerauthentications",
        PeerAuthenticationSpec,
        super::PeerAuthenticationSpec
    );
    crate::istio::crd!(
        "security.istio.io",
        "v1",
        "RequestAuthentication",
        "requestauthentications",
        RequestAuthenticationSpec,
        super::RequestAuthenticationSpec
    );
    crate::istio::crd!(
        "security.istio.io",
        "v1",
        "AuthorizationPolicy",
        "authorizationpolicies",
        AuthorizationPolicySpec,
        super::AuthorizationPolicySpec
    );
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;
    use serde_json::json;

    #[test]
    fn root_objects_decode_in_both_versions() {
        let deny_all: super::v1beta1::AuthorizationPolicy = serde_json::from_value(json!({
            "apiVersion": "security.istio.io/v1beta1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "default-deny", "namespace": "default"},
            "spec": {}
        }))
        .unwrap();
        assert_eq!(deny_all.spec.0, super::AuthorizationPolicySpec::default());
        let pa: super::v1::PeerAuthentication = serde_json::from_value(json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "PeerAuthentication",
            "metadata": {"name": "default", "namespace": "istio-system"},
            "spec": {"mtls": {"mode": "STRICT"}}
        }))
        .unwrap();
        assert!(pa.spec.0.mtls.is_some());
    }

    #[test]
    fn crds_name_the_istio_group_and_plurals() {
        assert_eq!(
            super::v1::AuthorizationPolicy::crd()
                .metadata
                .name
                .as_deref(),
            Some("authorizationpolicies.security.istio.io")
        );
        assert_eq!(
            super::v1beta1::PeerAuthentication::crd()
                .metadata
                .name
                .as_deref(),
            Some("peerauthentications.security.istio.io")
        );
        assert_eq!(
            super::v1beta1::RequestAuthentication::crd()
                .metadata
                .name
                .as_deref(),
            Some("requestauthentications.security.istio.io")
        );
    }
}

//! `RequestAuthentication` as Envoy's `envoy.filters.http.jwt_authn`, placed
//! ahead of the RBAC filters so request principals and claims can be
//! authorized.
//!
//! Each JWT rule of the policies selecting the proxy (same selection as
//! AuthorizationPolicy) is a provider `origins-N` with its issuer, audiences,
//! token locations, forwarding and claim-to-header options; the payload goes
//! to dynamic metadata under `payload`, where the RBAC rules of
//! [`super::rules`] read `iss`, `sub` and claims. One requirement on every
//! path: any provider, or no token at all (Istio's semantics: a token that
//! fails validation is refused with 401, a request without one passes and is
//! left to AuthorizationPolicy).
//!
//! JWKS: Istio fetches `jwksUri` in istiod and inlines it. Pilot inlines
//! `jwks` as written and serves a `file://` URI as a file Envoy reads; it does
//! not fetch remote URIs, and uses, as Istio does when its fetch fails, a key
//! set no token can match: tokens of that issuer are refused, requests
//! without one pass. [`super::notes`] reports it.

use std::collections::BTreeMap;

use common::istio::security::{JwtRule, RequestAuthenticationSpec};
use common::resource::Resource;
use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::config::route::v3::{RouteMatch, route_match};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtClaimToHeader, JwtHeader, JwtProvider, JwtRequirement, JwtRequirementOrList,
    RequirementRule, jwt_provider, jwt_requirement, requirement_rule,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpFilter;
use envoy_types::pb::google::protobuf::{Any, Empty};
use prost::Message;

use super::rules::JWT_PAYLOAD_KEY;
use crate::xds::listener::http_filter;

/// Envoy's JWT authentication filter.
pub const JWT_AUTHN_FILTER: &str = super::rules::JWT_FILTER;
/// Type URL of its config.
pub const JWT_AUTHN_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";

/// A key set no token verifies against (an RSA key nobody holds), for
/// issuers whose JWKS pilot cannot fetch: Istio's `FakeJwks` behaviour.
pub const UNFETCHABLE_JWKS: &str = concat!(
    r#"{"keys":[{"kty":"RSA","alg":"RS256","kid":"mizzen-unfetched","e":"AQAB","n":""#,
    "w6vl9a6NDlYTUmKa5ScNhcgMs7UdGoH6kM4WBx4KN0f8VeXkpPXJXR2dzXc3R8Vv",
    "vlnDSzyX-XGrlwnnDUNqRH6TVmAyQQx2EzTFYHSnHzyyprLOMeqwWgqTOdgpQWe0",
    "x4JAWvTlFcmMyaWgoGNGqnDKYl6tk3J1H8Z2GCsnNWnB7ePbvZsG6GYdqa9kZuNn",
    "mFbtdCJWeeiBmylT8VXgfrBqaLWC3cHjtIgKJdQKXvbkSn8EvSQvSBGbRyrKjERp",
    "aeyrZ2bmKD8SD0Wfh2XgZRYKe3sv0Yi4XD0MaEnkIhhm0AQuVYBTrfCwOhA3Vuhn",
    "JRSMZlAk0UHvv7MjQQTsgw",
    r#""}]}"#
);

/// Where a JWT rule's keys come from, or why they cannot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jwks {
    /// Inline JSON.
    Inline(String),
    /// A file Envoy reads (`file://PATH`).
    File(String),
    /// Not fetched; the reason. Tokens of the issuer are refused.
    Unfetched(String),
}

/// The key source of `rule`.
pub fn jwks(rule: &JwtRule) -> Jwks {
    if let Some(inline) = rule.jwks.as_deref().filter(|j| !j.trim().is_empty()) {
        return Jwks::Inline(inline.to_string());
    }
    match rule.jwks_url() {
        Some(uri) => match uri.strip_prefix("file://") {
            Some(path) if !path.is_empty() => Jwks::File(path.to_string()),
            _ => Jwks::Unfetched(format!(
                "jwksUri {uri:?} is not fetched (pilot does not fetch remote JWKS; give `jwks` inline or a file:// URI): tokens of issuer {:?} are refused, as Istio does when its fetch fails",
                rule.issuer
            )),
        },
        None => Jwks::Unfetched(format!(
            "JWT rule of issuer {:?} has neither jwks nor jwksUri (Istio would discover it from the issuer): its tokens are refused",
            rule.issuer
        )),
    }
}

/// `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication` with its
/// providers in name order (deterministic bytes; wire-compatible).
#[derive(Clone, PartialEq, Message)]
pub struct JwtAuthentication {
    /// Providers by name.
    #[prost(btree_map = "string, message", tag = "1")]
    pub providers: BTreeMap<String, JwtProvider>,
    /// Requirements by route match.
    #[prost(message, repeated, tag = "2")]
    pub rules: Vec<RequirementRule>,
    /// CORS preflights pass without a token (as Istio sets it).
    #[prost(bool, tag = "4")]
    pub bypass_cors_preflight: bool,
}

/// The `jwt_authn` filter of the RequestAuthentications `policies` (in
/// order); `None` without JWT rules.
pub fn filter(policies: &[(&Resource, &RequestAuthenticationSpec)]) -> Option<HttpFilter> {
    let rules: Vec<&JwtRule> = policies.iter().flat_map(|(_, s)| &s.jwt_rules).collect();
    if rules.is_empty() {
        return None;
    }
    let mut providers = BTreeMap::new();
    let mut any = Vec::new();
    for (i, rule) in rules.into_iter().enumerate() {
        let name = format!("origins-{i}");
        providers.insert(name.clone(), provider(rule));
        any.push(JwtRequirement {
            requires_type: Some(jwt_requirement::RequiresType::ProviderName(name)),
        });
    }
    any.push(JwtRequirement {
        requires_type: Some(jwt_requirement::RequiresType::AllowMissing(Empty {})),
    });
    let config = JwtAuthentication {
        providers,
        rules: vec![RequirementRule {
            r#match: Some(RouteMatch {
                path_specifier: Some(route_match::PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            requirement_type: Some(requirement_rule::RequirementType::Requires(
                JwtRequirement {
                    requires_type: Some(jwt_requirement::RequiresType::RequiresAny(
                        JwtRequirementOrList { requirements: any },
                    )),
                },
            )),
        }],
        bypass_cors_preflight: true,
    };
    Some(http_filter(
        JWT_AUTHN_FILTER,
        Any {
            type_url: JWT_AUTHN_TYPE.to_string(),
            value: config.encode_to_vec(),
        },
    ))
}

fn provider(rule: &JwtRule) -> JwtProvider {
    let source = match jwks(rule) {
        Jwks::Inline(json) => data_source::Specifier::InlineString(json),
        Jwks::File(path) => data_source::Specifier::Filename(path),
        Jwks::Unfetched(_) => data_source::Specifier::InlineString(UNFETCHABLE_JWKS.into()),
    };
    JwtProvider {
        issuer: rule.issuer.clone(),
        audiences: rule.audiences.clone(),
        forward: rule.forward_original_token.unwrap_or(false),
        from_headers: rule
            .from_headers
            .iter()
            .map(|h| JwtHeader {
                name: h.name.clone(),
                value_prefix: h.prefix.clone().unwrap_or_default(),
            })
            .collect(),
        from_params: rule.from_params.clone(),
        from_cookies: rule.from_cookies.clone(),
        forward_payload_header: rule.output_payload_to_header.clone().unwrap_or_default(),
        payload_in_metadata: JWT_PAYLOAD_KEY.to_string(),
        claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .map(|c| JwtClaimToHeader {
                header_name: c.header.clone(),
                claim_name: c.claim.clone(),
                ..Default::default()
            })
            .collect(),
        jwks_source_specifier: Some(jwt_provider::JwksSourceSpecifier::LocalJwks(DataSource {
            specifier: Some(source),
            ..Default::default()
        })),
        ..Default::default()
    }
}

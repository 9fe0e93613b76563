//! `RequestAuthentication` and its `JWTRule` (istio/api
//! `security/v1beta1/request_authentication.proto` and `jwt.proto`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::istio::types::{Duration, PolicyTargetReference, WorkloadSelector};

/// The spec of a `RequestAuthentication`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// Workloads the policy applies to; all workloads of the namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// The single resource (a Gateway or Service) the policy applies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    /// The resources the policy applies to; exclusive with `selector` and `targetRef`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    /// The JWTs the selected workloads' proxies validate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jwt_rules: Vec<JwtRule>,
}

/// `JWTRule`: how to validate JWTs from one issuer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The issuer (`iss` claim) of the JWT; required.
    #[serde(default)]
    pub issuer: String,
    /// Audiences (`aud` claim) allowed to access; any audience when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// URL of the issuer's JSON Web Key Set; exclusive with `jwks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The snake_case spelling `jwks_uri` the CRD also accepts; same meaning as `jwksUri`.
    #[serde(default, rename = "jwks_uri", skip_serializing_if = "Option::is_none")]
    pub jwks_uri_snake: Option<String>,
    /// Inline JSON Web Key Set; exclusive with `jwksUri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<String>,
    /// Headers the JWT is read from (default `Authorization: Bearer`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the JWT is read from (default `access_token`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_params: Vec<String>,
    /// Cookies the JWT is read from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from_cookies: Vec<String>,
    /// Header to receive the base64url-encoded payload of a verified JWT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_payload_to_header: Option<String>,
    /// Keep the original token in the request forwarded upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward_original_token: Option<bool>,
    /// Claims copied to request headers after successful verification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Claims whose string value holds space-delimited items (e.g. `scope`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub space_delimited_claims: Vec<String>,
    /// How long to wait for the JWKS to be fetched (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl JwtRule {
    /// The JWKS URL, whichever spelling (`jwksUri` or `jwks_uri`) set it.
    pub fn jwks_url(&self) -> Option<&str> {
        self.jwks_uri.as_deref().or(self.jwks_uri_snake.as_deref())
    }
}

/// `JWTHeader`: a header location for the JWT.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// The HTTP header name; required.
    #[serde(default)]
    pub name: String,
    /// Prefix stripped before decoding the token (e.g. `Bearer `).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
}

/// `ClaimToHeader`: copy one claim into one request header.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Name of the header to create; `^[-_A-Za-z0-9]+$`.
    #[serde(default)]
    pub header: String,
    /// Name of the claim to copy (nested claims as `a.b`).
    #[serde(default)]
    pub claim: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(v: serde_json::Value) -> Result<RequestAuthenticationSpec, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn decodes_a_full_rule() {
        let spec = decode(json!({
            "selector": {"matchLabels": {"app": "httpbin"}},
            "jwtRules": [{
                "issuer": "issuer-foo",
                "audiences": ["bookstore_android.apps.example.com"],
                "jwksUri": "https://example.com/.well-known/jwks.json",
                "fromHeaders": [{"name": "x-goog-iap-jwt-assertion"}, {"name": "Authorization", "prefix": "Bearer "}],
                "fromParams": ["my_token"],
                "fromCookies": ["auth-token"],
                "outputPayloadToHeader": "x-jwt-payload",
                "forwardOriginalToken": true,
                "outputClaimToHeaders": [{"header": "x-jwt-claim-foo", "claim": "foo"}],
                "spaceDelimitedClaims": ["scope"],
                "timeout": "20s"
            }]
        }))
        .unwrap();
        let rule = &spec.jwt_rules[0];
        assert_eq!(rule.issuer, "issuer-foo");
        assert_eq!(
            rule.jwks_url(),
            Some("https://example.com/.well-known/jwks.json")
        );
        assert_eq!(rule.from_headers[1].prefix.as_deref(), Some("Bearer "));
        assert_eq!(rule.timeout.as_ref().unwrap().as_std().as_secs(), 20);
        assert_eq!(rule.forward_original_token, Some(true));
        let back = serde_json::to_value(&spec).unwrap();
        assert_eq!(decode(back).unwrap(), spec);
    }

    #[test]
    fn accepts_inline_jwks_target_refs_and_snake_jwks_uri() {
        let spec = decode(json!({
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw"},
            "jwtRules": [
                {"issuer": "a", "jwks": "{\"keys\": []}"},
                {"issuer": "b", "jwks_uri": "https://b.example.com/jwks"}
            ]
        }))
        .unwrap();
        assert_eq!(
            spec.jwt_rules[1].jwks_url(),
            Some("https://b.example.com/jwks")
        );
        assert!(spec.target_ref.is_some());
    }

    #[test]
    fn refuses_unknown_fields_and_bad_durations() {
        let err = decode(json!({"jwtRules": [{"issuer": "a", "jwksURI": "x"}]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `jwksURI`"), "{err}");
        let err = decode(json!({"jwtRules": [{"issuer": "a", "timeout": "5 seconds"}]}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid duration"), "{err}");
        assert!(decode(json!({"jwtRules": [{"issuer": "a", "timeout": "-1s"}]})).is_err());
        assert!(
            decode(json!({"jwtRules": [{"fromHeaders": [{"name": "a", "value": "b"}]}]})).is_err()
        );
    }
}

//! Bearer tokens checked by the Kubernetes API server (a TokenReview), as Istio's
//! CA does when it cannot verify tokens itself.
//!
//! A token goes: POST `authentication.k8s.io/v1` TokenReview with `spec.token` and
//! `spec.audiences` → the answer must say `authenticated: true`, name a
//! `system:serviceaccount:<ns>:<sa>` user and, when it lists audiences, share one
//! with ours → the identity `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`. A review that
//! says no is a refusal carrying `status.error`; an API call that fails makes the
//! authenticator unavailable (the caller may retry).

use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::{Api, PostParams};

use super::jwt::{check_token_size, service_account_caller};
use super::{AuthError, BearerAuthenticator, Caller};

/// The authenticator's name.
pub const NAME: &str = "token-review";

/// Sends bearer tokens to the API server for review.
#[derive(Clone)]
pub struct TokenReviewAuthenticator {
    client: kube::Client,
    audiences: Vec<String>,
    trust_domain: String,
}

impl std::fmt::Debug for TokenReviewAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewAuthenticator")
            .field("audiences", &self.audiences)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl TokenReviewAuthenticator {
    /// Reviews tokens through `client`, asking for `audiences` (Istio: `istio-ca`),
    /// naming identities in `trust_domain`.
    pub fn new(client: kube::Client, audiences: Vec<String>, trust_domain: String) -> Self {
        TokenReviewAuthenticator {
            client,
            audiences,
            trust_domain,
        }
    }

    /// Reviews `token` and names its service account.
    pub async fn review(&self, token: &str) -> Result<Caller, AuthError> {
        let refuse = |reason: String| AuthError::Refused {
            authenticator: NAME,
            reason,
        };
        check_token_size(NAME, token)?;
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: (!self.audiences.is_empty()).then(|| self.audiences.clone()),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let answer = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable {
                authenticator: NAME,
                reason: format!("TokenReview failed: {e}"),
            })?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.filter(|e| !e.is_empty());
            return Err(refuse(format!(
                "the API server did not authenticate the token: {}",
                why.as_deref().unwrap_or("no reason given")
            )));
        }
        if let Some(theirs) = status.audiences.filter(|a| !a.is_empty())
            && !self.audiences.is_empty()
            && !theirs.iter().any(|a| self.audiences.contains(a))
        {
            return Err(refuse(format!(
                "wrong audience (got {theirs:?}, want one of {:?})",
                self.audiences
            )));
        }
        let username = status.user.and_then(|u| u.username).unwrap_or_default();
        service_account_caller(NAME, "user", username, &self.trust_domain).map_err(refuse)
    }
}

impl BearerAuthenticator for TokenReviewAuthenticator {
    const NAME: &'static str = NAME;

    fn verify_token<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, AuthError>> {
        Box::pin(self.review(token))
    }
}

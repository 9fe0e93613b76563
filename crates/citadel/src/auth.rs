//! Caller authentication: who is asking for a certificate.
//!
//! Each [`Authenticator`] looks at the call's credentials ([`CallContext`]: the
//! `authorization` metadata and the TLS client certificate) and either names the
//! caller, says its kind of credential is absent (`Ok(None)`), or refuses the
//! credential with a reason. [`Authenticators`] tries them in order, as Istio's CA
//! does: the first that names the caller wins; if none does, the caller gets every
//! authenticator's reason.
//!
//! Implementations: [`jwt`] (bearer JWT against a JWKS: Kubernetes service-account
//! tokens and `mizzen token create` tokens), [`token_review`] (Kubernetes
//! TokenReview) and [`client_cert`] (a certificate this CA issued, for renewal).

use std::sync::Arc;

use common::spiffe::Identity;
use futures::future::BoxFuture;
use rustls_pki_types::CertificateDer;

pub mod client_cert;
pub mod jwks;
pub mod jwt;
pub mod token_review;

/// What the server knows about a call before authenticating it.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// The `authorization` metadata value, if any (e.g. `Bearer eyJ...`).
    pub authorization: Option<String>,
    /// The client's certificate chain from the TLS handshake, leaf first (DER).
    pub peer_certs: Vec<CertificateDer<'static>>,
}

impl CallContext {
    /// The bearer token, if the `authorization` value is `Bearer <token>`.
    pub fn bearer(&self) -> Option<&str> {
        let value = self.authorization.as_deref()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty())
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The identity the caller may hold certificates for.
    pub identity: Identity,
    /// Which authenticator vouched for it (`jwt`, `token-review`, `client-cert`).
    pub authenticator: &'static str,
    /// Who asked, for the ledger: the token's subject, or the client certificate's
    /// serial number.
    pub requester: String,
}

/// Why a caller was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The call carried no credential any authenticator understands.
    #[error(
        "no credentials: send a bearer token in the `authorization` metadata (a Kubernetes service-account token, or one from `mizzen token create`), or present a certificate issued by this CA"
    )]
    NoCredentials,
    /// A credential was present and refused.
    #[error("{authenticator}: {reason}")]
    Refused {
        /// The authenticator that refused it.
        authenticator: &'static str,
        /// Why, in words the caller can act on.
        reason: String,
    },
    /// The authenticator could not decide (its backend was unreachable).
    #[error("{authenticator} unavailable: {reason}")]
    Unavailable {
        /// The authenticator.
        authenticator: &'static str,
        /// What failed.
        reason: String,
    },
    /// Several authenticators refused; each reason is kept.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    All(Vec<AuthError>),
}

/// One way of authenticating callers.
pub trait Authenticator: Send + Sync {
    /// A short name for logs, metrics and the ledger.
    fn name(&self) -> &'static str;

    /// Names the caller, or `Ok(None)` when the call has no credential of this
    /// authenticator's kind, or an error when it has one that is not good.
    fn authenticate<'a>(
        &'a self,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Option<Caller>, AuthError>>;
}

/// An authenticator of bearer tokens. It is an [`Authenticator`] through the
/// blanket impl: a call without a bearer token is not its kind (`Ok(None)`).
pub trait BearerAuthenticator: Send + Sync {
    /// A short name for logs, metrics and the ledger.
    const NAME: &'static str;

    /// Verifies `token` and names its holder.
    fn verify_token<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Caller, AuthError>>;
}

impl<T: BearerAuthenticator> Authenticator for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn authenticate<'a>(
        &'a self,
        ctx: &'a CallContext,
    ) -> BoxFuture<'a, Result<Option<Caller>, AuthError>> {
        Box::pin(async move {
            match ctx.bearer() {
                None => Ok(None),
                Some(token) => self.verify_token(token).await.map(Some),
            }
        })
    }
}

/// The configured authenticators, tried in order.
#[derive(Clone, Default)]
pub struct Authenticators {
    chain: Vec<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for Authenticators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.chain.iter().map(|a| a.name()))
            .finish()
    }
}

impl Authenticators {
    /// An empty chain (authenticates nobody).
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an authenticator.
    pub fn with(mut self, a: Arc<dyn Authenticator>) -> Self {
        self.chain.push(a);
        self
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<&'static str> {
        self.chain.iter().map(|a| a.name()).collect()
    }

    /// The first authenticator that names the caller wins; otherwise every reason.
    pub async fn authenticate(&self, ctx: &CallContext) -> Result<Caller, AuthError> {
        let mut errors = Vec::new();
        for a in &self.chain {
            match a.authenticate(ctx).await {
                Ok(Some(caller)) => return Ok(caller),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Err(AuthError::NoCredentials),
            1 => Err(errors.remove(0)),
            _ => Err(AuthError::All(errors)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Result<Option<Caller>, AuthError>);
    impl Authenticator for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn authenticate<'a>(
            &'a self,
            _: &'a CallContext,
        ) -> BoxFuture<'a, Result<Option<Caller>, AuthError>> {
            Box::pin(async move { self.1.clone() })
        }
    }

    fn caller(sa: &str) -> Caller {
        Caller {
            identity: Identity::new("cluster.local", "default", sa).unwrap(),
            authenticator: "x",
            requester: sa.into(),
        }
    }

    #[tokio::test]
    async fn first_that_names_the_caller_wins_and_reasons_are_kept() {
        let refuse = |n| AuthError::Refused {
            authenticator: n,
            reason: "bad".into(),
        };
        let chain = Authenticators::new()
            .with(Arc::new(Fixed("a", Ok(None))))
            .with(Arc::new(Fixed("b", Err(refuse("b")))))
            .with(Arc::new(Fixed("c", Ok(Some(caller("c"))))));
        let ctx = CallContext::default();
        assert_eq!(chain.authenticate(&ctx).await.unwrap(), caller("c"));

        let none = Authenticators::new().with(Arc::new(Fixed("a", Ok(None))));
        assert_eq!(none.authenticate(&ctx).await, Err(AuthError::NoCredentials));

        let two = Authenticators::new()
            .with(Arc::new(Fixed("a", Err(refuse("a")))))
            .with(Arc::new(Fixed("b", Err(refuse("b")))));
        let err = two.authenticate(&ctx).await.unwrap_err().to_string();
        assert_eq!(err, "a: bad; b: bad");
    }

    #[test]
    fn bearer_is_read_from_authorization() {
        let ctx = |v: &str| CallContext {
            authorization: Some(v.into()),
            ..Default::default()
        };
        assert_eq!(ctx("Bearer abc").bearer(), Some("abc"));
        assert_eq!(ctx("bearer  abc ").bearer(), Some("abc"));
        assert_eq!(ctx("Basic abc").bearer(), None);
        assert_eq!(ctx("Bearer ").bearer(), None);
    }
}

//! The gRPC surface: Istio's `IstioCertificateService` and Mizzen's `TrustBundle`.
//!
//! `CreateCertificate` runs, in order: count the request → authenticate the caller
//! from the `authorization` metadata or the TLS client certificate
//! (UNAUTHENTICATED otherwise) → parse and verify the CSR (INVALID_ARGUMENT) → check
//! that every SAN it asks for is the caller's SPIFFE ID (PERMISSION_DENIED naming
//! both) → sign with the TTL capped by the maximum → record the issuance in the
//! ledger, durably (UNAVAILABLE, and no certificate, when that fails) → answer the
//! chain leaf first, root last.

use std::sync::Arc;

use common::pb::ca::v1::trust_bundle_server::{TrustBundle, TrustBundleServer};
use common::pb::ca::v1::{GetTrustBundleRequest, GetTrustBundleResponse};
use common::pb::istio_ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use common::pb::istio_ca::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Request, Response, Status};

use crate::auth::{AuthError, Authenticators, CallContext, Caller};
use crate::ca::Ca;
use crate::csr::{self, San};
use crate::ledger::{Issuance, Ledger};
use crate::metrics::Metrics;

/// The largest gRPC request accepted, in bytes (a CSR is at most
/// [`csr::MAX_CSR_BYTES`]; the rest is headroom for metadata).
pub const MAX_REQUEST_BYTES: usize = csr::MAX_CSR_BYTES + 16 * 1024;

/// Istio's metadata key for a trusted node asking on behalf of another identity.
const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// The CA service, shared by every connection.
#[derive(Clone)]
pub struct CaService {
    inner: Arc<Inner>,
}

struct Inner {
    ca: Arc<Ca>,
    auth: Authenticators,
    ledger: Ledger,
    metrics: Metrics,
}

impl CaService {
    /// A service signing with `ca` for callers `auth` names, recording in `ledger`.
    pub fn new(ca: Arc<Ca>, auth: Authenticators, ledger: Ledger, metrics: Metrics) -> Self {
        CaService {
            inner: Arc::new(Inner {
                ca,
                auth,
                ledger,
                metrics,
            }),
        }
    }

    /// The tonic service for `IstioCertificateService`, with the request size bound.
    pub fn into_server(self) -> IstioCertificateServiceServer<CaService> {
        IstioCertificateServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// The tonic service for `TrustBundle`.
    pub fn trust_bundle_server(&self) -> TrustBundleServer<TrustBundleService> {
        TrustBundleServer::new(TrustBundleService {
            ca: self.inner.ca.clone(),
        })
    }

    /// Signs one request: the whole path of the module doc, without gRPC framing.
    pub async fn create(
        &self,
        ctx: &CallContext,
        req: IstioCertificateRequest,
    ) -> Result<IstioCertificateResponse, Status> {
        let m = &self.inner.metrics;
        m.csr_count.inc();
        let caller = match self.inner.auth.authenticate(ctx).await {
            Ok(caller) => caller,
            Err(e) => {
                m.authentication_failure_count.inc();
                tracing::info!(error = %e, "refused a signing request: caller not authenticated");
                return Err(match e {
                    AuthError::Unavailable { .. } => Status::unavailable(e.to_string()),
                    _ => Status::unauthenticated(e.to_string()),
                });
            }
        };
        if let Some(meta) = &req.metadata
            && meta.fields.contains_key(IMPERSONATED_IDENTITY)
        {
            m.csr_parsing_err_count.inc();
            return Err(Status::permission_denied(format!(
                "metadata {IMPERSONATED_IDENTITY} (node impersonation) is not supported by citadel; ask with the workload's own credentials"
            )));
        }
        if req.validity_duration < 0 {
            m.csr_parsing_err_count.inc();
            return Err(Status::invalid_argument(format!(
                "validity_duration is {}; give a positive number of seconds, or 0 for the default",
                req.validity_duration
            )));
        }
        let csr = csr::parse(&req.csr).map_err(|e| {
            m.csr_parsing_err_count.inc();
            Status::invalid_argument(e.to_string())
        })?;
        check_sans(&csr.sans, &caller).inspect_err(|_| {
            m.csr_parsing_err_count.inc();
        })?;

        let ca = &self.inner.ca;
        let ttl = ca.ttl_for(req.validity_duration);
        let signed = ca.sign(&csr, &caller.identity, ttl).map_err(|e| {
            m.csr_sign_err_count.inc();
            tracing::error!(error = %e, identity = %caller.identity, "signing failed");
            Status::internal(format!("signing failed: {e}"))
        })?;
        let issuance = Issuance {
            serial: signed.serial.clone(),
            spiffe_id: caller.identity.uri(),
            not_before: signed.not_before,
            not_after: signed.not_after,
            requester: caller.requester.clone(),
            key_algorithm: csr.key_algorithm.clone(),
            authenticator: caller.authenticator.to_string(),
        };
        if let Err(e) = self.inner.ledger.record(issuance).await {
            m.csr_sign_err_count.inc();
            tracing::error!(error = %e, "the ledger refused an issuance; no certificate returned");
            return Err(Status::unavailable(format!(
                "the issuance could not be recorded in the ledger ({e}); no certificate was issued, retry later"
            )));
        }
        m.success_cert_issuance_count.inc();
        tracing::debug!(identity = %caller.identity, serial = %signed.serial, by = caller.authenticator, "issued");
        Ok(IstioCertificateResponse {
            cert_chain: signed.chain,
        })
    }
}

/// Every SAN must be the caller's SPIFFE ID, and there must be one.
fn check_sans(sans: &[San], caller: &Caller) -> Result<(), Status> {
    let want = caller.identity.uri();
    if sans.is_empty() {
        return Err(Status::invalid_argument(format!(
            "the CSR has no subject alternative name; request the URI SAN {want}"
        )));
    }
    for san in sans {
        if *san != San::Uri(want.clone()) {
            return Err(Status::permission_denied(format!(
                "the CSR asks for {san}, but the caller is authenticated as {want} (by {}); a workload may only request its own identity",
                caller.authenticator
            )));
        }
    }
    Ok(())
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let ctx = CallContext {
            authorization: request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            peer_certs: request
                .peer_certs()
                .map(|certs| certs.as_ref().clone())
                .unwrap_or_default(),
        };
        self.create(&ctx, request.into_inner())
            .await
            .map(Response::new)
    }
}

/// Serves the roots to anyone.
#[derive(Clone)]
pub struct TrustBundleService {
    ca: Arc<Ca>,
}

#[tonic::async_trait]
impl TrustBundle for TrustBundleService {
    async fn get_trust_bundle(
        &self,
        _: Request<GetTrustBundleRequest>,
    ) -> Result<Response<GetTrustBundleResponse>, Status> {
        Ok(Response::new(GetTrustBundleResponse {
            roots: self.ca.roots().to_vec(),
            trust_domain: self.ca.trust_domain().to_string(),
        }))
    }
}

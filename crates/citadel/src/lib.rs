//! Citadel: Mizzen's certificate authority. It will sign workload CSRs over Istio's CA gRPC API (istio.v1.auth.IstioCertificateService) with SPIFFE identities and keep an issuance ledger.
//!
//! Not built yet: this crate holds the place of the service in the workspace so the
//! layout of ARCHITECTURE.md is real. Its work is tracked by the project's issues.

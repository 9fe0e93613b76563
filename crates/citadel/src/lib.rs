//! Citadel: Mizzen's certificate authority.
//!
//! It owns the mesh's signing keys and root of trust, decides who may hold which
//! SPIFFE identity, signs workload CSRs over Istio's CA API
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`) and keeps a durable
//! ledger of every certificate it issued. It does not distribute certificates to
//! workloads (the proxy's certificate manager asks for them) nor rotate its own root.
//!
//! A signing request travels: [`grpc`] receives it over TLS and builds a
//! [`auth::CallContext`] from the `authorization` metadata and the client
//! certificate → [`auth::Authenticators`] names the caller (JWT, TokenReview or a
//! certificate this CA issued) → [`csr::parse`] checks the CSR's size, signature and
//! SANs, which must all equal the caller's identity → [`ca::Ca::sign`] issues a leaf
//! for that identity with the requested TTL capped by the maximum → [`ledger`]
//! records the issuance (group-committed, durable before the answer) → the chain goes
//! back leaf first, root last. [`metrics`] counts each step; [`app`] wires the
//! listeners, flags and shutdown. In a Kubernetes cluster, [`cluster`] takes the CA
//! from Istio's Secrets and keeps the root ConfigMaps, the webhooks' serving
//! certificates and their `caBundle`s.

pub mod app;
pub mod auth;
pub mod ca;
pub mod cluster;
pub mod csr;
mod files;
pub mod grpc;
pub mod ledger;
pub mod local_issuer;
pub mod metrics;

//! Generated protobuf and gRPC types for Mizzen's own APIs.
#![allow(missing_docs, clippy::all)]

/// `mizzen.galley.v1`: galley's validation service.
pub mod galley {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("mizzen.galley.v1");
    }
}

/// `mizzen.ca.v1`: citadel's trust-bundle service (Mizzen's addition).
pub mod ca {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("mizzen.ca.v1");
    }
}

/// `istio.v1.auth`: Istio's CA API (`IstioCertificateService`), unchanged.
pub mod istio_ca {
    tonic::include_proto!("istio.v1.auth");
}

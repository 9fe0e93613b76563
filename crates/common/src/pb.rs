//! Generated protobuf and gRPC types for Mizzen's own APIs.
#![allow(missing_docs, clippy::all)]

/// `mizzen.galley.v1`: galley's validation service.
pub mod galley {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("mizzen.galley.v1");
    }
}

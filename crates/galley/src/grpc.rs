//! The gRPC `mizzen.galley.v1.Validation/Validate` service.

use common::pb::galley::v1 as pb;
use tonic::{Request, Response, Status};

use crate::message::Message;
use crate::metrics::Metrics;
use crate::{CheckOptions, check};

/// Largest request accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024 * 1024;

/// The service implementation.
#[derive(Clone)]
pub struct ValidationService {
    metrics: Metrics,
}

impl ValidationService {
    /// A service that counts into `metrics`.
    pub fn new(metrics: Metrics) -> Self {
        ValidationService { metrics }
    }

    /// The tonic server wrapper, with the request size bound.
    pub fn into_server(self) -> pb::validation_server::ValidationServer<Self> {
        pb::validation_server::ValidationServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

/// A message in the wire form.
pub fn to_pb(m: &Message) -> pb::Message {
    let (kind, name, namespace) = m
        .resource
        .as_ref()
        .map(|r| (r.kind.clone(), r.name.clone(), r.namespace.clone()))
        .unwrap_or_default();
    let (source, line) = m
        .origin
        .as_ref()
        .map(|o| (o.file.clone(), o.line as u32))
        .unwrap_or_default();
    pb::Message {
        code: m.code.to_string(),
        level: m.level.as_str().to_string(),
        kind,
        name,
        namespace,
        source,
        line,
        field_path: m.field.clone().unwrap_or_default(),
        text: m.text.clone(),
        formatted: m.to_string(),
    }
}

#[tonic::async_trait]
impl pb::validation_server::Validation for ValidationService {
    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let req = request.into_inner();
        let source = if req.source_name.is_empty() {
            "request".to_string()
        } else {
            req.source_name
        };
        let opts = CheckOptions {
            default_namespace: if req.default_namespace.is_empty() {
                "default".into()
            } else {
                req.default_namespace
            },
            analyze: req.analyze,
        };
        // Validation is CPU work: keep it off the async workers.
        let metrics = self.metrics.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let loaded = common::load::load_str(&req.yaml, &source);
            let outcome = check(&loaded, &opts);
            for r in &loaded.resources {
                let failed = outcome.messages.iter().any(|m| {
                    m.is_error()
                        && m.origin.as_ref().is_some_and(|o| o.file == *r.origin.file)
                        && m.resource
                            .as_ref()
                            .is_some_and(|x| x.kind == r.kind && x.name == r.name())
                });
                metrics.record(&r.api_version, &r.kind, !failed, "invalid_resource");
            }
            for e in &loaded.errors {
                metrics.record(
                    e.api_version.as_deref().unwrap_or(""),
                    e.kind.as_deref().unwrap_or("unknown"),
                    false,
                    "decode_error",
                );
            }
            outcome
        })
        .await
        .map_err(|e| Status::internal(format!("validation task failed: {e}")))?;
        Ok(Response::new(pb::ValidateResponse {
            valid: !outcome.has_errors(),
            resources: outcome.resources as u32,
            messages: outcome.messages.iter().map(to_pb).collect(),
        }))
    }
}

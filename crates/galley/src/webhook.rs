//! The Kubernetes ValidatingAdmissionWebhook: `POST /validate` with an
//! AdmissionReview v1, answered like Istio's `validation.istio.io` webhook —
//! denied with the field path and reason when Istio would refuse the object,
//! allowed with warnings when it is only questionable.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::resource::{Origin, decode};
use common::yaml::Node;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};

use crate::message::{Level, Message};
use crate::metrics::Metrics;

/// Largest AdmissionReview accepted (Kubernetes objects are at most ~1.5 MiB).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// The webhook's routes: `/validate` (and `/validate/` for Istio's path spelling).
pub fn router(metrics: Metrics) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .route("/validate/", post(validate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(metrics)
}

async fn validate(State(metrics): State<Metrics>, body: Bytes) -> Response {
    let request = match common::admission::read_request(&body) {
        Ok(r) => r,
        Err(answer) => return *answer,
    };
    let response = tokio::task::spawn_blocking(move || review_request(&request, &metrics))
        .await
        .unwrap_or_else(|e| AdmissionResponse::invalid(format!("validation failed: {e}")));
    axum::Json(response.into_review()).into_response()
}

/// Decides one admission request.
pub fn review_request(
    req: &AdmissionRequest<DynamicObject>,
    metrics: &Metrics,
) -> AdmissionResponse {
    let resp = AdmissionResponse::from(req);
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return resp;
    }
    let Some(object) = &req.object else {
        return resp;
    };
    let value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return resp.deny(format!("cannot read the object: {e}")),
    };
    let default_ns = req.namespace.clone().unwrap_or_else(|| "default".into());
    let origin = Origin {
        file: "admission".into(),
        line: 0,
    };
    let resource = match decode(Node::from_json(&value), origin) {
        Ok(r) => r,
        Err(e) => {
            metrics.record(
                e.api_version.as_deref().unwrap_or(""),
                e.kind.as_deref().unwrap_or("unknown"),
                false,
                "decode_error",
            );
            let m = Message::from_decode_error(&e, &default_ns);
            return resp.deny(format!("configuration is invalid: {}", m.text));
        }
    };
    let messages = crate::validate_messages(&resource, &default_ns);
    let errors: Vec<&Message> = messages.iter().filter(|m| m.is_error()).collect();
    metrics.record(
        &resource.api_version,
        &resource.kind,
        errors.is_empty(),
        "invalid_resource",
    );
    let warnings: Vec<String> = messages
        .iter()
        .filter(|m| m.level == Level::Warning)
        .map(|m| m.text.clone())
        .collect();
    let mut resp = if errors.is_empty() {
        resp
    } else {
        let text: Vec<&str> = errors.iter().map(|m| m.text.as_str()).collect();
        let mut denied = resp.deny(format!("configuration is invalid: {}", text.join("; ")));
        denied.result.code = 400;
        denied.result.reason = "Invalid".into();
        denied
    };
    if !warnings.is_empty() {
        resp.warnings = Some(warnings);
    }
    resp
}

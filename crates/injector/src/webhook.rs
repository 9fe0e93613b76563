//! The Kubernetes MutatingAdmissionWebhook: `POST /inject` with an
//! AdmissionReview v1 for a pod, answered as Istio's injector answers — allowed
//! with a JSONPatch from the pod to the injected pod, allowed unchanged when
//! the pod is not to be injected ([`crate::select::required`]), refused with
//! the reason when its annotations cannot be honoured — and counted in Istio's
//! `sidecar_injection_*` metrics.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::options::Options;

/// Largest AdmissionReview accepted (Kubernetes objects are at most ~1.5 MiB).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Istio's injector counters.
#[derive(Clone, Default, Debug)]
pub struct Metrics {
    /// Every admission request.
    pub requests: Counter,
    /// Pods injected.
    pub success: Counter,
    /// Pods left alone by the selection.
    pub skip: Counter,
    /// Requests refused (bad pod, bad annotation).
    pub failure: Counter,
}

impl Metrics {
    /// New counters, registered in `registry` with Istio's names.
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        for (name, help, c) in [
            (
                "sidecar_injection_requests",
                "Sidecar injection requests",
                &m.requests,
            ),
            (
                "sidecar_injection_success",
                "Successful sidecar injections",
                &m.success,
            ),
            (
                "sidecar_injection_skip",
                "Pods the selection left without a sidecar",
                &m.skip,
            ),
            (
                "sidecar_injection_failure",
                "Failed sidecar injections",
                &m.failure,
            ),
        ] {
            registry.register(name, help, c.clone());
        }
        m
    }
}

#[derive(Clone)]
struct Shared {
    options: Arc<Options>,
    metrics: Metrics,
}

/// The webhook's routes: `/inject` (and `/inject/`).
pub fn router(options: Arc<Options>, metrics: Metrics) -> Router {
    Router::new()
        .route("/inject", post(handle))
        .route("/inject/", post(handle))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(Shared { options, metrics })
}

async fn handle(State(shared): State<Shared>, body: Bytes) -> Response {
    let request = match common::admission::read_request(&body) {
        Ok(r) => r,
        Err(answer) => return *answer,
    };
    let response = review_request(&request, &shared.options, &shared.metrics);
    axum::Json(encode_review(response)).into_response()
}

/// The AdmissionReview JSON of `response`, with the patch base64-encoded as
/// the API server requires (Go's `[]byte`): kube-core's types would write it
/// as an array of numbers (kube-rs/kube#1781), which the API server refuses.
pub fn encode_review(response: AdmissionResponse) -> serde_json::Value {
    let patch = response.patch.clone();
    let mut review = serde_json::to_value(response.into_review()).unwrap_or_default();
    if let (Some(bytes), Some(field)) = (patch, review.pointer_mut("/response/patch")) {
        *field = serde_json::Value::String(base64(&bytes));
    }
    review
}

/// Standard base64 (RFC 4648 section 4) with padding: how Kubernetes writes
/// bytes in JSON (k8s-openapi's `ByteString`).
pub fn base64(bytes: &[u8]) -> String {
    match serde_json::to_value(k8s_openapi::ByteString(bytes.to_vec())) {
        Ok(serde_json::Value::String(text)) => text,
        _ => String::new(),
    }
}

/// Decides one admission request.
pub fn review_request(
    req: &AdmissionRequest<DynamicObject>,
    options: &Options,
    metrics: &Metrics,
) -> AdmissionResponse {
    metrics.requests.inc();
    let resp = AdmissionResponse::from(req);
    if req.operation != Operation::Create || req.kind.kind != "Pod" || !req.kind.group.is_empty() {
        return resp;
    }
    let Some(object) = &req.object else {
        return resp;
    };
    let fail = |resp: AdmissionResponse, why: String| {
        metrics.failure.inc();
        tracing::warn!(namespace = ?req.namespace, "injection refused: {why}");
        resp.deny(why)
    };
    let original = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => return fail(resp, format!("cannot read the pod: {e}")),
    };
    let mut pod: Pod = match serde_json::from_value(original) {
        Ok(p) => p,
        Err(e) => return fail(resp, format!("the object is not a Pod: {e}")),
    };
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .or_else(|| req.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    if let Err(skip) = crate::select::required(&pod, &namespace, &options.values) {
        metrics.skip.inc();
        tracing::debug!(pod = %name, %namespace, "not injected: {skip}");
        return resp;
    }
    // Managed fields can be large and never change the result (Istio drops
    // them too); the patch is computed without them, so it leaves them alone.
    pod.metadata.managed_fields = None;
    let before = match serde_json::to_value(&pod) {
        Ok(v) => v,
        Err(e) => return fail(resp, format!("cannot encode the pod: {e}")),
    };
    let (injected, warnings) = match crate::template::inject_with_warnings(&pod, options) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                resp,
                format!("sidecar injection failed for pod {name} in {namespace}: {e}"),
            );
        }
    };
    let after = match serde_json::to_value(&injected) {
        Ok(v) => v,
        Err(e) => return fail(resp, format!("cannot encode the injected pod: {e}")),
    };
    let patch = json_patch::diff(&before, &after);
    let mut resp = match resp.with_patch(patch) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                AdmissionResponse::from(req),
                format!("cannot encode the patch: {e}"),
            );
        }
    };
    metrics.success.inc();
    tracing::info!(pod = %name, %namespace, native = options.native_sidecars, "injected");
    if !warnings.is_empty() {
        resp.warnings = Some(warnings);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }
}

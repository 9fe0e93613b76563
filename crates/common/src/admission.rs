//! What every admission webhook does first: read the body as an AdmissionReview
//! v1 and take its request out (galley's `/validate`, the injector's `/inject`).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};

/// The request of the AdmissionReview in `body`, or the answer to give instead:
/// 400 when the body is not an AdmissionReview, an `invalid` review when it has
/// no request.
pub fn read_request(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, Box<Response>> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body).map_err(|e| {
        Box::new(
            (
                StatusCode::BAD_REQUEST,
                format!("the body is not an AdmissionReview: {e}\n"),
            )
                .into_response(),
        )
    })?;
    review.try_into().map_err(|_| {
        let response = AdmissionResponse::invalid("the AdmissionReview has no request");
        Box::new(axum::Json(response.into_review()).into_response())
    })
}

//! Calls from one bookinfo service to another: plain HTTP/1.1 to a base URL
//! (the sidecar, when there is one, captures it), with the request's
//! propagated headers, a timeout and optional retries.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;

/// The headers copied from an incoming request onto every upstream call:
/// those Istio's bookinfo propagates (tracing, identity, the user).
pub const PROPAGATED: &[&str] = &[
    "x-request-id",
    "x-ot-span-context",
    "x-datadog-trace-id",
    "x-datadog-parent-id",
    "x-datadog-sampling-priority",
    "traceparent",
    "tracestate",
    "x-cloud-trace-context",
    "grpc-trace-bin",
    "x-b3-traceid",
    "x-b3-spanid",
    "x-b3-parentspanid",
    "x-b3-sampled",
    "x-b3-flags",
    "b3",
    "sw8",
    "user-agent",
    "cookie",
    "authorization",
    "jwt",
    "end-user",
];

/// The propagated headers of `incoming`.
pub fn propagated(incoming: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in PROPAGATED {
        for value in incoming.get_all(*name) {
            out.append(*name, value.clone());
        }
    }
    out
}

/// Why an upstream call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer within the timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection or the exchange failed.
    #[error("{0}")]
    Failed(String),
}

/// An answer: its status, who served it and its body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// `x-served-by`, when the upstream set it.
    pub served_by: Option<String>,
    /// The body as JSON (`Null` when it was not JSON).
    pub json: serde_json::Value,
}

/// One upstream service.
#[derive(Clone)]
pub struct Upstream {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Upstream {
    /// The service at `base` (`http://details:9080`).
    pub fn new(base: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Upstream {
            base: base.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// `GET base+path` with `headers`, each attempt bounded by `timeout`;
    /// `retries` more attempts after a timeout, a failure or a 5xx.
    pub async fn get(
        &self,
        path: &str,
        headers: &HeaderMap,
        timeout: Duration,
        retries: u32,
    ) -> Result<Answer, CallError> {
        let mut attempt = 0;
        loop {
            let result = self.get_once(path, headers, timeout).await;
            let again = match &result {
                Ok(answer) => answer.status.is_server_error(),
                Err(_) => true,
            };
            if !again || attempt >= retries {
                return result;
            }
            attempt += 1;
        }
    }

    async fn get_once(
        &self,
        path: &str,
        headers: &HeaderMap,
        timeout: Duration,
    ) -> Result<Answer, CallError> {
        let mut request = Request::get(format!("{}{path}", self.base))
            .body(Empty::new())
            .map_err(|e| CallError::Failed(e.to_string()))?;
        request.headers_mut().extend(headers.clone());
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| CallError::Failed(format!("{e:#}")))?;
            let status = response.status();
            let served_by = response
                .headers()
                .get("x-served-by")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| CallError::Failed(e.to_string()))?
                .to_bytes();
            let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            Ok(Answer {
                status,
                served_by,
                json,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| CallError::Timeout(timeout))?
    }
}

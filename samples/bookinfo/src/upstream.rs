//! Calls from one bookinfo service to another: plain HTTP/1.1 to a base URL
//! (the sidecar, when there is one, captures it), with the request's
//! propagated headers, a timeout and optional retries.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
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

/// Resolves every upstream name to one address (`--connect-to`), or through
/// the system's resolver.
#[derive(Clone)]
pub struct Resolver {
    connect_to: Option<IpAddr>,
    system: GaiResolver,
}

impl tower::Service<Name> for Resolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.system.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        match self.connect_to {
            // The port is the URL's: the connector sets it on each address.
            Some(ip) => Box::pin(std::future::ready(Ok(
                vec![SocketAddr::new(ip, 0)].into_iter()
            ))),
            None => {
                let lookup = self.system.call(name);
                Box::pin(async move { Ok(lookup.await?.collect::<Vec<_>>().into_iter()) })
            }
        }
    }
}

/// One upstream service.
#[derive(Clone)]
pub struct Upstream {
    base: String,
    client: Client<HttpConnector<Resolver>, Empty<Bytes>>,
}

impl Upstream {
    /// The service at `base` (`http://details:9080`); with `connect_to`,
    /// every connection goes to that address (at the URL's port) while the
    /// request still names the URL's host, as `curl --connect-to` does: how
    /// an app reaches a sidecar's egress listener when nothing captures its
    /// traffic.
    pub fn new(base: &str, connect_to: Option<IpAddr>) -> Self {
        let resolver = Resolver {
            connect_to,
            system: GaiResolver::new(),
        };
        let mut connector = HttpConnector::new_with_resolver(resolver);
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

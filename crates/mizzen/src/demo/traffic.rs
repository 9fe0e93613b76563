//! Real requests for the demo's scenarios: HTTP/1.1 GETs from the host to a
//! pod, or from inside a pod to a service by name (through its sidecar, as
//! `kubectl exec sleep -- curl` in Istio's guides), many at once, each answer
//! kept with its status, JSON body and latency.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::Value;

/// One answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status (0 when the request failed; `error` says why).
    pub status: u16,
    /// The body as JSON (`Null` when it is not).
    pub json: Value,
    /// The body.
    pub body: bytes::Bytes,
    /// How long it took.
    pub latency: Duration,
    /// Why there was no answer.
    pub error: Option<String>,
}

impl Answer {
    /// The answer's `servedBy`, its status when not 200, or its error.
    pub fn served_by(&self) -> String {
        match (&self.error, self.status) {
            (Some(e), _) => format!("error: {e}"),
            (None, 200) => self.json["servedBy"]
                .as_str()
                .unwrap_or("no servedBy")
                .to_string(),
            (None, status) => format!("status {status}"),
        }
    }
}

/// A client for one target.
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
    target: SocketAddr,
    /// Inside a pod: its dialer and the `Host` the requests name.
    in_pod: Option<(crate::pod::net::Dialer, String)>,
    /// The `Host` the requests name, when not the target's address.
    host: Option<String>,
}

impl Client {
    /// A client sending to `target`.
    pub fn new(target: SocketAddr) -> Client {
        let inner =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Client {
            inner,
            target,
            in_pod: None,
            host: None,
        }
    }

    /// A client sending to `target` with `Host: host` (a sidecar's egress
    /// listener, naming the service).
    pub fn with_host(target: SocketAddr, host: &str) -> Client {
        Client {
            host: Some(host.to_string()),
            ..Client::new(target)
        }
    }

    /// A client in a pod (`dialer` in its namespace) sending to `target` (a
    /// service's virtual IP and port, say) with `Host: host`; each request on
    /// a new connection, as `curl` makes.
    pub fn in_pod(dialer: crate::pod::net::Dialer, target: SocketAddr, host: &str) -> Client {
        Client {
            in_pod: Some((dialer, host.to_string())),
            ..Client::new(target)
        }
    }

    /// Sends `request` from the pod through its own connection.
    async fn send_from_pod(
        dialer: &crate::pod::net::Dialer,
        target: SocketAddr,
        request: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let stream = dialer
            .connect(target)
            .await
            .map_err(|e| format!("connect {target}: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        sender
            .send_request(request)
            .await
            .map_err(|e| format!("{e:#}"))
    }

    /// `GET path` with `headers`, within 30 s.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let start = Instant::now();
        let failed = |e: String| Answer {
            status: 0,
            json: Value::Null,
            body: bytes::Bytes::new(),
            latency: start.elapsed(),
            error: Some(e),
        };
        let mut request = match &self.in_pod {
            None => {
                let r = hyper::Request::get(format!("http://{}{path}", self.target));
                match &self.host {
                    Some(host) => r.header(hyper::header::HOST, host.as_str()),
                    None => r,
                }
            }
            Some((_, host)) => hyper::Request::get(path).header(hyper::header::HOST, host.as_str()),
        };
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match request.body(http_body_util::Empty::new()) {
            Ok(r) => r,
            Err(e) => return failed(e.to_string()),
        };
        let send = async {
            match &self.in_pod {
                None => self
                    .inner
                    .request(request)
                    .await
                    .map_err(|e| format!("{e:#}")),
                Some((dialer, _)) => Client::send_from_pod(dialer, self.target, request).await,
            }
        };
        let response = match tokio::time::timeout(Duration::from_secs(30), send).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return failed(e),
            Err(_) => return failed("no answer within 30 s".into()),
        };
        let status = response.status().as_u16();
        let body = match response.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return failed(e.to_string()),
        };
        Answer {
            status,
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
            body,
            latency: start.elapsed(),
            error: None,
        }
    }

    /// `count` GETs of `path`, `concurrency` at a time.
    pub async fn many(
        &self,
        count: usize,
        concurrency: usize,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Vec<Answer> {
        let owned: Arc<Vec<(String, String)>> = Arc::new(
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..concurrency.max(1) {
            let (client, path, owned, next) =
                (self.clone(), path.to_string(), owned.clone(), next.clone());
            workers.spawn(async move {
                let headers: Vec<(&str, &str)> = owned
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let mut out = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < count {
                    out.push(client.get(&path, &headers).await);
                }
                out
            });
        }
        let mut answers = Vec::with_capacity(count);
        while let Some(done) = workers.join_next().await {
            answers.extend(done.unwrap_or_default());
        }
        answers
    }
}

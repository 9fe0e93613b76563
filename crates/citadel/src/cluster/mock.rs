//! A scripted Kubernetes API server for the cluster controllers' tests: a kube
//! client over `tower_test::mock`, whose requests the test takes one by one, checks
//! (method, path, content type, JSON body) and answers with the JSON a real API
//! server sends (objects with `resourceVersion`, `Status` failures with reason and
//! code, watch streams of `{"type","object"}` lines).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Frame;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle, SendResponse};

/// Response bodies: whole JSON documents, or a watch stream.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A client and the server side that answers it.
pub fn pair() -> (kube::Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<kube::client::Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer { handle })
}

/// The test's side of the API.
pub struct ApiServer {
    handle: Handle<Request<kube::client::Body>, Response<Body>>,
}

/// One request the client made, waiting for its answer.
pub struct Call {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE`.
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// The query, if any.
    pub query: String,
    /// The request's `content-type`.
    pub content_type: String,
    /// The JSON body (`Null` when empty).
    pub body: Value,
    respond: SendResponse<Response<Body>>,
}

impl ApiServer {
    /// The next request (fails the test after 5 s without one).
    pub async fn next(&mut self) -> Call {
        let (req, respond) =
            tokio::time::timeout(Duration::from_secs(5), self.handle.next_request())
                .await
                .expect("the client made no further request within 5 s")
                .expect("the client was dropped");
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.expect("request body").to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        };
        Call {
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body,
            respond,
        }
    }

    /// The next request, which must be `method path`.
    pub async fn expect(&mut self, method: &str, path: &str) -> Call {
        let call = self.next().await;
        assert_eq!(
            (call.method.as_str(), call.path.as_str()),
            (method, path),
            "unexpected request (query {:?}, body {})",
            call.query,
            call.body
        );
        call
    }

    /// Asserts the client makes no request within `wait`.
    pub async fn expect_quiet(&mut self, wait: Duration) {
        if let Ok(Some((req, _))) = tokio::time::timeout(wait, self.handle.next_request()).await {
            panic!("unexpected request {} {}", req.method(), req.uri());
        }
    }
}

impl Call {
    /// Answers with `status` and the JSON `body`.
    pub fn respond(self, status: u16, body: Value) {
        let bytes = Bytes::from(serde_json::to_vec(&body).expect("JSON"));
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes).boxed_unsync())
            .expect("response");
        self.respond.send_response(response);
    }

    /// Answers a watch with a stream the test feeds through the returned sender.
    pub fn stream(self) -> WatchStream {
        let (tx, rx) = mpsc::unbounded::<Bytes>();
        let body = http_body_util::StreamBody::new(rx.map(|b| Ok(Frame::data(b))));
        let response = Response::builder()
            .status(200)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.boxed_unsync())
            .expect("response");
        self.respond.send_response(response);
        WatchStream { tx }
    }
}

/// The open body of a watch response.
pub struct WatchStream {
    tx: mpsc::UnboundedSender<Bytes>,
}

impl WatchStream {
    /// Sends one watch event (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`).
    pub fn event(&self, kind: &str, object: Value) {
        let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).expect("JSON");
        line.push(b'\n');
        let _ = self.tx.unbounded_send(Bytes::from(line));
    }
}

/// `object` as the API server returns it: with a uid, a `resourceVersion` and a
/// creation time.
pub fn stored(mut object: Value, resource_version: &str) -> Value {
    let meta = object["metadata"]
        .as_object_mut()
        .expect("object with metadata");
    meta.entry("uid")
        .or_insert(json!("6f1f9c52-2a4b-4f0e-9b8e-3a1d5c7e9f01"));
    meta.insert("resourceVersion".into(), json!(resource_version));
    meta.entry("creationTimestamp")
        .or_insert(json!("2026-12-07T13:00:00Z"));
    object
}

/// A list response of `kind` (e.g. `NamespaceList`).
pub fn list(api_version: &str, kind: &str, items: Vec<Value>, resource_version: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": resource_version},
        "items": items,
    })
}

/// The API server's `Status` for a failed call.
pub fn status(code: u16, reason: &str, message: &str, kind: &str, name: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"name": name, "kind": kind},
        "code": code,
    })
}

/// 404 NotFound for `kind` (plural, e.g. `secrets`) `name`.
pub fn not_found(kind: &str, name: &str) -> Value {
    status(
        404,
        "NotFound",
        &format!("{kind} \"{name}\" not found"),
        kind,
        name,
    )
}

/// 409 AlreadyExists for `kind` `name`.
pub fn already_exists(kind: &str, name: &str) -> Value {
    status(
        409,
        "AlreadyExists",
        &format!("{kind} \"{name}\" already exists"),
        kind,
        name,
    )
}

/// 409 Conflict for an update with a stale `resourceVersion`.
pub fn conflict(kind: &str, name: &str) -> Value {
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {kind} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
        kind,
        name,
    )
}

/// The CA settings the cluster tests use.
pub fn ca_config() -> crate::ca::CaConfig {
    crate::ca::CaConfig {
        key_dir: std::path::PathBuf::from("/nonexistent/citadel-tests"),
        cacerts_dir: None,
        key_algorithm: crate::ca::KeyAlgorithm::EcdsaP256,
        trust_domain: "cluster.local".into(),
        root_ttl: Duration::from_secs(10 * 365 * 24 * 3600),
        max_ttl: Duration::from_secs(24 * 3600),
        default_ttl: Duration::from_secs(24 * 3600),
    }
}

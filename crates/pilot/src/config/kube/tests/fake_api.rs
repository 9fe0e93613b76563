//! A fake Kubernetes API server for the Kubernetes source's tests: a
//! `tower_test` mock service behind a real [`kube::Client`], answering from
//! recorded API responses (`tests/fixtures/kube/`).
//!
//! It serves what pilot asks for and nothing else: CRD gets
//! (`/apis/apiextensions.k8s.io/v1/customresourcedefinitions/<name>`), and lists
//! and watches of the collections the source watches. Every request is recorded
//! with its decoded query; any other path is recorded as unexpected and answered
//! 404. A watch gets a streaming body that stays open until the test takes it
//! ([`FakeApi::next_watch`]) and sends events, breaks or closes it. Lists can be
//! held (the response's body withheld) to observe the source mid-relist.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

type Body = BoxBody<Bytes, std::io::Error>;
type Chunks = mpsc::UnboundedSender<Result<Bytes, std::io::Error>>;

/// Reads a JSON fixture from `tests/fixtures/kube/`.
macro_rules! fixture {
    ($name:literal) => {
        serde_json::from_str::<serde_json::Value>(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/kube/",
            $name
        )))
        .expect(concat!($name, " is JSON"))
    };
}
pub(crate) use fixture;

const CRD_PREFIX: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/";

/// The collections of built-in kinds; unlisted ones answer an empty list.
const BUILT_IN: &[(&str, &str, &str)] = &[
    ("/api/v1/services", "v1", "ServiceList"),
    ("/api/v1/pods", "v1", "PodList"),
    ("/api/v1/namespaces", "v1", "NamespaceList"),
    ("/api/v1/serviceaccounts", "v1", "ServiceAccountList"),
    ("/api/v1/secrets", "v1", "SecretList"),
    (
        "/apis/discovery.k8s.io/v1/endpointslices",
        "discovery.k8s.io/v1",
        "EndpointSliceList",
    ),
];

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The URL path.
    pub path: String,
    /// The query, decoded.
    pub query: BTreeMap<String, String>,
}

impl Recorded {
    /// Whether this is a watch (`watch=true`) rather than a list or get.
    pub fn is_watch(&self) -> bool {
        self.query.get("watch").map(String::as_str) == Some("true")
    }

    /// The `resourceVersion` parameter.
    pub fn resource_version(&self) -> Option<&str> {
        self.query.get("resourceVersion").map(String::as_str)
    }
}

/// An open watch response: its query, and the stream the test writes events to.
pub struct WatchConn {
    /// The watch request.
    pub request: Recorded,
    chunks: Chunks,
}

impl WatchConn {
    /// Sends one watch event line (`{"type":…,"object":…}`).
    pub fn send(&self, event: &Value) {
        let mut line = serde_json::to_vec(event).expect("event serializes");
        line.push(b'\n');
        self.chunks
            .send(Ok(Bytes::from(line)))
            .expect("the client reads the watch");
    }

    /// Breaks the connection mid-stream (the body fails, then ends).
    pub fn fail(self) {
        let _ = self.chunks.send(Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
    }
}

enum ListAnswer {
    Items(Value),
    Status(StatusCode, Value),
}

#[derive(Default)]
struct Inner {
    lists: HashMap<String, ListAnswer>,
    crds: HashMap<String, Value>,
    held: HashSet<String>,
    held_bodies: HashMap<String, Vec<Chunks>>,
    watches: HashMap<String, VecDeque<WatchConn>>,
    requests: Vec<Recorded>,
    unexpected: Vec<String>,
}

/// The fake API server; clone-free, shared with its serving task.
pub struct FakeApi {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

impl FakeApi {
    /// A fake with nothing installed and a client talking to it. Must be called
    /// inside a tokio runtime (the fake serves on a task).
    pub fn start() -> (FakeApi, kube::Client) {
        let (service, mut handle) =
            tower_test::mock::pair::<Request<kube::client::Body>, Response<Body>>();
        let api = FakeApi {
            inner: Arc::default(),
            changed: Arc::default(),
        };
        let (inner, changed) = (api.inner.clone(), api.changed.clone());
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let response = lock(&inner).answer(&request);
                changed.notify_waiters();
                respond.send_response(response);
            }
        });
        (api, kube::Client::new(service, "default"))
    }

    /// Lists of `path` answer `list` (a List object as the API returns it).
    pub fn set_list(&self, path: &str, list: Value) {
        lock(&self.inner)
            .lists
            .insert(path.into(), ListAnswer::Items(list));
    }

    /// Lists of `path` answer `status` with HTTP `code`.
    pub fn set_list_status(&self, path: &str, code: u16, status: Value) {
        let code = StatusCode::from_u16(code).expect("valid status code");
        lock(&self.inner)
            .lists
            .insert(path.into(), ListAnswer::Status(code, status));
    }

    /// Installs a CRD (a CustomResourceDefinition object).
    pub fn install_crd(&self, crd: Value) {
        let name = crd["metadata"]["name"]
            .as_str()
            .expect("CRD has a name")
            .to_string();
        lock(&self.inner).crds.insert(name, crd);
    }

    /// Withholds the bodies of `path`'s list responses until
    /// [`FakeApi::release_lists`].
    pub fn hold_lists(&self, path: &str) {
        lock(&self.inner).held.insert(path.into());
    }

    /// Answers the held lists of `path` with its current list, and stops holding.
    pub fn release_lists(&self, path: &str) {
        let mut inner = lock(&self.inner);
        inner.held.remove(path);
        let body = match inner.lists.get(path) {
            Some(ListAnswer::Items(list)) => serde_json::to_vec(list).expect("list serializes"),
            _ => panic!("release_lists({path}) needs a list set with set_list"),
        };
        for chunks in inner.held_bodies.remove(path).unwrap_or_default() {
            let _ = chunks.send(Ok(Bytes::from(body.clone())));
        }
    }

    /// The requests made for `path`, in order.
    pub fn requests(&self, path: &str) -> Vec<Recorded> {
        lock(&self.inner)
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Requests for paths the fake does not serve.
    pub fn unexpected(&self) -> Vec<String> {
        lock(&self.inner).unexpected.clone()
    }

    /// Waits until `path` has at least `count` requests, and returns them.
    pub async fn wait_requests(&self, path: &str, count: usize) -> Vec<Recorded> {
        self.wait(&format!("{count} requests for {path}"), || {
            let found = self.requests(path);
            (found.len() >= count).then_some(found)
        })
        .await
    }

    /// The next watch opened on `path` that no test took yet.
    pub async fn next_watch(&self, path: &str) -> WatchConn {
        self.wait(&format!("a watch of {path}"), || {
            lock(&self.inner)
                .watches
                .get_mut(path)
                .and_then(VecDeque::pop_front)
        })
        .await
    }

    async fn wait<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let changed = self.changed.notified();
            if let Some(found) = probe() {
                return found;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "timed out waiting for {what}; requests so far: {:#?}",
                    lock(&self.inner).requests
                );
            }
        }
    }
}

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn answer(&mut self, request: &Request<kube::client::Body>) -> Response<Body> {
        let recorded = Recorded {
            path: request.uri().path().to_string(),
            query: request.uri().query().map(decode_query).unwrap_or_default(),
        };
        self.requests.push(recorded.clone());
        let path = recorded.path.as_str();
        if request.method() != http::Method::GET {
            self.unexpected
                .push(format!("{} {}", request.method(), request.uri()));
            return json_response(StatusCode::METHOD_NOT_ALLOWED, &json!({}));
        }
        if let Some(name) = path.strip_prefix(CRD_PREFIX) {
            return match self.crds.get(name) {
                Some(crd) => json_response(StatusCode::OK, crd),
                None => json_response(StatusCode::NOT_FOUND, &crd_not_found(name)),
            };
        }
        let built_in = BUILT_IN.iter().find(|(p, _, _)| *p == path);
        let istio = path.starts_with("/apis/") && path.contains(".istio.io/");
        if built_in.is_none() && !istio {
            self.unexpected.push(request.uri().to_string());
            return json_response(StatusCode::NOT_FOUND, &fixture!("status-404-page.json"));
        }
        if recorded.is_watch() {
            let (chunks, rx) = mpsc::unbounded_channel();
            self.watches
                .entry(path.to_string())
                .or_default()
                .push_back(WatchConn {
                    request: recorded.clone(),
                    chunks,
                });
            return streaming_response(rx);
        }
        match self.lists.get(path) {
            Some(ListAnswer::Items(list)) => {
                if self.held.contains(path) {
                    let (chunks, rx) = mpsc::unbounded_channel();
                    self.held_bodies
                        .entry(path.to_string())
                        .or_default()
                        .push(chunks);
                    return streaming_response(rx);
                }
                json_response(StatusCode::OK, list)
            }
            Some(ListAnswer::Status(code, status)) => json_response(*code, status),
            None => match built_in {
                Some((_, api_version, kind)) => json_response(
                    StatusCode::OK,
                    &json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": "1"}, "items": []}),
                ),
                // An Istio collection the test did not set up: its CRD is missing.
                None => json_response(StatusCode::NOT_FOUND, &fixture!("status-404-page.json")),
            },
        }
    }
}

fn crd_not_found(name: &str) -> Value {
    let mut status = fixture!("status-404-crd.json");
    status["message"] =
        format!("customresourcedefinitions.apiextensions.k8s.io \"{name}\" not found").into();
    status["details"]["name"] = name.into();
    status
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = Bytes::from(serde_json::to_vec(body).expect("body serializes"));
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes).map_err(|never| match never {}).boxed())
        .expect("valid response")
}

fn streaming_response(
    rx: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
) -> Response<Body> {
    let frames = UnboundedReceiverStream::new(rx).map(|chunk| chunk.map(Frame::data));
    Response::builder()
        .status(StatusCode::OK)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(StreamBody::new(frames)))
        .expect("valid response")
}

/// `a=b&c=d%21` as a map, percent-decoded (form encoding: `+` is a space).
fn decode_query(query: &str) -> BTreeMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (escaped, bytes[i]) {
            (Some(b), _) => {
                out.push(b);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

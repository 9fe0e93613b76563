//! The SDS server: Envoy's `SecretDiscoveryService` over the workload
//! certificate a [`CertManager`] keeps fresh, serving the two secrets Istio's
//! sidecars ask `sds-grpc` for, as istio-agent does:
//! - [`WORKLOAD_CERT`] (`default`): a `tls_certificate` with the chain and key;
//! - [`ROOT_CA`] (`ROOTCA`): a `validation_context` whose `trusted_ca` holds the
//!   mesh roots.
//!
//! It owns the protocol on each stream; it does not fetch certificates (the
//! manager does) nor listen (the `agent` module binds the socket).
//!
//! One `StreamSecrets` stream (state of the world, what Envoy opens for
//! `api_type: GRPC`, one stream per secret it watches) goes: a request names
//! the secrets → names this server does not serve are logged and dropped →
//! when the names changed (or the request is a new watch, with no nonce) and a
//! certificate exists, a response with those secrets, the certificate's
//! version and a fresh nonce → the ACK (the latest nonce, no `error_detail`)
//! gets nothing → each new certificate from the manager is pushed → a NACK
//! (`error_detail`) is logged with Envoy's message and not answered, so a
//! secret Envoy refuses is not re-sent in a loop; the next certificate is.
//! Before the first certificate, requests wait for it. `FetchSecrets` answers
//! once from the current certificate; `DeltaSecrets` is refused.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::secret::Type;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, Secret, TlsCertificate,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::{
    SecretDiscoveryService, SecretDiscoveryServiceServer,
};
use envoy_types::pb::google::protobuf::Any;
use futures::{Stream, StreamExt};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::identity::{CertManager, Certified};
use crate::secrets::{ROOT_CA, WORKLOAD_CERT};

/// The type URL of an SDS resource.
pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

/// Responses queued per stream before the session waits for Envoy to read.
const SEND_QUEUE: usize = 16;

/// The names served, for log lines.
const SERVED: [&str; 2] = [WORKLOAD_CERT, ROOT_CA];

/// The SDS service: clone it freely, every clone serves the same certificate
/// and [`SdsServer::close`] ends the streams of all of them.
#[derive(Clone)]
pub struct SdsServer {
    certs: watch::Receiver<Option<Arc<Certified>>>,
    closing: Arc<watch::Sender<bool>>,
    streams: Arc<AtomicU64>,
}

impl std::fmt::Debug for SdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdsServer")
            .field("certificate", &*self.certs.borrow())
            .field("closing", &*self.closing.borrow())
            .finish_non_exhaustive()
    }
}

impl SdsServer {
    /// A server for the certificates `manager` publishes (the current one and
    /// every renewal).
    pub fn new(manager: &CertManager) -> SdsServer {
        SdsServer::from_watch(manager.subscribe())
    }

    /// A server for the certificates published on `certs` (`None` until the
    /// first one).
    pub fn from_watch(certs: watch::Receiver<Option<Arc<Certified>>>) -> SdsServer {
        SdsServer {
            certs,
            closing: Arc::new(watch::channel(false).0),
            streams: Arc::default(),
        }
    }

    /// Ends every open stream (with `UNAVAILABLE`, so Envoy reconnects) and
    /// refuses new ones; lets a graceful shutdown of the gRPC server finish.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The tonic service.
    pub fn into_service(self) -> SecretDiscoveryServiceServer<SdsServer> {
        SecretDiscoveryServiceServer::new(self)
    }

    /// Serves one `StreamSecrets` stream: reads `requests` and writes the
    /// responses to `tx` until Envoy ends the stream, the response side is
    /// dropped, or the server closes.
    async fn session<S>(self, mut requests: S, tx: mpsc::Sender<Result<DiscoveryResponse, Status>>)
    where
        S: Stream<Item = Result<DiscoveryRequest, Status>> + Unpin,
    {
        let id = self.streams.fetch_add(1, Ordering::Relaxed);
        let mut session = Session::new(id);
        let mut certs = self.certs.clone();
        certs.mark_unchanged();
        let mut closing = self.closing.subscribe();
        let closed = async move {
            let _ = closing.wait_for(|c| *c).await;
        };
        tokio::pin!(closed);
        let mut certs_open = true;
        loop {
            let response = tokio::select! {
                req = requests.next() => match req {
                    Some(Ok(req)) => {
                        let cert = self.certs.borrow().clone();
                        session.on_request(req, cert.as_deref())
                    }
                    Some(Err(status)) => {
                        tracing::debug!(stream = id, node = %session.node, %status, "SDS: stream ended with an error");
                        return;
                    }
                    None => {
                        tracing::debug!(stream = id, node = %session.node, "SDS: Envoy ended the stream");
                        return;
                    }
                },
                changed = certs.changed(), if certs_open => {
                    if changed.is_err() {
                        // The manager is gone: the current certificate stays served.
                        certs_open = false;
                        continue;
                    }
                    let cert = certs.borrow_and_update().clone();
                    cert.and_then(|c| session.on_certificate(&c))
                }
                () = &mut closed => {
                    let _ = tx.send(Err(Status::unavailable("the SDS server is shutting down"))).await;
                    return;
                }
            };
            if let Some(response) = response
                && tx.send(Ok(response)).await.is_err()
            {
                return;
            }
        }
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for SdsServer {
    type DeltaSecretsStream = futures::stream::Empty<Result<DeltaDiscoveryResponse, Status>>;
    type StreamSecretsStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn delta_secrets(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        tracing::warn!(
            "SDS: refused a delta SDS stream; configure the SDS config source with `api_type: GRPC`"
        );
        Err(Status::unimplemented(
            "delta SDS (DeltaSecrets) is not supported by this SDS server; configure the \
             secret's sds_config api_config_source with `api_type: GRPC` (state of the world), \
             as Istio does for sds-grpc",
        ))
    }

    async fn stream_secrets(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        if *self.closing.borrow() {
            return Err(Status::unavailable("the SDS server is shutting down"));
        }
        let (tx, rx) = mpsc::channel(SEND_QUEUE);
        tokio::spawn(self.clone().session(request.into_inner(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn fetch_secrets(
        &self,
        request: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let req = request.into_inner();
        let (known, unknown) = split_names(&req.resource_names);
        if !unknown.is_empty() {
            warn_unknown(&unknown, node_id(&req), None);
        }
        if known.is_empty() {
            return Err(Status::not_found(format!(
                "this SDS server serves only {SERVED:?}, not {unknown:?}"
            )));
        }
        let Some(cert) = self.certs.borrow().clone() else {
            return Err(Status::unavailable(
                "no workload certificate yet: the CA has not issued one; retry shortly and check \
                 the agent's log for why",
            ));
        };
        Ok(Response::new(response(&cert, &known, next_nonce())))
    }
}

/// What one stream has asked for and been sent.
#[derive(Debug)]
struct Session {
    id: u64,
    /// Envoy's node id, from the first request that carries it.
    node: String,
    /// The served names Envoy watches now.
    names: BTreeSet<String>,
    /// The nonce of the latest response.
    nonce_sent: Option<String>,
    /// The certificate version of the latest response.
    version_sent: Option<String>,
}

impl Session {
    fn new(id: u64) -> Session {
        Session {
            id,
            node: String::new(),
            names: BTreeSet::new(),
            nonce_sent: None,
            version_sent: None,
        }
    }

    /// Applies one request; returns the response it calls for, if any.
    fn on_request(
        &mut self,
        req: DiscoveryRequest,
        cert: Option<&Certified>,
    ) -> Option<DiscoveryResponse> {
        if self.node.is_empty()
            && let Some(node) = &req.node
        {
            self.node = node.id.clone();
        }
        if !req.type_url.is_empty() && req.type_url != SECRET_TYPE {
            tracing::warn!(stream = self.id, node = %self.node, type_url = %req.type_url, "SDS: request for a type other than Secret; ignoring it");
            return None;
        }
        if let Some(error) = &req.error_detail {
            tracing::warn!(
                stream = self.id,
                node = %self.node,
                names = ?req.resource_names,
                rejected_version = %req.version_info,
                nonce = %req.response_nonce,
                error = %error.message,
                "SDS: Envoy rejected the secrets (NACK); not re-sending them until the certificate changes"
            );
            return None;
        }
        if !req.response_nonce.is_empty()
            && self.nonce_sent.as_deref() != Some(req.response_nonce.as_str())
        {
            tracing::debug!(stream = self.id, node = %self.node, nonce = %req.response_nonce, "SDS: ignoring a request for an older response");
            return None;
        }
        let (known, unknown) = split_names(&req.resource_names);
        if !unknown.is_empty() {
            warn_unknown(&unknown, &self.node, Some(self.id));
        }
        let changed = known != self.names;
        self.names = known;
        if self.names.is_empty() {
            return None;
        }
        if !changed && !req.response_nonce.is_empty() {
            tracing::debug!(stream = self.id, node = %self.node, version = %req.version_info, names = ?self.names, "SDS: ACK");
            return None;
        }
        let Some(cert) = cert else {
            tracing::info!(stream = self.id, node = %self.node, names = ?self.names, "SDS: no workload certificate yet; answering once the CA issues one");
            return None;
        };
        Some(self.respond(cert))
    }

    /// A new certificate: the response that pushes it, unless nothing is
    /// watched or it was already sent.
    fn on_certificate(&mut self, cert: &Certified) -> Option<DiscoveryResponse> {
        if self.names.is_empty() || self.version_sent.as_deref() == Some(&version(cert)) {
            return None;
        }
        Some(self.respond(cert))
    }

    fn respond(&mut self, cert: &Certified) -> DiscoveryResponse {
        let nonce = next_nonce();
        let r = response(cert, &self.names, nonce.clone());
        tracing::info!(
            stream = self.id,
            node = %self.node,
            names = ?self.names,
            version = %r.version_info,
            identity = %cert.spiffe_id,
            "SDS: sending secrets"
        );
        self.nonce_sent = Some(nonce);
        self.version_sent = Some(r.version_info.clone());
        r
    }
}

/// The requested names this server serves (sorted, once each), and the others.
fn split_names(names: &[String]) -> (BTreeSet<String>, Vec<String>) {
    let (known, unknown): (Vec<&String>, Vec<&String>) =
        names.iter().partition(|n| SERVED.contains(&n.as_str()));
    (
        known.into_iter().cloned().collect(),
        unknown.into_iter().cloned().collect(),
    )
}

fn warn_unknown(unknown: &[String], node: &str, stream: Option<u64>) {
    tracing::warn!(
        stream,
        node,
        unknown = ?unknown,
        "SDS: Envoy asked for secrets this agent does not serve; it serves only `{WORKLOAD_CERT}` \
         (the workload certificate) and `{ROOT_CA}` (the mesh roots), so these stay unanswered \
         and Envoy waits for them until its initial_fetch_timeout"
    );
}

fn node_id(req: &DiscoveryRequest) -> &str {
    req.node.as_ref().map_or("", |n| n.id.as_str())
}

/// A nonce no other response of this process carries.
fn next_nonce() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| fastrand::u32(..));
    format!("{prefix:08x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The version of the secrets made from `cert`: a hash of its chain and roots,
/// so it changes with every new certificate or trust bundle.
pub fn version(cert: &Certified) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cert
        .chain_pem
        .as_bytes()
        .iter()
        .chain([0u8].iter())
        .chain(cert.roots_pem.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The SDS secret `name` made from `cert`: [`WORKLOAD_CERT`] and [`ROOT_CA`];
/// `None` for any other name.
pub fn secret(name: &str, cert: &Certified) -> Option<Secret> {
    let inline = |bytes: &str| {
        Some(DataSource {
            specifier: Some(Specifier::InlineBytes(bytes.as_bytes().to_vec())),
            ..Default::default()
        })
    };
    let r#type = match name {
        WORKLOAD_CERT => Type::TlsCertificate(TlsCertificate {
            certificate_chain: inline(&cert.chain_pem),
            private_key: inline(&cert.key_pem),
            ..Default::default()
        }),
        ROOT_CA => Type::ValidationContext(CertificateValidationContext {
            trusted_ca: inline(&cert.roots_pem),
            ..Default::default()
        }),
        _ => return None,
    };
    Some(Secret {
        name: name.to_string(),
        r#type: Some(r#type),
    })
}

/// A response carrying the secrets `names` (those served) from `cert`.
fn response(cert: &Certified, names: &BTreeSet<String>, nonce: String) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version(cert),
        resources: names
            .iter()
            .filter_map(|n| secret(n, cert))
            .map(|s| Any {
                type_url: SECRET_TYPE.to_string(),
                value: s.encode_to_vec(),
            })
            .collect(),
        type_url: SECRET_TYPE.to_string(),
        nonce,
        ..Default::default()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::google::rpc::Status as RpcStatus;
    use futures::future::BoxFuture;

    use super::*;
    use crate::identity::tls::from_sds;
    use crate::identity::{CaClient, IdentityConfig, TokenSource};

    pub(in crate::agent) const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

    /// A CA in memory that signs every CSR with one root.
    pub(in crate::agent) struct FakeCa {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        root_pem: String,
    }

    impl FakeCa {
        pub(in crate::agent) fn new() -> FakeCa {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::default();
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let root = p.self_signed(&key).unwrap();
            FakeCa {
                issuer: rcgen::Issuer::new(p, key),
                root_pem: root.pem(),
            }
        }
    }

    impl CaClient for FakeCa {
        fn sign<'a>(
            &'a self,
            csr_pem: &'a str,
            _: Duration,
        ) -> BoxFuture<'a, crate::identity::Result<Vec<String>>> {
            Box::pin(async move {
                let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
                let leaf = csr.signed_by(&self.issuer).unwrap();
                Ok(vec![leaf.pem(), self.root_pem.clone()])
            })
        }
    }

    /// A manager for [`ID`] that asks a [`FakeCa`]; nothing fetched yet.
    pub(in crate::agent) fn manager() -> Arc<CertManager> {
        let config = IdentityConfig::new(
            "unused:15012",
            Vec::new(),
            TokenSource::Static("unused".into()),
            ID,
        );
        Arc::new(CertManager::with_ca(config, Arc::new(FakeCa::new())))
    }

    /// One open `StreamSecrets` session: what Envoy sends and what it gets.
    struct Envoy {
        requests: mpsc::Sender<Result<DiscoveryRequest, Status>>,
        responses: mpsc::Receiver<Result<DiscoveryResponse, Status>>,
    }

    impl Envoy {
        fn open(server: &SdsServer) -> Envoy {
            let (requests, rx) = mpsc::channel(8);
            let (tx, responses) = mpsc::channel(8);
            tokio::spawn(server.clone().session(ReceiverStream::new(rx), tx));
            Envoy {
                requests,
                responses,
            }
        }

        async fn send(&self, names: &[&str], version: &str, nonce: &str, nack: Option<&str>) {
            let req = DiscoveryRequest {
                version_info: version.into(),
                node: Some(Node {
                    id: "sidecar~10.0.0.1~reviews-v1.default~default.svc.cluster.local".into(),
                    ..Default::default()
                }),
                resource_names: names.iter().map(|n| n.to_string()).collect(),
                type_url: SECRET_TYPE.into(),
                response_nonce: nonce.into(),
                error_detail: nack.map(|m| RpcStatus {
                    code: 3,
                    message: m.into(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            self.requests.send(Ok(req)).await.unwrap();
        }

        async fn ack(&self, names: &[&str], r: &DiscoveryResponse) {
            self.send(names, &r.version_info, &r.nonce, None).await;
        }

        async fn next(&mut self) -> DiscoveryResponse {
            tokio::time::timeout(Duration::from_secs(10), self.responses.recv())
                .await
                .expect("a response within 10 s")
                .expect("the stream is open")
                .expect("a response, not an error")
        }

        /// Nothing arrives for a while.
        async fn silent(&mut self) {
            if let Ok(r) =
                tokio::time::timeout(Duration::from_millis(300), self.responses.recv()).await
            {
                panic!("expected no response, got {r:?}");
            }
        }
    }

    /// The secrets of a response by name.
    fn secrets(r: &DiscoveryResponse) -> Vec<Secret> {
        assert_eq!(r.type_url, SECRET_TYPE);
        r.resources
            .iter()
            .map(|any| {
                assert_eq!(any.type_url, SECRET_TYPE);
                Secret::decode(any.value.as_slice()).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn the_first_response_carries_both_secrets_and_they_round_trip() {
        let manager = manager();
        let issued = manager.fetch().await.unwrap();
        let server = SdsServer::new(&manager);
        let mut envoy = Envoy::open(&server);
        envoy.send(&[WORKLOAD_CERT, ROOT_CA], "", "", None).await;
        let r = envoy.next().await;
        assert!(!r.version_info.is_empty() && !r.nonce.is_empty());
        let got = secrets(&r);
        let mut names: Vec<_> = got.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, [ROOT_CA, WORKLOAD_CERT]);
        let by_name = |n: &str| got.iter().find(|s| s.name == n).unwrap();
        let c = from_sds(by_name(WORKLOAD_CERT), Some(by_name(ROOT_CA)))
            .expect("the SDS reader accepts the secrets");
        assert_eq!(c.spiffe_id, ID);
        assert_eq!(c.certs, issued.certs);
        assert_eq!(c.roots, issued.roots);
        assert_eq!(c.key_pem, issued.key_pem);
    }

    #[tokio::test]
    async fn an_ack_gets_nothing_and_a_rotation_pushes_a_new_version() {
        let manager = manager();
        manager.fetch().await.unwrap();
        let server = SdsServer::new(&manager);
        let mut envoy = Envoy::open(&server);
        envoy.send(&[WORKLOAD_CERT], "", "", None).await;
        let first = envoy.next().await;
        envoy.ack(&[WORKLOAD_CERT], &first).await;
        envoy.silent().await;

        let renewed = manager.fetch().await.unwrap();
        let second = envoy.next().await;
        assert_ne!(second.version_info, first.version_info);
        assert_ne!(second.nonce, first.nonce);
        let got = secrets(&second);
        assert_eq!(got.len(), 1);
        let c = from_sds(&got[0], None).unwrap();
        assert_eq!(c.certs, renewed.certs);
        envoy.ack(&[WORKLOAD_CERT], &second).await;
        envoy.silent().await;

        // Each stream gets the push: a second Envoy stream sees the new one.
        let mut other = Envoy::open(&server);
        other.send(&[ROOT_CA], "", "", None).await;
        assert_eq!(other.next().await.version_info, second.version_info);
    }

    #[tokio::test]
    async fn unknown_names_are_not_answered() {
        let manager = manager();
        manager.fetch().await.unwrap();
        let server = SdsServer::new(&manager);
        let mut envoy = Envoy::open(&server);
        envoy
            .send(&["kubernetes://gateway-cert"], "", "", None)
            .await;
        envoy.silent().await;
        // Asking for a served name too answers for that one only.
        envoy
            .send(&["kubernetes://gateway-cert", WORKLOAD_CERT], "", "", None)
            .await;
        let r = envoy.next().await;
        let got = secrets(&r);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].name, WORKLOAD_CERT);
    }

    #[tokio::test]
    async fn requests_wait_for_the_first_certificate() {
        let manager = manager();
        let server = SdsServer::new(&manager);
        let mut envoy = Envoy::open(&server);
        envoy.send(&[WORKLOAD_CERT, ROOT_CA], "", "", None).await;
        envoy.silent().await;
        manager.fetch().await.unwrap();
        let r = envoy.next().await;
        assert_eq!(secrets(&r).len(), 2);
    }

    #[tokio::test]
    async fn a_nack_is_not_answered_and_the_next_certificate_is_sent() {
        let manager = manager();
        manager.fetch().await.unwrap();
        let server = SdsServer::new(&manager);
        let mut envoy = Envoy::open(&server);
        envoy.send(&[WORKLOAD_CERT], "", "", None).await;
        let first = envoy.next().await;
        envoy
            .send(&[WORKLOAD_CERT], "", &first.nonce, Some("bad key"))
            .await;
        envoy.silent().await;
        manager.fetch().await.unwrap();
        assert_ne!(envoy.next().await.version_info, first.version_info);
    }

    #[tokio::test]
    async fn changing_the_names_is_answered_and_close_ends_the_stream() {
        let manager = manager();
        manager.fetch().await.unwrap();
        let server = SdsServer::new(&manager);
        let mut envoy = Envoy::open(&server);
        envoy.send(&[WORKLOAD_CERT], "", "", None).await;
        let first = envoy.next().await;
        envoy.ack(&[WORKLOAD_CERT, ROOT_CA], &first).await;
        assert_eq!(secrets(&envoy.next().await).len(), 2);

        server.close();
        let end = tokio::time::timeout(Duration::from_secs(5), envoy.responses.recv())
            .await
            .unwrap();
        assert_eq!(end.unwrap().unwrap_err().code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn fetch_answers_from_the_current_certificate() {
        let manager = manager();
        let server = SdsServer::new(&manager);
        let req = |names: &[&str]| {
            Request::new(DiscoveryRequest {
                resource_names: names.iter().map(|n| n.to_string()).collect(),
                type_url: SECRET_TYPE.into(),
                ..Default::default()
            })
        };
        let none = server
            .fetch_secrets(req(&[WORKLOAD_CERT]))
            .await
            .unwrap_err();
        assert_eq!(none.code(), tonic::Code::Unavailable);
        manager.fetch().await.unwrap();
        let r = server
            .fetch_secrets(req(&[ROOT_CA, WORKLOAD_CERT]))
            .await
            .unwrap()
            .into_inner();
        let got = secrets(&r);
        let by_name = |n: &str| got.iter().find(|s| s.name == n).unwrap();
        let c = from_sds(by_name(WORKLOAD_CERT), Some(by_name(ROOT_CA))).unwrap();
        assert_eq!(c.spiffe_id, ID);
        let unknown = server.fetch_secrets(req(&["other"])).await.unwrap_err();
        assert_eq!(unknown.code(), tonic::Code::NotFound);
        assert!(unknown.message().contains("ROOTCA"), "{unknown:?}");
    }
}

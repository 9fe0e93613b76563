//! The ADS server: `envoy.service.discovery.v3.AggregatedDiscoveryService`, both
//! `StreamAggregatedResources` (state of the world, [`sotw`]) and
//! `DeltaAggregatedResources` (incremental, [`delta`]), with Istio's rules
//! (`pilot/pkg/xds/ads.go`, `delta.go`).
//!
//! A stream's life: the first request must carry the Envoy `Node`; it is read
//! into a [`Proxy`] (a malformed node ends the stream with `INVALID_ARGUMENT`)
//! and completed from the registry. The connection registers itself in
//! [`Connections`] (what `/debug/syncz` shows) and then serves two inputs in one
//! loop, which runs inside the call's response stream (`outbox`: no task or
//! channel between generating a response and HTTP/2 sending it): requests from the proxy, handled by the ACK/NACK/nonce rules, and new
//! snapshot versions from [`ModelHandle::subscribe`], which regenerate every
//! type the proxy watches (CDS, EDS, LDS, RDS in that order) and send what
//! changed. Generation goes through a [`Generator`] (by default
//! [`crate::xds::generate`]) so tests can plug in their own.
//!
//! The rules, for both protocols: `error_detail` set is a NACK — recorded per
//! type with its message, nonce and time, counted in `pilot_total_xds_rejects`,
//! logged, and never answered (the last good config stays, nothing loops); a
//! nonce that is not the latest sent for its type is stale and ignored; the
//! matching nonce is an ACK. Every input is bounded ([`Limits`]).

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

use crate::metrics::Metrics;
use crate::model::{ModelHandle, Snapshot};
use crate::proxy::{Proxy, ProxyError};
use crate::xds::{CLUSTER, ENDPOINT, GenerateError, LISTENER, NamedResource, ROUTE, SECRET};

pub mod connection;
mod delta;
mod outbox;
mod sotw;
mod status;
pub mod transport;
pub mod wave;

pub use outbox::Served;

pub use connection::{ConnectionStatus, Connections, NackStatus, TypeStatus};

/// Builds the resources of one type for one proxy: `(snapshot, proxy, type_url,
/// names)`, with the contract of [`crate::xds::generate`] (names matter only for
/// EDS, RDS and SDS).
pub type Generator = Arc<
    dyn Fn(&Snapshot, &Proxy, &str, &[String]) -> Result<Vec<NamedResource>, GenerateError>
        + Send
        + Sync,
>;

/// The generator used unless another is given: [`crate::xds::generate`].
pub fn default_generator() -> Generator {
    Arc::new(crate::xds::generate)
}

/// The order in which types are pushed: clusters before their endpoints,
/// listeners before their routes, secrets last (Istio's `PushOrder`). Types not
/// listed follow, by name.
pub const PUSH_ORDER: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

pub use common::envoy::short_type;

/// The slot of `type_url` in [`PUSH_ORDER`], for the per-type state a
/// connection keeps in fixed slots; `None` for a type pilot does not serve.
pub(crate) fn type_index(type_url: &str) -> Option<usize> {
    PUSH_ORDER
        .iter()
        .position(|t| std::ptr::eq(*t, type_url) || *t == type_url)
}

/// `types` sorted in [`PUSH_ORDER`].
pub(crate) fn in_push_order<'a>(types: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let rank = |t: &str| {
        PUSH_ORDER
            .iter()
            .position(|p| *p == t)
            .unwrap_or(PUSH_ORDER.len())
    };
    let mut v: Vec<String> = types.into_iter().cloned().collect();
    v.sort_by(|a, b| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
    v
}

/// Bounds on what a proxy may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most resource names one request may carry (SotW `resource_names`; delta
    /// subscribe + unsubscribe + initial versions).
    pub max_resource_names: usize,
    /// Largest gRPC message accepted or sent, in bytes.
    pub max_message_bytes: usize,
    /// How long a new stream may take to send its first request.
    pub first_request_timeout: Duration,
    /// How long a stream waits for pilot's first snapshot before it is refused
    /// with `UNAVAILABLE` (Envoy retries).
    pub ready_timeout: Duration,
    /// Responses queued per stream before generation waits for the proxy to read.
    pub send_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_resource_names: 100_000,
            max_message_bytes: 16 * 1024 * 1024,
            first_request_timeout: Duration::from_secs(60),
            ready_timeout: Duration::from_secs(10),
            send_queue: 16,
        }
    }
}

/// Whether a failed read of the request stream means the request was bad (and
/// the proxy is told so), rather than that the proxy went away.
pub(crate) fn bad_request(status: &Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::InvalidArgument
            | tonic::Code::ResourceExhausted
            | tonic::Code::Unimplemented
            | tonic::Code::OutOfRange
    )
}

/// Why a stream was ended by pilot. Each becomes a gRPC status for the proxy.
#[derive(Debug, thiserror::Error)]
pub enum AdsError {
    /// The stream's first request had no `node`.
    #[error(
        "the first request on an ADS stream must carry `node` (id sidecar~IP~POD.NAMESPACE~NAMESPACE.svc.cluster.local or router~…)"
    )]
    MissingNode,
    /// The node could not be read as an Istio proxy.
    #[error("cannot identify the proxy: {0}")]
    BadNode(#[source] ProxyError),
    /// A request had no `type_url`.
    #[error("request has no type_url; name the xDS type (e.g. {CLUSTER})")]
    MissingType,
    /// A request named more resources than [`Limits::max_resource_names`].
    #[error(
        "request for {type_url} names {count} resources; at most {max} are accepted per request"
    )]
    TooManyNames {
        /// The type asked for.
        type_url: String,
        /// How many names it carried.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// No first request arrived in time.
    #[error("no request received within {0:?} of opening the stream")]
    NoFirstRequest(Duration),
    /// Pilot has not published its first snapshot yet.
    #[error("pilot has not loaded its configuration yet; retry shortly")]
    NotReady,
    /// Pilot is shutting down.
    #[error("pilot is shutting down; reconnect to another instance")]
    ShuttingDown,
    /// The proxy went away; nothing to report.
    #[error("the stream was closed by the proxy")]
    Closed,
    /// A request could not be read (bad framing, too large, compressed, not
    /// the message it should be); the status says which.
    #[error("{}", .0.message())]
    BadRequest(Status),
    /// The client certificate's identity may not speak for this proxy.
    #[error(
        "the client certificate's identity {identity} may not receive configuration for proxy {proxy} of namespace {namespace:?}; connect with that namespace's workload certificate"
    )]
    Unauthorized {
        /// The identity from the certificate.
        identity: String,
        /// The proxy id the stream claimed.
        proxy: String,
        /// The proxy's namespace.
        namespace: String,
    },
}

/// Who is on the other end of a stream, as far as the transport tells.
#[derive(Debug, Clone, Default)]
pub(crate) struct Peer {
    /// The remote address.
    pub addr: Option<SocketAddr>,
    /// The client certificate's SPIFFE identity (mTLS port only).
    pub identity: Option<common::spiffe::Identity>,
}

impl From<&AdsError> for Status {
    fn from(e: &AdsError) -> Status {
        match e {
            AdsError::MissingNode
            | AdsError::BadNode(_)
            | AdsError::MissingType
            | AdsError::TooManyNames { .. } => Status::invalid_argument(e.to_string()),
            AdsError::NoFirstRequest(_) => Status::deadline_exceeded(e.to_string()),
            AdsError::NotReady | AdsError::ShuttingDown => Status::unavailable(e.to_string()),
            AdsError::Closed => Status::cancelled(e.to_string()),
            AdsError::BadRequest(status) => status.clone(),
            AdsError::Unauthorized { .. } => Status::permission_denied(e.to_string()),
        }
    }
}

/// Issues nonces unique to this process run: `<boot>-<counter>`.
#[derive(Debug)]
struct NonceSource {
    boot: u64,
    next: AtomicU64,
}

impl NonceSource {
    fn new() -> Self {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default();
        NonceSource {
            boot: boot & 0xffff_ffff,
            next: AtomicU64::new(1),
        }
    }

    fn next(&self) -> String {
        format!(
            "{:08x}-{}",
            self.boot,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// The ADS service. Cheap to clone; every clone serves the same connections.
#[derive(Clone)]
pub struct AdsServer {
    model: ModelHandle,
    generator: Generator,
    metrics: Metrics,
    connections: Connections,
    limits: Limits,
    nonces: Arc<NonceSource>,
    closing: Arc<watch::Sender<bool>>,
    conn_ids: Arc<AtomicU64>,
    /// Endpoint push waves (reads of the plaintext port wait while one runs).
    wave: Arc<wave::Wave>,
    /// Streams must come from a client certificate naming a SPIFFE identity
    /// (the mTLS port); the proxy's namespace must be the identity's.
    require_identity: bool,
}

impl std::fmt::Debug for AdsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdsServer")
            .field("limits", &self.limits)
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

impl AdsServer {
    /// A server for the snapshots published through `model`, counting into
    /// `metrics`, generating with [`default_generator`] and the default [`Limits`].
    pub fn new(model: ModelHandle, metrics: Metrics) -> Self {
        AdsServer {
            model,
            generator: default_generator(),
            metrics,
            connections: Connections::default(),
            limits: Limits::default(),
            nonces: Arc::new(NonceSource::new()),
            closing: Arc::new(watch::channel(false).0),
            conn_ids: Arc::new(AtomicU64::new(1)),
            wave: Arc::new(wave::Wave::default()),
            require_identity: false,
        }
    }

    /// The same server for the mTLS port: every stream must present a client
    /// certificate with a SPIFFE ID, and may only speak for proxies of that
    /// identity's namespace (as istiod authorizes xDS on 15012).
    pub fn requiring_identity(mut self) -> Self {
        self.require_identity = true;
        self
    }

    /// Who is calling: the address, and with [`AdsServer::requiring_identity`] the
    /// SPIFFE identity of the client certificate (UNAUTHENTICATED without one).
    fn peer_of<T>(&self, request: &Request<T>) -> Result<Peer, Status> {
        let addr = request.remote_addr();
        if !self.require_identity {
            return Ok(Peer {
                addr,
                identity: None,
            });
        }
        let certs = request.peer_certs().unwrap_or_default();
        let leaf = certs.first().ok_or_else(|| {
            Status::unauthenticated(
                "xDS on the mTLS port needs a client certificate from the mesh CA (spiffe://TD/ns/NS/sa/SA)",
            )
        })?;
        let identity = common::spiffe::from_certificate(leaf).map_err(|e| {
            Status::unauthenticated(format!(
                "the client certificate names no usable identity: {e}"
            ))
        })?;
        Ok(Peer {
            addr,
            identity: Some(identity),
        })
    }

    /// Generates with `generator` instead.
    pub fn with_generator(mut self, generator: Generator) -> Self {
        self.generator = generator;
        self
    }

    /// Applies other bounds.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The live connections (for the debug endpoints).
    pub fn connections(&self) -> Connections {
        self.connections.clone()
    }

    /// The generator in use (the debug endpoints render with it).
    pub fn generator(&self) -> Generator {
        self.generator.clone()
    }

    /// The model the server reads.
    pub fn model(&self) -> &ModelHandle {
        &self.model
    }

    /// Ends every stream (with `UNAVAILABLE`, so proxies reconnect elsewhere) and
    /// refuses new ones. Used on shutdown so the gRPC server can drain.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// The tonic service, with the message-size bounds applied.
    pub fn into_service(self) -> AggregatedDiscoveryServiceServer<AdsServer> {
        let max = self.limits.max_message_bytes;
        AggregatedDiscoveryServiceServer::new(self)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max)
    }

    fn next_connection_id(&self, proxy_id: &str) -> String {
        format!(
            "{proxy_id}-{}",
            self.conn_ids.fetch_add(1, Ordering::Relaxed)
        )
    }
}

/// Names from a request that are not `*`, as a set.
pub(crate) fn name_set<'a>(names: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    names.into_iter().filter(|n| *n != "*").cloned().collect()
}

/// FNV-1a, 64 bits: stable across runs, so delta versions survive a restart of
/// pilot (Envoy's `initial_resource_versions` then match).
pub(crate) fn fnv1a(bytes: &[u8], mut hash: u64) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// FNV-1a's offset basis.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The version of one resource: a hash of its encoding, kept as a number by
/// the delta loop and sent as [`version_string`].
pub(crate) fn resource_version(r: &NamedResource) -> u64 {
    fnv1a(&r.resource.value, FNV_OFFSET)
}

/// How a [`resource_version`] is written on the wire: 16 hex digits.
pub(crate) fn version_string(version: u64) -> String {
    format!("{version:016x}")
}

/// A version the proxy holds, read back: `None` for a string pilot did not
/// write (from another control plane), which never matches a fresh version.
pub(crate) fn parse_version(version: &str) -> Option<u64> {
    if version.len() != 16 {
        return None;
    }
    u64::from_str_radix(version, 16).ok()
}

/// A hash of a whole SotW response (names and encodings, in order).
pub(crate) fn set_hash(resources: &[NamedResource]) -> u64 {
    let mut h = FNV_OFFSET;
    for r in resources {
        h = fnv1a(r.name.as_bytes(), h);
        h = fnv1a(&[0], h);
        h = fnv1a(&r.resource.value, h);
        h = fnv1a(&[0xff], h);
    }
    h
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type StreamAggregatedResourcesStream = Served<Result<DiscoveryResponse, Status>>;
    type DeltaAggregatedResourcesStream = Served<Result<DeltaDiscoveryResponse, Status>>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let peer = self.peer_of(&request)?;
        let server = self.clone();
        Ok(Response::new(Served::new(self.limits.send_queue, |tx| {
            connection::serve::<sotw::Sotw, _>(server, request.into_inner(), tx, peer)
        })))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let peer = self.peer_of(&request)?;
        let server = self.clone();
        Ok(Response::new(Served::new(self.limits.send_queue, |tx| {
            connection::serve::<delta::Delta, _>(server, request.into_inner(), tx, peer)
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_order_puts_clusters_before_endpoints_and_listeners_before_routes() {
        let types = vec![
            ROUTE.to_string(),
            "type.googleapis.com/x.Y".to_string(),
            ENDPOINT.to_string(),
            LISTENER.to_string(),
            CLUSTER.to_string(),
        ];
        assert_eq!(
            in_push_order(&types),
            vec![
                CLUSTER.to_string(),
                ENDPOINT.to_string(),
                LISTENER.to_string(),
                ROUTE.to_string(),
                "type.googleapis.com/x.Y".to_string()
            ]
        );
    }

    #[test]
    fn short_types_match_istio() {
        assert_eq!(short_type(CLUSTER), "cds");
        assert_eq!(short_type(ENDPOINT), "eds");
        assert_eq!(short_type(LISTENER), "lds");
        assert_eq!(short_type(ROUTE), "rds");
        assert_eq!(short_type("type.googleapis.com/a.b.Thing"), "Thing");
    }

    #[test]
    fn nonces_are_unique() {
        let n = NonceSource::new();
        assert_ne!(n.next(), n.next());
    }

    #[test]
    fn hashes_are_stable_and_sensitive() {
        let a = NamedResource::new(
            "a",
            CLUSTER,
            &envoy_types::pb::envoy::config::cluster::v3::Cluster {
                name: "a".into(),
                ..Default::default()
            },
        );
        let mut b = a.clone();
        b.name = "b".into();
        assert_eq!(resource_version(&a), resource_version(&a.clone()));
        let v = resource_version(&a);
        assert_eq!(parse_version(&version_string(v)), Some(v));
        assert_eq!(parse_version("1"), None);
        assert_eq!(parse_version("zzzzzzzzzzzzzzzz"), None);
        assert_ne!(
            set_hash(std::slice::from_ref(&a)),
            set_hash(std::slice::from_ref(&b))
        );
        // FNV-1a of "" is the offset basis; of "a" a known value.
        assert_eq!(fnv1a(b"a", FNV_OFFSET), 0xaf63_dc4c_8601_ec8c);
    }
}

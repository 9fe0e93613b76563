//! The calls' side of a connection: what the connection hands a call (its
//! request bytes, [`Inbound`]) and what it takes from it (its responses,
//! [`Call`]), and how a call is started from its request head ([`Calls`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::BytesMut;
use envoy_types::pb::envoy::service::discovery::v3::{DeltaDiscoveryResponse, DiscoveryResponse};
use futures::Stream;
use prost::Message;
use tonic::Status;

use crate::xds::ads::Served;

/// A call's request bytes, shared by the connection (which appends what the
/// proxy sends) and the call's [`super::GrpcRequests`] (which cuts messages).
#[derive(Debug, Default)]
pub(crate) struct Inbound {
    /// DATA payloads not yet cut into messages.
    pub buf: BytesMut,
    /// The proxy ended its side (END_STREAM).
    pub ended: bool,
    /// Bytes taken out of `buf`, or waited on, since the connection last
    /// returned credit for them.
    pub consumed: usize,
    /// How many bytes at the front of `buf` were counted in `consumed`
    /// already: a message larger than the window is credited while the call
    /// waits for its rest, as HTTP/2 needs, and not again when it is taken.
    pub credited: usize,
}

pub(crate) type SharedInbound = Arc<Mutex<Inbound>>;

pub(crate) fn lock(inbound: &Mutex<Inbound>) -> MutexGuard<'_, Inbound> {
    inbound.lock().unwrap_or_else(|p| p.into_inner())
}

/// The responses of one call, by protocol.
pub(crate) enum Call {
    Sotw(Served<Result<DiscoveryResponse, Status>>),
    Delta(Served<Result<DeltaDiscoveryResponse, Status>>),
}

pub(crate) enum Response {
    Sotw(DiscoveryResponse),
    Delta(DeltaDiscoveryResponse),
}

impl Response {
    pub(crate) fn encoded_len(&self) -> usize {
        match self {
            Response::Sotw(r) => r.encoded_len(),
            Response::Delta(r) => r.encoded_len(),
        }
    }

    /// Appends the message; `out` has room for it.
    pub(crate) fn encode(&self, out: &mut BytesMut) {
        // Encoding into a buffer with the room reserved cannot fail.
        let _ = match self {
            Response::Sotw(r) => r.encode(out),
            Response::Delta(r) => r.encode(out),
        };
    }
}

impl Call {
    pub(crate) fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Response, Status>>> {
        match self {
            Call::Sotw(s) => Pin::new(s)
                .poll_next(cx)
                .map(|r| r.map(|r| r.map(Response::Sotw))),
            Call::Delta(s) => Pin::new(s)
                .poll_next(cx)
                .map(|r| r.map(|r| r.map(Response::Delta))),
        }
    }
}

/// What a new call's request headers said.
#[derive(Debug, Default)]
pub(crate) struct RequestHead {
    pub method: String,
    pub path: String,
    pub content_type: String,
    pub encoding: Option<String>,
}

/// How the connection starts calls: checks a request's head and, when it is
/// served, gives its responses.
pub(crate) trait Calls {
    /// `Err`: the status to end the call with at once.
    fn start(&mut self, head: &RequestHead, inbound: SharedInbound) -> Result<Call, Status>;
}

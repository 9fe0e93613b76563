//! A scripted ADS server: the test writes its responses and reads the
//! requests it receives, one stream per protocol, to send what pilot never
//! would (bad `Any`s, resources a handler refuses) and to watch the client's
//! exact requests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

/// An ADS server whose responses the test writes and whose requests it reads.
#[derive(Clone)]
pub struct Scripted {
    pub delta_requests: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
    pub delta_responses: Arc<Mutex<Option<mpsc::UnboundedReceiver<DeltaDiscoveryResponse>>>>,
    pub sotw_requests: mpsc::UnboundedSender<DiscoveryRequest>,
    pub sotw_responses: Arc<Mutex<Option<mpsc::UnboundedReceiver<DiscoveryResponse>>>>,
}

pub type Out<T> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send>>;

pub fn forward<T: Send + 'static>(mut from: Streaming<T>, to: mpsc::UnboundedSender<T>) {
    tokio::spawn(async move {
        while let Ok(Some(m)) = from.message().await {
            if to.send(m).is_err() {
                break;
            }
        }
    });
}

pub fn take<T>(slot: &Mutex<Option<T>>) -> Result<T, Status> {
    slot.lock()
        .unwrap()
        .take()
        .ok_or_else(|| Status::unavailable("the script serves one stream"))
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Scripted {
    type StreamAggregatedResourcesStream = Out<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = Out<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let responses = take(&self.sotw_responses)?;
        forward(request.into_inner(), self.sotw_requests.clone());
        let out = futures::StreamExt::map(UnboundedReceiverStream::new(responses), Ok);
        Ok(Response::new(Box::pin(out)))
    }

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let responses = take(&self.delta_responses)?;
        forward(request.into_inner(), self.delta_requests.clone());
        let out = futures::StreamExt::map(UnboundedReceiverStream::new(responses), Ok);
        Ok(Response::new(Box::pin(out)))
    }
}

pub struct Script {
    pub addr: SocketAddr,
    pub delta_requests: mpsc::UnboundedReceiver<DeltaDiscoveryRequest>,
    pub delta_responses: mpsc::UnboundedSender<DeltaDiscoveryResponse>,
    pub sotw_requests: mpsc::UnboundedReceiver<DiscoveryRequest>,
    pub sotw_responses: mpsc::UnboundedSender<DiscoveryResponse>,
}

pub async fn scripted() -> Script {
    let (dq_tx, dq_rx) = mpsc::unbounded_channel();
    let (dr_tx, dr_rx) = mpsc::unbounded_channel();
    let (sq_tx, sq_rx) = mpsc::unbounded_channel();
    let (sr_tx, sr_rx) = mpsc::unbounded_channel();
    let service = Scripted {
        delta_requests: dq_tx,
        delta_responses: Arc::new(Mutex::new(Some(dr_rx))),
        sotw_requests: sq_tx,
        sotw_responses: Arc::new(Mutex::new(Some(sr_rx))),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AggregatedDiscoveryServiceServer::new(service))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    Script {
        addr,
        delta_requests: dq_rx,
        delta_responses: dr_tx,
        sotw_requests: sq_rx,
        sotw_responses: sr_tx,
    }
}

pub async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 5 s"))
        .expect("stream open")
}

/// Requests of `type_url` that arrive within `quiet`.
pub async fn drain<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    quiet: Duration,
    keep: impl Fn(&T) -> bool,
) -> Vec<T> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(quiet, rx.recv()).await {
        if keep(&m) {
            out.push(m);
        }
    }
    out
}

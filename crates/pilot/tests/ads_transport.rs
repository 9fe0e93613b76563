//! The plaintext xDS port's own gRPC transport (`pilot::xds::ads::transport`),
//! seen from a bare HTTP/2 client: what it refuses and with which gRPC status,
//! how it ends calls on shutdown, and that it drops a peer that stops answering
//! keepalive pings. The ADS protocol over it is covered by ads.rs and by the
//! Envoy suites (envoy_*.rs), which all speak to this transport.

#[path = "fixtures/ads/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use pilot::metrics::Metrics;
use pilot::model::ModelHandle;
use pilot::xds::CLUSTER;
use pilot::xds::ads::transport::{self, DELTA_PATH, Http2};
use pilot::xds::ads::{AdsServer, Limits};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    addr: SocketAddr,
    ads: AdsServer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn serve(limits: Limits, settings: Http2) -> Server {
    let model = ModelHandle::new(harness::snapshot(
        1,
        &[("a.default.svc.cluster.local", 80)],
        &["10.0.0.1"],
    ));
    let ads = AdsServer::new(model, Metrics::default())
        .with_generator(harness::generator(false))
        .with_limits(limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(transport::serve(
        listener,
        ads.clone(),
        settings,
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        addr,
        ads,
        stop: Some(stop),
        done,
    }
}

async fn connect(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (client, conn) = h2::client::handshake(tcp).await.expect("HTTP/2");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn call(path: &str, content_type: &str) -> http::Request<()> {
    http::Request::post(format!("http://pilot{path}"))
        .header("content-type", content_type)
        .header("te", "trailers")
        .body(())
        .expect("request")
}

fn grpc(flag: u8, message: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(flag);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

/// The gRPC status of a response: from its headers (trailers-only) or its trailers.
async fn status_of(response: http::Response<h2::RecvStream>) -> (String, String) {
    let header = |h: &http::HeaderMap, k: &str| {
        h.get(k)
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    if response.headers().contains_key("grpc-status") {
        let h = response.headers();
        return (
            header(h, "grpc-status"),
            percent_decoded(&header(h, "grpc-message")),
        );
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let _ = chunk;
    }
    let trailers = tokio::time::timeout(Duration::from_secs(5), body.trailers())
        .await
        .expect("trailers in time")
        .expect("trailers")
        .expect("some trailers");
    (
        header(&trailers, "grpc-status"),
        percent_decoded(&header(&trailers, "grpc-message")),
    )
}

/// `grpc-message` is percent-encoded (gRPC over HTTP/2).
fn percent_decoded(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn first_request() -> Vec<u8> {
    DeltaDiscoveryRequest {
        node: harness::node("sidecar~10.0.0.9~c.default~default.svc.cluster.local"),
        type_url: CLUSTER.into(),
        ..Default::default()
    }
    .encode_to_vec()
}

#[tokio::test]
async fn other_methods_and_non_grpc_calls_are_refused_with_their_status() {
    let server = serve(Limits::default(), Http2::default()).await;
    let mut client = connect(server.addr).await;

    let (response, _) = client
        .send_request(
            call("/grpc.health.v1.Health/Check", "application/grpc"),
            true,
        )
        .expect("send");
    let (code, message) = status_of(response.await.expect("response")).await;
    assert_eq!(code, "12", "UNIMPLEMENTED: {message}");
    assert!(message.contains("Health/Check"), "{message}");

    let (response, _) = client
        .send_request(call(DELTA_PATH, "text/plain"), true)
        .expect("send");
    let (code, message) = status_of(response.await.expect("response")).await;
    assert_eq!(code, "3", "INVALID_ARGUMENT: {message}");
    assert!(message.contains("application/grpc"), "{message}");
}

#[tokio::test]
async fn compressed_and_oversized_requests_end_the_call_with_a_clear_status() {
    let limits = Limits {
        max_message_bytes: 1024,
        ..Limits::default()
    };
    let server = serve(limits, Http2::default()).await;
    let mut client = connect(server.addr).await;

    let (response, mut send) = client
        .send_request(call(DELTA_PATH, "application/grpc"), false)
        .expect("send");
    send.send_data(grpc(1, &first_request()), false)
        .expect("data");
    let (code, message) = status_of(response.await.expect("response")).await;
    assert_eq!(code, "12", "{message}");
    assert!(message.contains("compressed"), "{message}");

    let (response, mut send) = client
        .send_request(call(DELTA_PATH, "application/grpc"), false)
        .expect("send");
    send.send_data(grpc(0, &vec![0u8; 2000]), false)
        .expect("data");
    let (code, message) = status_of(response.await.expect("response")).await;
    assert_eq!(code, "8", "RESOURCE_EXHAUSTED: {message}");
    assert!(message.contains("2000 bytes"), "{message}");
}

#[tokio::test]
async fn a_delta_call_is_served_and_shutdown_ends_it_with_unavailable() {
    let mut server = serve(Limits::default(), Http2::default()).await;
    let mut client = connect(server.addr).await;
    let (response, mut send) = client
        .send_request(call(DELTA_PATH, "application/grpc"), false)
        .expect("send");
    send.send_data(grpc(0, &first_request()), false)
        .expect("data");
    let response = response.await.expect("response");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    let cds = loop {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.data())
            .await
            .expect("CDS in time")
            .expect("data")
            .expect("chunk");
        let _ = body.flow_control().release_capacity(chunk.len());
        buf.extend_from_slice(&chunk);
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() >= 5 + len {
                break DeltaDiscoveryResponse::decode(&buf[5..5 + len]).expect("decode");
            }
        }
    };
    assert_eq!(cds.type_url, CLUSTER);
    assert!(!cds.resources.is_empty(), "{cds:?}");

    // Shutdown as the app does it: streams end with UNAVAILABLE, then the
    // server stops accepting and waits for its connections.
    server.ads.close();
    let _ = server.stop.take().map(|s| s.send(()));
    let trailers = tokio::time::timeout(Duration::from_secs(5), body.trailers())
        .await
        .expect("trailers in time")
        .expect("trailers")
        .expect("some trailers");
    assert_eq!(
        trailers.get("grpc-status").map(|v| v.as_bytes()),
        Some(&b"14"[..])
    );
    tokio::time::timeout(Duration::from_secs(5), server.done)
        .await
        .expect("the server finished once its connection ended")
        .expect("no panic");
}

#[tokio::test]
async fn a_peer_that_stops_answering_keepalive_pings_is_dropped() {
    let settings = Http2 {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(200),
        ..Http2::default()
    };
    let server = serve(Limits::default(), settings).await;
    // A peer that sends the preface and its settings, then goes silent: it
    // reads what pilot sends but never answers a PING.
    let mut tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    tcp.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let started = std::time::Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!("pilot kept the silent peer's connection open for 5 s"),
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300),
        "closed after {elapsed:?}, before a ping could go unanswered"
    );
    // Among what pilot sent: a PING frame (type 6) that was never answered.
    let mut at = 0;
    let mut kinds = Vec::new();
    while at + 9 <= seen.len() {
        let len = (usize::from(seen[at]) << 16)
            | (usize::from(seen[at + 1]) << 8)
            | usize::from(seen[at + 2]);
        kinds.push(seen[at + 3]);
        at += 9 + len;
    }
    assert!(kinds.contains(&6), "frames seen: {kinds:?}");
}

#[tokio::test]
async fn a_peer_that_keeps_sending_is_not_pinged_nor_dropped() {
    let settings = Http2 {
        keepalive_interval: Duration::from_millis(200),
        keepalive_timeout: Duration::from_millis(200),
        ..Http2::default()
    };
    let server = serve(Limits::default(), settings).await;
    // A peer that never answers pilot's PINGs but is never idle: it sends a
    // PING of its own every 50 ms (pilot answers them).
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let (mut rd, mut wr) = tcp.into_split();
    wr.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .expect("preface");
    let writer = tokio::spawn(async move {
        for _ in 0..30 {
            let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00mizzen!!";
            if wr.write_all(ping).await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    });
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => panic!("pilot dropped a peer that kept sending"),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
    assert!(
        writer.await.expect("writer"),
        "the peer could write throughout"
    );
    // What pilot sent: settings, acks of the peer's pings, and no PING of its own.
    let mut at = 0;
    let mut own_pings = 0;
    let mut acks = 0;
    while at + 9 <= seen.len() {
        let len = (usize::from(seen[at]) << 16)
            | (usize::from(seen[at + 1]) << 8)
            | usize::from(seen[at + 2]);
        if seen[at + 3] == 6 {
            if seen[at + 4] & 1 == 1 {
                acks += 1;
            } else {
                own_pings += 1;
            }
        }
        at += 9 + len;
    }
    assert!(acks > 10, "pilot answered the peer's pings ({acks})");
    assert_eq!(own_pings, 0, "a connection that reads is not pinged");
}

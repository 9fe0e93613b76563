//! The plaintext xDS port's own gRPC transport (`pilot::xds::ads::transport`),
//! seen from a bare HTTP/2 client: what it refuses and with which gRPC status,
//! how it ends calls on shutdown or when the client ends its side, that it
//! drops a peer that stops answering keepalive pings, and the HTTP/2 it must
//! get right whatever implements it: flow control on large responses, several
//! calls and resets on one connection, messages cut across or packed into
//! DATA frames, header blocks with CONTINUATION frames, and PINGs. The ADS
//! protocol over it is covered by ads.rs and by the Envoy suites (envoy_*.rs),
//! which all speak to this transport.

#[path = "fixtures/ads/h2_client.rs"]
mod h2_client;

use h2_client::*;
#[path = "fixtures/ads/harness.rs"]
mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use harness::WAIT;
use pilot::metrics::Metrics;
use pilot::model::{ModelHandle, Snapshot};
use pilot::xds::ads::connection::Protocol;
use pilot::xds::ads::transport::{self, DELTA_PATH, Http2, SOTW_PATH};
use pilot::xds::ads::{AdsServer, Limits};
use pilot::xds::{CLUSTER, ENDPOINT, LISTENER};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Server {
    addr: SocketAddr,
    ads: AdsServer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

/// The one service of [`serve`]'s snapshot.
const HOST: &str = "a.default.svc.cluster.local";

async fn serve(limits: Limits, settings: Http2) -> Server {
    serve_snapshot(
        harness::snapshot(1, &[(HOST, 80)], &["10.0.0.1"]),
        limits,
        settings,
    )
    .await
}

async fn serve_snapshot(snapshot: Snapshot, limits: Limits, settings: Http2) -> Server {
    let model = ModelHandle::new(snapshot);
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

/// `n` services, `svc-0000` up, one endpoint each: a CDS response of about
/// 100 bytes per service.
fn many_services(n: usize) -> Snapshot {
    let hosts: Vec<String> = (0..n)
        .map(|i| format!("svc-{i:04}.default.svc.cluster.local"))
        .collect();
    let services: Vec<(&str, u32)> = hosts.iter().map(|h| (h.as_str(), 80)).collect();
    harness::snapshot(1, &services, &["10.0.0.1"])
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
    let (mut responses, _send) = open_delta(&mut client, &first_request(), false).await;
    let cds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert!(!cds.resources.is_empty(), "{cds:?}");

    // Shutdown as the app does it: streams end with UNAVAILABLE, then the
    // server stops accepting and waits for its connections.
    server.ads.close();
    let _ = server.stop.take().map(|s| s.send(()));
    let (code, message) = responses.status().await;
    assert_eq!(code, "14", "UNAVAILABLE: {message}");
    tokio::time::timeout(WAIT, server.done)
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
    // Among what pilot sent: a PING frame that was never answered.
    let kinds: Vec<u8> = frames(&seen).iter().map(|f| f.kind).collect();
    assert!(kinds.contains(&PING), "frames seen: {kinds:?}");
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
    let pings: Vec<Frame> = frames(&seen)
        .into_iter()
        .filter(|f| f.kind == PING)
        .collect();
    let acks = pings.iter().filter(|f| f.flags & 1 == 1).count();
    let own_pings = pings.len() - acks;
    assert!(acks > 10, "pilot answered the peer's pings ({acks})");
    assert_eq!(own_pings, 0, "a connection that reads is not pinged");
}

/// A client whose stream window is 1 KiB (its connection window the 64 KiB
/// HTTP/2 starts with, its target 1 KiB), and which opens them again only as
/// it reads, gets a CDS response of over 100 KiB whole: pilot sends no DATA
/// frame beyond the window and goes on after each WINDOW_UPDATE.
#[tokio::test]
async fn a_response_larger_than_the_client_windows_arrives_whole() {
    let server = serve_snapshot(many_services(1000), Limits::default(), Http2::default()).await;
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(1024)
        .initial_connection_window_size(1024);
    let (mut client, _) = connect_with(server.addr, &builder).await;
    let (mut responses, _send) = open_delta(&mut client, &first_request(), false).await;
    let cds: DeltaDiscoveryResponse = responses.next().await;

    let size = cds.encoded_len();
    assert!(size > 100 * 1024, "a response of {size} bytes");
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(cds.resources.len(), 1000);
    for (i, r) in cds.resources.iter().enumerate() {
        let host = format!("svc-{i:04}.default.svc.cluster.local");
        assert_eq!(r.name, host);
        let any = r.resource.as_ref().expect("a resource");
        assert_eq!(
            Cluster::decode(any.value.as_slice())
                .expect("a cluster")
                .name,
            host
        );
    }
    assert!(
        responses.largest_frame <= 1024,
        "a DATA frame of {} bytes past the 1 KiB window",
        responses.largest_frame
    );
    assert!(
        responses.frames >= size / 1024,
        "{size} bytes in {} frames",
        responses.frames
    );
}

/// A client PING is answered while pilot's response waits for the client to
/// open its window, and the response then arrives whole.
#[tokio::test]
async fn a_ping_is_answered_while_a_response_waits_for_window() {
    let server = serve_snapshot(many_services(1000), Limits::default(), Http2::default()).await;
    let mut builder = h2::client::Builder::new();
    builder
        .initial_window_size(1024)
        .initial_connection_window_size(1024);
    let (mut client, mut pings) = connect_with(server.addr, &builder).await;
    let (mut responses, _send) = open_delta(&mut client, &first_request(), false).await;
    // Nothing read yet: the stream window is full and pilot must wait.
    until("pilot filled the stream window", || {
        responses.body.flow_control().used_capacity() >= 1024
    })
    .await;
    tokio::time::timeout(WAIT, pings.ping(h2::Ping::opaque()))
        .await
        .expect("PONG within 5 s")
        .expect("PONG");
    let cds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(cds.resources.len(), 1000);
}

/// A client PING is answered while a call is open and idle, and the call
/// goes on serving after it.
#[tokio::test]
async fn a_ping_is_answered_while_a_call_is_open() {
    let server = serve(Limits::default(), Http2::default()).await;
    let (mut client, mut pings) = connect_with(server.addr, &h2::client::Builder::new()).await;
    let (mut responses, mut send) = open_delta(&mut client, &first_request(), false).await;
    let cds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(cds.type_url, CLUSTER);

    for _ in 0..3 {
        tokio::time::timeout(WAIT, pings.ping(h2::Ping::opaque()))
            .await
            .expect("PONG within 5 s")
            .expect("PONG");
    }
    send.send_data(grpc(0, &subscribe(ENDPOINT, &[HOST])), false)
        .expect("data");
    let eds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(harness::delta_names(&eds), harness::set(&[HOST]));
}

/// Two calls on one connection, a SotW and a delta one, are served side by
/// side; the client's RST_STREAM on one ends only that one: pilot drops its
/// state, the other answers a new request, and the connection takes a new call.
#[tokio::test]
async fn two_calls_share_a_connection_and_a_reset_ends_only_one() {
    let server = serve(Limits::default(), Http2::default()).await;
    let mut client = connect(server.addr).await;
    let (sotw_response, mut sotw) = client
        .send_request(call(SOTW_PATH, "application/grpc"), false)
        .expect("send");
    let (delta_response, mut delta) = client
        .send_request(call(DELTA_PATH, "application/grpc"), false)
        .expect("send");
    let sotw_first = DiscoveryRequest {
        node: harness::node("sidecar~10.0.0.8~s.default~default.svc.cluster.local"),
        type_url: CLUSTER.into(),
        ..Default::default()
    };
    sotw.send_data(grpc(0, &sotw_first.encode_to_vec()), false)
        .expect("data");
    delta
        .send_data(grpc(0, &first_request()), false)
        .expect("data");

    let mut sotw_responses = Responses::of(sotw_response).await;
    let mut delta_responses = Responses::of(delta_response).await;
    let sotw_cds: DiscoveryResponse = sotw_responses.next().await;
    let delta_cds: DeltaDiscoveryResponse = delta_responses.next().await;
    assert_eq!(harness::names_of(&sotw_cds), harness::set(&[HOST]));
    assert_eq!(harness::delta_names(&delta_cds), harness::set(&[HOST]));
    assert_eq!(server.ads.connections().len(), 2);

    delta.send_reset(h2::Reason::CANCEL);
    until("pilot ended the reset call", || {
        let open = server.ads.connections().list();
        open.len() == 1 && open[0].protocol == Protocol::Sotw
    })
    .await;

    // The SotW call: an ACK (nothing sent), then a new watch, answered.
    let ack = DiscoveryRequest {
        type_url: CLUSTER.into(),
        version_info: sotw_cds.version_info.clone(),
        response_nonce: sotw_cds.nonce.clone(),
        ..Default::default()
    };
    let eds = DiscoveryRequest {
        type_url: ENDPOINT.into(),
        resource_names: vec![HOST.into()],
        ..Default::default()
    };
    sotw.send_data(grpc(0, &ack.encode_to_vec()), false)
        .expect("data");
    sotw.send_data(grpc(0, &eds.encode_to_vec()), false)
        .expect("data");
    let sotw_eds: DiscoveryResponse = sotw_responses.next().await;
    assert_eq!(sotw_eds.type_url, ENDPOINT);
    assert_eq!(harness::names_of(&sotw_eds), harness::set(&[HOST]));

    // A new call on the same connection.
    let (response, mut send) = client
        .send_request(call(DELTA_PATH, "application/grpc"), false)
        .expect("a new call on the connection");
    send.send_data(grpc(0, &first_request()), false)
        .expect("data");
    let cds: DeltaDiscoveryResponse = Responses::of(response).await.next().await;
    assert_eq!(harness::delta_names(&cds), harness::set(&[HOST]));
    assert_eq!(server.ads.connections().len(), 2);
}

/// Request messages are read whatever their DATA framing: one cut into frames
/// of 1 to 7 bytes (its 5-byte prefix too) is served, and messages packed in
/// one frame, the last one running into the next frame, are each applied: the
/// ACK is recorded and answered by nothing, each subscription by its response.
#[tokio::test]
async fn requests_are_read_across_and_within_data_frames() {
    let server = serve(Limits::default(), Http2::default()).await;
    let (mut client, sent) = connect_recorded(server.addr).await;
    let (response, mut send) = client
        .send_request(call(DELTA_PATH, "application/grpc"), false)
        .expect("send");
    let first = grpc(0, &first_request());
    let (mut at, mut size) = (0, 1);
    while at < first.len() {
        let end = (at + size).min(first.len());
        send.send_data(first.slice(at..end), false).expect("data");
        at = end;
        size = size % 7 + 1;
    }
    let mut responses = Responses::of(response).await;
    let cds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(harness::delta_names(&cds), harness::set(&[HOST]));

    // One frame: the ACK, the EDS subscription, and the head of the LDS one;
    // the next frame: the rest of it.
    let mut packed = BytesMut::new();
    packed.extend_from_slice(&grpc(0, &ack(&cds)));
    packed.extend_from_slice(&grpc(0, &subscribe(ENDPOINT, &[HOST])));
    let cut = packed.len() + 3;
    packed.extend_from_slice(&grpc(0, &subscribe(LISTENER, &[])));
    let mut packed = packed.freeze();
    let rest = packed.split_off(cut);
    let lens = (packed.len(), rest.len());
    send.send_data(packed, false).expect("data");
    send.send_data(rest, false).expect("data");

    let eds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(eds.type_url, ENDPOINT);
    assert_eq!(harness::delta_names(&eds), harness::set(&[HOST]));
    let lds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(lds.type_url, LISTENER);
    assert_eq!(harness::delta_names(&lds), harness::set(&["0.0.0.0_80"]));
    responses.quiet().await;
    let open = server.ads.connections().list();
    let acked = open[0].type_status(CLUSTER).expect("CDS watched");
    assert_eq!(acked.nonce_acked.as_deref(), Some(cds.nonce.as_str()));

    // The framing was as meant: the first request in frames of 1 to 7
    // bytes, then the packed frame and its rest.
    let data: Vec<usize> = sent
        .frames()
        .iter()
        .filter(|f| f.kind == DATA && f.stream == 1)
        .map(|f| f.len)
        .collect();
    let (small, packed) = data.split_at(data.len() - 2);
    assert!(small.len() >= first.len() / 7, "{data:?}");
    assert!(small.iter().all(|n| (1..=7).contains(n)), "{data:?}");
    assert_eq!(small.iter().sum::<usize>(), first.len());
    assert_eq!((packed[0], packed[1]), lens);
}

/// Request headers of 40 KiB, more than one 16 KiB frame (so HEADERS and
/// CONTINUATION frames), are accepted and the call is served.
#[tokio::test]
async fn request_headers_larger_than_a_frame_are_accepted() {
    let server = serve(Limits::default(), Http2::default()).await;
    let (mut client, sent) = connect_recorded(server.addr).await;
    let mut request = call(DELTA_PATH, "application/grpc");
    // `X` takes 8 bits in HPACK's Huffman code, so the block stays 40 KiB:
    // a HEADERS frame and two CONTINUATION frames.
    let pad = "X".repeat(40 * 1024);
    request
        .headers_mut()
        .insert("x-pad", http::HeaderValue::from_str(&pad).expect("header"));
    let (response, mut send) = client.send_request(request, false).expect("send");
    send.send_data(grpc(0, &first_request()), false)
        .expect("data");
    let mut responses = Responses::of(response).await;
    let cds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(harness::delta_names(&cds), harness::set(&[HOST]));

    // The header block went as HEADERS without END_HEADERS, then
    // CONTINUATION frames, the last with END_HEADERS.
    let block: Vec<Frame> = sent
        .frames()
        .into_iter()
        .filter(|f| f.stream == 1 && (f.kind == HEADERS || f.kind == CONTINUATION))
        .collect();
    assert_eq!(block[0].kind, HEADERS, "{block:?}");
    assert_eq!(block[0].flags & 0x4, 0, "{block:?}");
    assert!(block.len() >= 3, "{block:?}");
    assert!(
        block[1..].iter().all(|f| f.kind == CONTINUATION),
        "{block:?}"
    );
    assert_eq!(block[block.len() - 1].flags & 0x4, 0x4, "{block:?}");
    assert!(
        block.iter().map(|f| f.len).sum::<usize>() > 2 * 16 * 1024,
        "{block:?}"
    );
}

/// A client that ends its side of a call (END_STREAM on a DATA frame, on
/// trailers, or on its headers before any message) gets the responses already
/// due, then `grpc-status: 0`; pilot drops the call.
#[tokio::test]
async fn a_call_the_client_ends_is_ended_with_ok() {
    let server = serve(Limits::default(), Http2::default()).await;
    let mut client = connect(server.addr).await;

    // END_STREAM with the first request.
    let (mut responses, _send) = open_delta(&mut client, &first_request(), true).await;
    let cds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(responses.status().await, ("0".into(), String::new()));

    // END_STREAM on trailers after the first request.
    let (response, mut send) = client
        .send_request(call(DELTA_PATH, "application/grpc"), false)
        .expect("send");
    send.send_data(grpc(0, &first_request()), false)
        .expect("data");
    send.send_trailers(http::HeaderMap::new())
        .expect("trailers");
    let mut responses = Responses::of(response).await;
    let cds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(responses.status().await, ("0".into(), String::new()));

    // END_STREAM on an empty DATA frame once the call is served.
    let (mut responses, mut send) = open_delta(&mut client, &first_request(), false).await;
    let cds: DeltaDiscoveryResponse = responses.next().await;
    assert_eq!(cds.type_url, CLUSTER);
    assert_eq!(server.ads.connections().len(), 1);
    send.send_data(Bytes::new(), true).expect("data");
    assert_eq!(responses.status().await, ("0".into(), String::new()));

    // END_STREAM on the headers: no request, no response, a status.
    let (response, _) = client
        .send_request(call(DELTA_PATH, "application/grpc"), true)
        .expect("send");
    let responses = Responses::of(response).await;
    assert_eq!(responses.status().await, ("0".into(), String::new()));

    until("pilot dropped every ended call", || {
        server.ads.connections().is_empty()
    })
    .await;
}

/// A client that ends its side inside a message gets INVALID_ARGUMENT.
#[tokio::test]
async fn a_call_ended_inside_a_message_is_invalid_argument() {
    let server = serve(Limits::default(), Http2::default()).await;
    let mut client = connect(server.addr).await;
    let (response, mut send) = client
        .send_request(call(DELTA_PATH, "application/grpc"), false)
        .expect("send");
    let first = grpc(0, &first_request());
    send.send_data(first.slice(..first.len() - 1), true)
        .expect("data");
    let (code, message) = Responses::of(response).await.status().await;
    assert_eq!(code, "3", "INVALID_ARGUMENT: {message}");
    assert!(message.contains("inside a message"), "{message}");
}

/// A request larger than pilot's stream window (1 MiB here) arrives whole:
/// pilot returns credit for a message's first part while the call waits for
/// the rest, and answers it.
#[tokio::test]
async fn a_request_larger_than_the_stream_window_is_read_whole() {
    let settings = Http2::default();
    let server = serve(Limits::default(), settings).await;
    let mut client = connect(server.addr).await;
    let (response, mut send) = client
        .send_request(call(DELTA_PATH, "application/grpc"), false)
        .expect("send");
    let padding: Vec<String> = (0..40_000)
        .map(|i| format!("unknown-{i:05}.padding.default.svc.cluster.local"))
        .collect();
    let mut names: Vec<&str> = padding.iter().map(String::as_str).collect();
    names.push(HOST);
    let request = DeltaDiscoveryRequest {
        node: harness::node("sidecar~10.0.0.9~c.default~default.svc.cluster.local"),
        type_url: CLUSTER.into(),
        resource_names_subscribe: names.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
    .encode_to_vec();
    assert!(
        request.len() > 3 * settings.stream_window as usize / 2,
        "{} bytes",
        request.len()
    );
    send.send_data(grpc(0, &request), false).expect("data");
    let mut responses = Responses::of(response).await;
    let cds: DeltaDiscoveryResponse = responses.next().await;
    assert!(harness::delta_names(&cds).contains(HOST), "{cds:?}");
}

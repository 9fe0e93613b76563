//! The inline HTTP/1.1 exchange against a scripted upstream on a real
//! socket: framing (length, chunked with trailers, until close), pooling
//! and its limits, interim responses, stale connections, bad responses.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::config::cluster::v3::{
    CircuitBreakers, Cluster as ClusterProto, circuit_breakers,
};
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address, socket_address};
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints, lb_endpoint,
};
use http::{Method, Request, Response};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::body::Body;
use crate::cluster::{Cluster, Host, PickInput};
use crate::upstream::{UpstreamError, send};

/// What the scripted upstream does with the request it reads.
#[derive(Clone)]
enum Answer {
    /// Writes these pieces, pausing between them, and keeps the connection.
    Send(Vec<&'static [u8]>),
    /// Writes these pieces and closes the connection.
    SendThenClose(Vec<&'static [u8]>),
    /// Closes the connection without answering.
    Drop,
}

/// An upstream answering the n-th request it reads (over all its
/// connections) with the n-th answer.
struct Scripted {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
}

async fn scripted(answers: Vec<Answer>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    let (acc, reqs) = (Arc::clone(&accepted), Arc::clone(&requests));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            acc.fetch_add(1, Ordering::SeqCst);
            let (answers, reqs) = (Arc::clone(&answers), Arc::clone(&reqs));
            tokio::spawn(serve(stream, answers, reqs));
        }
    });
    Scripted {
        addr,
        accepted,
        requests,
    }
}

async fn serve(
    mut stream: TcpStream,
    answers: Arc<Mutex<std::vec::IntoIter<Answer>>>,
    requests: Arc<Mutex<Vec<Vec<u8>>>>,
) {
    let mut buf = Vec::new();
    loop {
        let Some(len) = read_request(&mut stream, &mut buf).await else {
            return;
        };
        requests
            .lock()
            .expect("requests")
            .push(buf.drain(..len).collect());
        let answer = answers.lock().expect("answers").next();
        let (pieces, close) = match answer {
            Some(Answer::Send(p)) => (p, false),
            Some(Answer::SendThenClose(p)) => (p, true),
            Some(Answer::Drop) | None => return,
        };
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if stream.write_all(piece).await.is_err() {
                return;
            }
        }
        if close {
            return;
        }
    }
}

/// Reads one request (head and `content-length` body) into `buf`; its length.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut fields);
        if let Ok(httparse::Status::Complete(head)) = req.parse(buf) {
            let body = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            if buf.len() >= head + body {
                return Some(head + body);
            }
        }
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn cluster(addr: SocketAddr, max_connections: Option<u32>) -> (Arc<Cluster>, Arc<Host>) {
    let endpoint = LbEndpoint {
        host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
            address: Some(Address {
                address: Some(address::Address::SocketAddress(SocketAddress {
                    address: addr.ip().to_string(),
                    port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(
                        addr.port(),
                    ))),
                    ..Default::default()
                })),
            }),
            ..Default::default()
        })),
        ..Default::default()
    };
    let proto = ClusterProto {
        name: "scripted".into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
            seconds: 1,
            nanos: 0,
        }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: "scripted".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }],
            ..Default::default()
        }),
        circuit_breakers: max_connections.map(|n| CircuitBreakers {
            thresholds: vec![circuit_breakers::Thresholds {
                max_connections: Some(envoy_types::pb::google::protobuf::UInt32Value { value: n }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let secrets = Arc::new(crate::secrets::Secrets::new(None));
    let cluster =
        Arc::new(Cluster::build(Arc::new(proto), None, None, &secrets).expect("a valid cluster"));
    let input = PickInput {
        hash: None,
        original_dst: None,
    };
    let host = cluster.pick(&input, &|_| false).expect("a host");
    (cluster, host)
}

fn request(method: Method, path: &str, body: &'static [u8]) -> Request<Body> {
    let mut req = Request::new(Body::full(Bytes::from_static(body)));
    *req.method_mut() = method;
    *req.uri_mut() = path.parse().expect("a path");
    req.headers_mut()
        .insert(http::header::HOST, http::HeaderValue::from_static("svc"));
    req
}

async fn call(
    c: &(Arc<Cluster>, Arc<Host>),
    req: Request<Body>,
) -> Result<Response<Body>, UpstreamError> {
    tokio::time::timeout(Duration::from_secs(5), send(&c.0, &c.1, req, false))
        .await
        .expect("an answer within 5 s")
}

/// The status, body and trailers of a response.
async fn read(resp: Response<Body>) -> (u16, Vec<u8>, Option<http::HeaderMap>) {
    let status = resp.status().as_u16();
    let collected = resp.into_body().collect().await.expect("a whole body");
    let trailers = collected.trailers().cloned();
    (status, collected.to_bytes().to_vec(), trailers)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn a_length_delimited_response_and_its_connection_reused() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello";
    let up = scripted(vec![Answer::Send(vec![ok]), Answer::Send(vec![ok])]).await;
    let c = cluster(up.addr, None);
    for _ in 0..2 {
        let resp = call(&c, request(Method::GET, "/a?b=1", b""))
            .await
            .expect("a response");
        assert_eq!(resp.headers()["x-a"], "1");
        assert_eq!(read(resp).await.1, b"hello");
    }
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
    let reqs = up.requests.lock().expect("requests");
    let first = text(&reqs[0]);
    assert!(first.starts_with("GET /a?b=1 HTTP/1.1\r\n"), "{first}");
    assert!(first.contains("host: svc\r\n"), "{first}");
    assert!(!first.contains("content-length"), "a GET has none: {first}");
}

#[tokio::test]
async fn a_chunked_response_in_pieces_with_trailers() {
    let up = scripted(vec![
        Answer::Send(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 99\r\n\r\n5\r\nhel",
            b"lo\r\n6;ext=1\r\n world\r",
            b"\n0\r\ngrpc-status: 0\r\n\r\n",
        ]),
        Answer::Send(vec![b"HTTP/1.1 204 No Content\r\n\r\n"]),
    ])
    .await;
    let c = cluster(up.addr, None);
    let resp = call(&c, request(Method::GET, "/", b""))
        .await
        .expect("a response");
    assert!(
        resp.headers().get("content-length").is_none(),
        "transfer-encoding overrides content-length"
    );
    let (status, body, trailers) = read(resp).await;
    assert_eq!((status, text(&body).as_str()), (200, "hello world"));
    assert_eq!(trailers.expect("trailers")["grpc-status"], "0");
    let resp = call(&c, request(Method::GET, "/", b""))
        .await
        .expect("a response");
    assert_eq!(read(resp).await.0, 204);
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
}

#[tokio::test]
async fn close_delimited_and_connection_close_responses_are_not_pooled() {
    let up = scripted(vec![
        Answer::SendThenClose(vec![b"HTTP/1.1 200 OK\r\n\r\npart1", b"part2"]),
        Answer::Send(vec![
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        ]),
        Answer::Send(vec![b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"]),
        Answer::Send(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]),
    ])
    .await;
    let c = cluster(up.addr, None);
    let resp = call(&c, request(Method::GET, "/", b""))
        .await
        .expect("a response");
    assert_eq!(
        read(resp).await.1,
        b"part1part2",
        "read until the upstream closed"
    );
    for _ in 0..3 {
        let resp = call(&c, request(Method::GET, "/", b""))
            .await
            .expect("a response");
        assert_eq!(read(resp).await.1, b"ok");
    }
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        4,
        "no connection reused after a close-delimited body, `connection: close` or HTTP/1.0"
    );
}

#[tokio::test]
async fn head_and_interim_responses() {
    let up = scripted(vec![
        Answer::Send(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"]),
        Answer::Send(vec![
            b"HTTP/1.1 100 Continue\r\n\r\n",
            b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        ]),
    ])
    .await;
    let c = cluster(up.addr, None);
    let resp = call(&c, request(Method::HEAD, "/", b""))
        .await
        .expect("a response");
    assert_eq!(resp.headers()["content-length"], "1000");
    let (status, body, _) = read(resp).await;
    assert_eq!((status, body.len()), (200, 0), "no body after HEAD");
    let resp = call(&c, request(Method::GET, "/", b""))
        .await
        .expect("a response");
    assert!(
        resp.headers().get("link").is_none(),
        "interim heads are dropped"
    );
    assert_eq!(read(resp).await, (200, b"ok".to_vec(), None));
    assert_eq!(
        up.accepted.load(Ordering::SeqCst),
        1,
        "one connection, reused"
    );
}

static LARGE: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| (0..300_000u32).map(|i| (i % 251) as u8).collect());

#[tokio::test]
async fn large_bodies_both_ways() {
    let head: &'static [u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 300000\r\n\r\n";
    let body: &'static [u8] = &LARGE;
    let up = scripted(vec![Answer::Send(vec![
        head,
        &body[..70_000],
        &body[70_000..200_000],
        &body[200_000..],
    ])])
    .await;
    let c = cluster(up.addr, None);
    let resp = call(&c, request(Method::POST, "/up", &body[..100_000]))
        .await
        .expect("a response");
    let (status, got, _) = read(resp).await;
    assert_eq!(status, 200);
    assert!(got == body, "the 300,000 bytes arrive in order");
    let reqs = up.requests.lock().expect("requests");
    let sent = &reqs[0];
    assert!(text(&sent[..200]).contains("content-length: 100000\r\n"));
    assert!(
        sent.ends_with(&body[..100_000]),
        "the whole request body went up"
    );
}

#[tokio::test]
async fn bad_responses_are_protocol_errors_and_short_bodies_fail() {
    let up = scripted(vec![
        Answer::Send(vec![b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n"]),
        Answer::Send(vec![b"garbage\r\n\r\n"]),
        Answer::SendThenClose(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"]),
        Answer::SendThenClose(vec![
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ]),
    ])
    .await;
    let c = cluster(up.addr, None);
    for _ in 0..2 {
        match call(&c, request(Method::GET, "/", b"")).await {
            Err(e @ UpstreamError::Protocol(_)) => assert_eq!(e.flags(), "UPE"),
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
    for _ in 0..2 {
        let resp = call(&c, request(Method::GET, "/", b""))
            .await
            .expect("a head");
        assert!(
            resp.into_body().collect().await.is_err(),
            "a body cut short or badly chunked is an error"
        );
    }
}

#[tokio::test]
async fn stale_pooled_connections() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let up = scripted(vec![
        // Closed as soon as answered: the next request must see it closed.
        Answer::SendThenClose(vec![b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]),
        Answer::Send(vec![ok]),
        // Closed on reading the next request: a GET goes again elsewhere...
        Answer::Drop,
        Answer::Send(vec![ok]),
        // ... a POST does not.
        Answer::Drop,
    ])
    .await;
    let c = cluster(up.addr, None);
    let resp = call(&c, request(Method::GET, "/", b""))
        .await
        .expect("a response");
    assert_eq!(read(resp).await.1, b"ok");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let resp = call(&c, request(Method::POST, "/", b""))
        .await
        .expect("a fresh connection");
    assert_eq!(read(resp).await.1, b"ok");
    let resp = call(&c, request(Method::GET, "/", b""))
        .await
        .expect("sent again");
    assert_eq!(read(resp).await.1, b"ok");
    match call(&c, request(Method::POST, "/", b"")).await {
        Err(e @ UpstreamError::Closed(_)) => assert_eq!(e.flags(), "UC"),
        other => panic!("expected the connection's termination, got {other:?}"),
    }
    assert_eq!(up.accepted.load(Ordering::SeqCst), 3);
    let reqs = up.requests.lock().expect("requests");
    assert!(
        text(&reqs[1]).contains("content-length: 0\r\n"),
        "an empty POST says so"
    );
}

#[tokio::test]
async fn the_other_kind_of_idle_connection_makes_room() {
    let ok: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let up = scripted(vec![Answer::Send(vec![ok]), Answer::Send(vec![ok])]).await;
    let c = cluster(up.addr, Some(1));
    // An upgrade request goes through hyper's connection (answered without
    // upgrading, the connection is pooled as hyper's).
    let mut req = request(Method::GET, "/", b"");
    req.headers_mut()
        .insert(http::header::UPGRADE, http::HeaderValue::from_static("x"));
    let resp = call(&c, req).await.expect("a response");
    assert_eq!(read(resp).await.1, b"ok");
    // At `max_connections: 1`, an inline request closes that one.
    let resp = call(&c, request(Method::GET, "/", b""))
        .await
        .expect("room made");
    assert_eq!(read(resp).await.1, b"ok");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

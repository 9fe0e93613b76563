//! The data path's protocols, end to end through the real proxy (in-process
//! `App`, static bootstrap, no control plane): HTTP/1.1 keep-alive with
//! upstream connection reuse, chunked bodies, WebSocket upgrade, HTTP/2 by
//! prior knowledge downstream, gRPC to an HTTP/2 upstream with trailers, the
//! route's prefix rewrite, a 404 for no route, a response body cut by the
//! route timeout, and an opaque TCP proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[path = "support/tcp.rs"]
mod tcp;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy::app::App;
use proxy::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(10);

/// An HTTP upstream (HTTP/1.1 or HTTP/2 by prior knowledge) that answers
/// with the request's method, path and body, a header naming its connection,
/// and, over HTTP/2, `grpc-status: 0` trailers.
struct Upstream {
    addr: SocketAddr,
    connections: Arc<AtomicU64>,
}

async fn upstream(http2: bool) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&connections);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let id = count.fetch_add(1, Ordering::SeqCst) + 1;
            let svc = service_fn(move |req: Request<Incoming>| async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await?.to_bytes();
                let text = format!(
                    "{} {} {}",
                    parts.method,
                    parts.uri.path(),
                    String::from_utf8_lossy(&body)
                );
                let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = if http2 {
                    let mut trailers = http::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    vec![
                        Ok(Frame::data(Bytes::from(text))),
                        Ok(Frame::trailers(trailers)),
                    ]
                } else {
                    vec![Ok(Frame::data(Bytes::from(text)))]
                };
                let mut resp = Response::new(StreamBody::new(futures::stream::iter(frames)));
                resp.headers_mut()
                    .insert("x-upstream-conn", id.to_string().parse().unwrap());
                Ok::<_, hyper::Error>(resp)
            });
            let io = TokioIo::new(stream);
            tokio::spawn(async move {
                if http2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, svc)
                        .await;
                }
            });
        }
    });
    Upstream { addr, connections }
}

/// The echo upstream's answer to an upgrade request.
const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";

/// A raw TCP server: WebSocket-style `101` then echo for HTTP upgrades, plain
/// echo otherwise.
async fn echo_upstream() -> SocketAddr {
    tcp::serve(move |mut s| async move {
        let mut buf = vec![0u8; 4096];
        let mut first = true;
        loop {
            let n = match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if first && buf[..n].starts_with(b"GET ") {
                first = false;
                let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                assert!(head.contains("upgrade: websocket"), "{head}");
                let _ = s.write_all(SWITCHING).await;
                continue;
            }
            first = false;
            if s.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// A raw HTTP/1.1 server that answers every request with a head promising 10
/// bytes and 5 of them, then holds the connection without sending the rest.
async fn stalling_upstream() -> SocketAddr {
    tcp::serve(move |mut s| async move {
        if tcp::read_head(&mut s).await.is_none() {
            return;
        }
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await
}

fn cluster(name: &str, addr: SocketAddr, http2: bool) -> String {
    let options = if http2 {
        r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }"#
    } else {
        ""
    };
    format!(
        r#"
  - name: {name}
    type: STATIC
    connect_timeout: 1s{options}
    load_assignment:
      cluster_name: {name}
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}"#,
        port = addr.port()
    )
}

struct Proxy {
    http: SocketAddr,
    tcp: SocketAddr,
    admin: SocketAddr,
    h1: Upstream,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Proxy {
    let h1 = upstream(false).await;
    let h2 = upstream(true).await;
    let echo = echo_upstream().await;
    let stalling = stalling_upstream().await;
    let yaml = format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          upgrade_configs: [{{ upgrade_type: websocket }}]
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/ws" }}
                route: {{ cluster: echo }}
              - match: {{ prefix: "/slow-body" }}
                route: {{ cluster: stalling, timeout: 0.3s }}
              - match: {{ prefix: "/h2/" }}
                route: {{ cluster: h2, prefix_rewrite: "/" }}
              - match: {{ prefix: "/" }}
                route: {{ cluster: h1 }}
            - name: none
              domains: ["nothing.example"]
              routes:
              - match: {{ prefix: "/never" }}
                direct_response: {{ status: 200 }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo
  clusters:{}{}{}{}
"#,
        cluster("h1", h1.addr, false),
        cluster("h2", h2.addr, true),
        cluster("echo", echo, false),
        cluster("stalling", stalling, false),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, yaml).unwrap();
    let app = App::build(Config::for_path(&path))
        .await
        .expect("the bootstrap is accepted");
    let data_path = app.data_path();
    let admin = app.addrs().admin.expect("admin bound");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = app
            .run_until(async {
                let _ = stopped.await;
            })
            .await;
    });
    let deadline = tokio::time::Instant::now() + WAIT;
    let bound = loop {
        let bound = data_path.bound();
        if bound.len() == 2 {
            break bound;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listeners not bound: {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Proxy {
        http: bound["http"],
        tcp: bound["tcp"],
        admin,
        h1,
        _stop: stop,
        _dir: dir,
    }
}

async fn h1_client(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", "example.com")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_keep_alive_reuses_the_upstream_connection() {
    let p = start().await;
    let mut client = h1_client(p.http).await;
    let mut conns = Vec::new();
    for i in 0..5 {
        client.ready().await.expect("the connection stays open");
        let resp = tokio::time::timeout(WAIT, client.send_request(get(&format!("/r{i}"))))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["server"], "envoy");
        assert!(resp.headers().contains_key("x-envoy-upstream-service-time"));
        conns.push(
            resp.headers()["x-upstream-conn"]
                .to_str()
                .unwrap()
                .to_string(),
        );
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, format!("GET /r{i} ").as_bytes());
    }
    assert!(
        conns.iter().all(|c| c == &conns[0]),
        "one upstream connection carried every request: {conns:?}"
    );
    assert_eq!(p.h1.connections.load(Ordering::SeqCst), 1);

    // Istio's standard metrics counted the five requests, with their bytes.
    client.ready().await.unwrap();
    let mut req = get("/stats/prometheus");
    *req.uri_mut() = "/stats/prometheus".parse().unwrap();
    let mut admin = h1_client(p.admin).await;
    let resp = admin.send_request(req).await.unwrap();
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let total = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap_or_else(|| panic!("no istio_requests_total for 200s:\n{text}"));
    assert!(total.ends_with(" 5"), "{total}");
    assert!(total.contains("request_protocol=\"http\""), "{total}");
    let bytes = text
        .lines()
        .find(|l| l.starts_with("istio_response_bytes_sum{"))
        .unwrap_or_else(|| panic!("no istio_response_bytes:\n{text}"));
    // Each body is "GET /rN " (8 bytes).
    assert!(bytes.ends_with(" 40"), "{bytes}");
}

/// The admin's text at `path`.
async fn admin_text(admin: SocketAddr, path: &str) -> String {
    let mut client = h1_client(admin).await;
    let resp = client.send_request(get(path)).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_by_the_route_timeout_is_flagged_ut() {
    let p = start().await;
    let mut client = h1_client(p.http).await;
    let start = std::time::Instant::now();
    let resp = tokio::time::timeout(WAIT, client.send_request(get("/slow-body")))
        .await
        .expect("the head in time")
        .expect("the head");
    // The head came at once: its status stays, and the body is cut at the
    // route's 300 ms (Envoy's route timeout runs until the response ends).
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("the body ends in time");
    assert!(body.is_err(), "the body was cut: {body:?}");
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "cut at the route timeout: {elapsed:?}"
    );
    let stats = admin_text(p.admin, "/stats").await;
    assert!(
        stats
            .lines()
            .any(|l| l == "cluster.stalling.upstream_rq_timeout: 1"),
        "{stats}"
    );
    // Istio's metrics carry Envoy's flag, with the status that was sent.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = admin_text(p.admin, "/stats/prometheus").await;
        if let Some(line) = text
            .lines()
            .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_flags=\"UT\""))
        {
            assert!(line.contains("response_code=\"200\""), "{line}");
            assert!(line.ends_with(" 1"), "{line}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no istio_requests_total flagged UT:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_bodies_are_forwarded() {
    let p = start().await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nhost: example.com\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let text = loop {
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if text.contains("POST /upload hello world") {
            break text;
        }
    };
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_paths_get_404() {
    let p = start().await;
    let mut client = h1_client(p.http).await;
    // A host the config names, with a path none of its routes match.
    let mut req = get("/missing");
    req.headers_mut()
        .insert("host", "nothing.example".parse().unwrap());
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 404);
    client.ready().await.unwrap();
    let mut req = get("/never");
    req.headers_mut()
        .insert("host", "nothing.example".parse().unwrap());
    let resp = client.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "the direct response of the named host");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_are_spliced() {
    let p = start().await;
    let mut s = TcpStream::connect(p.http).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nhost: example.com\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"ping over the upgraded connection")
        .await
        .unwrap();
    let mut echoed = vec![0u8; 33];
    tokio::time::timeout(WAIT, s.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping over the upgraded connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_downstream_and_grpc_trailers_from_an_http2_upstream() {
    let p = start().await;
    let stream = TcpStream::connect(p.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    // HTTP/2 downstream to the HTTP/1.1 upstream.
    let req = Request::builder()
        .uri("http://example.com/plain")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "GET /plain ".as_bytes());
    // A gRPC-style call to the HTTP/2 upstream: rewritten path, trailers kept.
    let req = Request::builder()
        .method("POST")
        .uri("http://example.com/h2/pkg.Service/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"payload")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers forwarded");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(
        collected.to_bytes(),
        "POST /pkg.Service/Call payload".as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_proxy_carries_bytes_both_ways() {
    let p = start().await;
    let mut s = TcpStream::connect(p.tcp).await.unwrap();
    for round in 0..3 {
        let msg = format!("opaque bytes, round {round}");
        s.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(WAIT, s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    drop(s);
    // The TCP metrics count the connection once it closed.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut admin = h1_client(p.admin).await;
        let resp = admin.send_request(get("/stats/prometheus")).await.unwrap();
        let text = String::from_utf8(
            resp.into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
        .unwrap();
        let closed = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_closed_total{"));
        let sent = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_sent_bytes_total{"));
        if let (Some(closed), Some(sent)) = (closed, sent)
            && closed.ends_with(" 1")
        {
            assert!(
                sent.ends_with(&format!(" {}", 3 * "opaque bytes, round 0".len())),
                "{sent}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no TCP metrics:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

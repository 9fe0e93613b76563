//! The connection manager's path settings and stream idle timeout, end to
//! end through the real proxy (in-process `App`, static bootstrap) and, with
//! the same bootstrap, through the real `envoy` (the oracle): every request
//! must get the same answer from both.
//!
//! `normalize_path` + `merge_slashes` decide both the route (`prefix: /a/c`)
//! and the path the upstream receives (it answers with it); escaped slashes
//! are kept, rejected or redirected per `path_with_escaped_slashes_action`;
//! a `stream_idle_timeout` of 300 ms answers 408 to a request whose body
//! never comes, and not to one whose body keeps trickling in.
//!
//! Needs `envoy` on PATH (or `ENVOY_BIN`); without it the test fails rather
//! than pass silently.

#[path = "support/side_by_side.rs"]
mod side_by_side;
#[path = "support/tcp.rs"]
mod tcp;

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt as _;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use side_by_side::{Envoy, Mizzen, free_port};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// An HTTP/1.1 upstream that reads the whole request body, then answers 200
/// with the path and query it received; for `/a/c/slow`, it sends `partial`
/// and then nothing more.
async fn upstream() -> SocketAddr {
    tcp::serve(|stream| async move {
        let svc = service_fn(|req: Request<Incoming>| async move {
            let (parts, body) = req.into_parts();
            body.collect().await?;
            let path = parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            let body: BoxBody<Bytes, hyper::Error> = if path == "/a/c/slow" {
                let first = futures::stream::once(async {
                    Ok::<_, hyper::Error>(Frame::data(Bytes::from("partial")))
                });
                BodyExt::boxed(StreamBody::new(first.chain(futures::stream::pending())))
            } else {
                Full::new(Bytes::from(path))
                    .map_err(|never| match never {})
                    .boxed()
            };
            Ok::<_, hyper::Error>(Response::new(body))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    })
    .await
}

fn hcm(name: &str, port: u16, escaped: &str) -> String {
    format!(
        r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: {escaped}
          stream_idle_timeout: 0.3s
          route_config:
            name: {name}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/a/c" }}
                route: {{ cluster: up }}
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 404, body: {{ inline_string: "no route" }} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
    )
}

/// The bootstrap both proxies run; ports zero for the in-process proxy.
fn bootstrap(up: SocketAddr, admin: u16, ports: [u16; 3]) -> String {
    format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}
static_resources:
  listeners:{}{}{}
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: 127.0.0.1, port_value: {up_port} }} }}
"#,
        hcm("keep", ports[0], "KEEP_UNCHANGED"),
        hcm("reject", ports[1], "REJECT_REQUEST"),
        hcm("redirect", ports[2], "UNESCAPE_AND_REDIRECT"),
        up_port = up.port(),
    )
}

/// The proxy, its listeners in the order keep, reject, redirect.
async fn start_mizzen(up: SocketAddr) -> Mizzen {
    side_by_side::start_mizzen(
        &bootstrap(up, 0, [0, 0, 0]),
        ["keep", "reject", "redirect"],
        WAIT,
    )
    .await
}

/// The real Envoy on the same bootstrap.
async fn start_envoy(up: SocketAddr) -> Envoy {
    let ports = [free_port(), free_port(), free_port()];
    side_by_side::start(&bootstrap(up, free_port(), ports), ports).await
}

/// What a client saw: status, `location`, body.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    location: Option<String>,
    body: String,
}

/// Sends `head` (the request line and headers) then `body` one byte every
/// 100 ms, and reads the response until the connection closes.
async fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Seen {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for b in body {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&[*b]).await.unwrap();
    }
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
        .await
        .expect("the response ends")
        .expect("read");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Seen {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let location = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("location"))
        .map(|(_, v)| v.trim().to_string());
    Seen {
        status,
        location,
        body: body.to_string(),
    }
}

async fn get(addr: SocketAddr, path: &str) -> Seen {
    let head = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    exchange(addr, &head, b"").await
}

fn seen(status: u16, body: &str) -> Seen {
    Seen {
        status,
        location: None,
        body: body.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hcm_paths_and_stream_idle_timeout_match_envoy() {
    let up = upstream().await;
    let mizzen = start_mizzen(up).await;
    let envoy = start_envoy(up).await;
    let [keep, reject, redirect] = [0, 1, 2];
    let cases: Vec<(usize, &str, Seen)> = vec![
        // normalize_path: routed by `prefix: /a/c`, forwarded normalised.
        (keep, "/a/./b/../c", seen(200, "/a/c")),
        (keep, "/a/c/x/%2e%2E/y?q=/../z", seen(200, "/a/c/y?q=/../z")),
        (keep, "/a/%63/%7e\\x", seen(200, "/a/c/~/x")),
        (keep, "/../../a/c", seen(200, "/a/c")),
        (keep, "/a/c/../..", seen(404, "no route")),
        (keep, "/a/c/x/..;p/y", seen(200, "/a/c/y")),
        (keep, "/a/c/%00", seen(400, "")),
        // merge_slashes.
        (keep, "//a///c//x", seen(200, "/a/c/x")),
        // Escaped slashes: kept, rejected, redirected.
        (keep, "/a/c/x%2Fy%5c", seen(200, "/a/c/x%2Fy%5c")),
        (reject, "/a/c/x%2fy", seen(400, "")),
        (reject, "/a/c/x?q=%2F", seen(200, "/a/c/x?q=%2F")),
        (
            redirect,
            "/a/c/x%2F.%2F/y?q=%2F",
            Seen {
                status: 307,
                location: Some("/a/c/x/y?q=%2F".into()),
                body: String::new(),
            },
        ),
        (redirect, "/a/c/./x", seen(200, "/a/c/x")),
    ];
    for (listener, path, want) in &cases {
        let ours = get(mizzen.listeners[*listener], path).await;
        let theirs = get(envoy.listeners[*listener], path).await;
        assert_eq!(theirs, *want, "envoy, {path:?}");
        assert_eq!(ours, *want, "mizzen, {path:?}");
    }

    // stream_idle_timeout: a body that never comes is a 408 after ~300 ms...
    let head = "POST /a/c/x HTTP/1.1\r\nhost: test\r\ncontent-length: 10\r\n\r\n";
    for (who, addr) in [
        ("envoy", envoy.listeners[0]),
        ("mizzen", mizzen.listeners[0]),
    ] {
        let start = std::time::Instant::now();
        let got = exchange(addr, head, b"").await;
        let took = start.elapsed();
        assert_eq!(got, seen(408, "stream timeout"), "{who}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{who}: 408 after {took:?}"
        );
    }
    // ... while a body trickling in (a byte per 100 ms, 1 s in all) is not.
    let head =
        "POST /a/c/x HTTP/1.1\r\nhost: test\r\ncontent-length: 10\r\nconnection: close\r\n\r\n";
    for (who, addr) in [
        ("envoy", envoy.listeners[0]),
        ("mizzen", mizzen.listeners[0]),
    ] {
        let got = exchange(addr, head, b"0123456789").await;
        assert_eq!(got, seen(200, "/a/c/x"), "{who}");
    }
    // Once the response has started, an idle stream is reset: the chunked
    // body never gets its last chunk and the connection closes.
    let head = "GET /a/c/slow HTTP/1.1\r\nhost: test\r\n\r\n";
    for (who, addr) in [
        ("envoy", envoy.listeners[0]),
        ("mizzen", mizzen.listeners[0]),
    ] {
        let start = std::time::Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut raw))
            .await
            .unwrap_or_else(|_| panic!("{who}: the idle stream was not reset"))
            .ok();
        let took = start.elapsed();
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(parse(&raw).status, 200, "{who}: {text}");
        assert!(text.contains("partial"), "{who}: {text}");
        assert!(!text.ends_with("0\r\n\r\n"), "{who}: {text}");
        assert!(
            took >= Duration::from_millis(250) && took < Duration::from_secs(3),
            "{who}: reset after {took:?}"
        );
    }
}

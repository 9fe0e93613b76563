//! Route policies end to end through the proxy: a ring hash cluster with a
//! header hash policy (Istio's `consistentHash.httpHeaderName`) sends every
//! request with the same header value to the same host, and different values
//! spread over the hosts; the CORS filter answers an allowed preflight itself
//! and adds the CORS headers to an allowed cross-origin response.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

#[path = "support/tcp.rs"]
mod tcp;

use proxy::app::App;
use proxy::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

/// An upstream answering with its own name.
async fn named(name: &'static str) -> SocketAddr {
    tcp::serve(move |mut s| async move {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            while let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                got.drain(..end + 4);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                    name.len()
                );
                if s.write_all(resp.as_bytes()).await.is_err() {
                    return;
                }
            }
        }
    })
    .await
}

/// One request; the status, lower-cased headers and body.
async fn request(addr: SocketAddr, head: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (headers, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = headers[9..12].parse().unwrap();
    (status, headers.to_lowercase(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_and_cors() {
    let hosts = [named("a").await, named("b").await, named("c").await];
    let endpoints: String = hosts
        .iter()
        .map(|h| {
            format!(
                "\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}",
                h.port()
            )
        })
        .collect();
    let yaml = format!(
        r#"
static_resources:
  listeners:
  - name: http
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              typed_per_filter_config:
                envoy.filters.http.cors:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy
                  allow_origin_string_match: [{{ exact: "https://app.example" }}]
                  allow_methods: "GET,POST"
                  allow_headers: "x-user"
                  max_age: "600"
                  expose_headers: "x-served-by"
              routes:
              - match: {{ prefix: "/" }}
                route:
                  cluster: hashed
                  hash_policy: [{{ header: {{ header_name: x-user }} }}]
          http_filters:
          - name: envoy.filters.http.cors
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: hashed
    type: STATIC
    connect_timeout: 1s
    lb_policy: RING_HASH
    load_assignment:
      cluster_name: hashed
      endpoints:
      - lb_endpoints:{endpoints}
"#
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, yaml).unwrap();
    let app = App::build(Config::for_path(&path)).await.expect("starts");
    let data_path = app.data_path();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    let addr = loop {
        if let Some(a) = data_path.bound().get("http") {
            break *a;
        }
        assert!(tokio::time::Instant::now() < deadline, "no listener");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let get = |user: String| {
        format!("GET / HTTP/1.1\r\nhost: x\r\nx-user: {user}\r\nconnection: close\r\n\r\n")
    };

    // The same user always lands on the same host.
    let mut seen = BTreeSet::new();
    for user in 0..30 {
        let first = request(addr, &get(format!("user-{user}"))).await;
        assert_eq!(first.0, 200);
        for _ in 0..3 {
            let again = request(addr, &get(format!("user-{user}"))).await;
            assert_eq!(again.2, first.2, "user-{user} moved hosts");
        }
        seen.insert(first.2);
    }
    assert!(seen.len() >= 2, "30 users all hashed to one host: {seen:?}");

    // An allowed preflight is answered by the proxy.
    let (status, headers, _) = request(
        addr,
        "OPTIONS / HTTP/1.1\r\nhost: x\r\norigin: https://app.example\r\naccess-control-request-method: POST\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "{headers}");
    assert!(
        headers.contains("access-control-allow-origin: https://app.example"),
        "{headers}"
    );
    assert!(
        headers.contains("access-control-allow-methods: get,post"),
        "{headers}"
    );
    assert!(headers.contains("access-control-max-age: 600"), "{headers}");

    // An allowed cross-origin request gets the CORS response headers.
    let (status, headers, _) = request(
        addr,
        "GET / HTTP/1.1\r\nhost: x\r\norigin: https://app.example\r\nx-user: u\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers.contains("access-control-allow-origin: https://app.example"),
        "{headers}"
    );
    assert!(
        headers.contains("access-control-expose-headers: x-served-by"),
        "{headers}"
    );
    // Another origin gets none.
    let (_, headers, _) = request(
        addr,
        "GET / HTTP/1.1\r\nhost: x\r\norigin: https://evil.example\r\nx-user: u\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(
        !headers.contains("access-control-allow-origin"),
        "{headers}"
    );
}

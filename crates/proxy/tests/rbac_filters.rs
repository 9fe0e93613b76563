//! The RBAC and JWT filters end to end through the proxy from a static
//! bootstrap, with the numbers a stock Envoy 1.40 gives for the same config:
//! an HTTP listener with `jwt_authn` (a missing token passes, a bad one is a
//! 401 with Envoy's body), a LOG and a DENY RBAC filter (`403 RBAC: access
//! denied`; the LOG filter counts every request as allowed); and a TCP
//! listener whose network RBAC filters (LOG, then DENY) decide on the first
//! bytes: the upstream connection opens first, nothing is counted before the
//! client sends, then the connection is closed and counted as denied.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[path = "support/tcp.rs"]
mod tcp;

use proxy::app::App;
use proxy::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);
const JWKS: &str = r#"{"keys":[{"kty":"oct","alg":"HS256","kid":"test","k":"bWl6emVuLWF1dGh6LXRlc3Qtc2VjcmV0LTAxMjM0NTY3ODk"}]}"#;
/// `user-1` of `https://issuer.mizzen.test` (pilot's authz suite's token).
const USER1: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InRlc3QifQ.eyJpc3MiOiJodHRwczovL2lzc3Vlci5taXp6ZW4udGVzdCIsInN1YiI6InVzZXItMSIsImF1ZCI6ImF1dGh6LXRlc3QiLCJncm91cHMiOlsiZGV2Il19.wKrk2E7ulLNlpWtArg6QF6MiGKTKzlkoqyF8dU0QYO0";

/// An upstream that accepts, counts connections, and answers HTTP.
async fn upstream(accepted: Arc<AtomicU64>) -> SocketAddr {
    tcp::serve(move |mut s| {
        accepted.fetch_add(1, Ordering::SeqCst);
        async move {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    return;
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        }
    })
    .await
}

async fn request(addr: SocketAddr, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |a| format!("authorization: {a}\r\n"));
    let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let (_, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (text[9..12].parse().unwrap(), body.to_string())
}

fn bootstrap(up: SocketAddr) -> String {
    format!(
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
          stat_prefix: hp
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: up }}
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                origins-0:
                  issuer: https://issuer.mizzen.test
                  audiences: [authz-test]
                  payload_in_metadata: payload
                  local_jwks: {{ inline_string: '{JWKS}' }}
              rules:
              - match: {{ prefix: / }}
                requires:
                  requires_any:
                    requirements:
                    - provider_name: origins-0
                    - allow_missing: {{}}
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: LOG
                policies:
                  p:
                    permissions: [{{ url_path: {{ path: {{ prefix: /log }} }} }}]
                    principals: [{{ any: true }}]
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: DENY
                policies:
                  p:
                    permissions: [{{ url_path: {{ path: {{ prefix: /deny }} }} }}]
                    principals: [{{ any: true }}]
                  user2-only:
                    permissions: [{{ url_path: {{ path: {{ exact: /user2 }} }} }}]
                    principals:
                    - not_id:
                        sourced_metadata:
                          metadata_matcher:
                            filter: envoy.filters.http.jwt_authn
                            path: [{{ key: payload }}, {{ key: sub }}]
                            value: {{ string_match: {{ exact: user-2 }} }}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  - name: tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: tcp.
          rules:
            action: LOG
            policies:
              p: {{ permissions: [{{ any: true }}], principals: [{{ any: true }}] }}
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: tcp.
          rules:
            action: DENY
            policies:
              p:
                permissions: [{{ any: true }}]
                principals: [{{ direct_remote_ip: {{ address_prefix: 127.0.0.0, prefix_len: 8 }} }}]
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tp
          cluster: up
  clusters:
  - name: up
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: up
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {} }} }} }}
"#,
        up.port()
    )
}

fn counter(all: &[(String, Arc<proxy::rbac::RbacStats>)], prefix: &str) -> (u64, u64) {
    all.iter()
        .find(|(p, _)| p == prefix)
        .map_or((0, 0), |(_, s)| {
            (
                s.allowed.load(Ordering::SeqCst),
                s.denied.load(Ordering::SeqCst),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_and_jwt_filters_as_envoy() {
    let accepted = Arc::new(AtomicU64::new(0));
    let up = upstream(Arc::clone(&accepted)).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, bootstrap(up)).unwrap();
    let app = App::build(Config::for_path(&path)).await.expect("starts");
    let data_path = app.data_path();
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    let (http, tcp) = loop {
        let bound = data_path.bound();
        if let (Some(h), Some(t)) = (bound.get("http"), bound.get("tcp")) {
            break (*h, *t);
        }
        assert!(tokio::time::Instant::now() < deadline, "no listeners");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // HTTP: the filters in order.
    assert_eq!(request(http, "/x", None).await, (200, "ok".into()));
    assert_eq!(request(http, "/log", None).await, (200, "ok".into()));
    assert_eq!(
        request(http, "/deny", None).await,
        (403, "RBAC: access denied".into())
    );
    let user1 = format!("Bearer {USER1}");
    assert_eq!(request(http, "/x", Some(&user1)).await.0, 200);
    // The JWT payload reaches RBAC: /user2 is denied to anyone but user-2.
    assert_eq!(request(http, "/user2", Some(&user1)).await.0, 403);
    assert_eq!(
        request(http, "/x", Some("Bearer not.a.token")).await,
        (401, "Jwt header is an invalid JSON".into())
    );
    assert_eq!(request(http, "/x", Some("Basic abc")).await.0, 200);
    let hp = data_path
        .all_http_stats()
        .into_iter()
        .find(|(p, _)| p == "hp")
        .map(|(_, s)| s)
        .expect("hp stats");
    let mut stats = Vec::new();
    hp.render("hp", &mut stats);
    let get = |name: &str| {
        stats
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| *v)
            .unwrap_or_else(|| panic!("no {name} in {stats:?}"))
    };
    // 6 requests reached RBAC: LOG allowed 6, DENY allowed 4, denied 2.
    assert_eq!(get("http.hp.rbac.allowed"), 10);
    assert_eq!(get("http.hp.rbac.denied"), 2);
    assert_eq!(get("http.hp.rbac.shadow_allowed"), 0);
    assert_eq!(get("http.hp.jwt_authn.allowed"), 6);
    assert_eq!(get("http.hp.jwt_authn.denied"), 1);

    // TCP: decided on the first bytes.
    let before = accepted.load(Ordering::SeqCst);
    let mut s = TcpStream::connect(tcp).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while accepted.load(Ordering::SeqCst) == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the TCP proxy did not connect upstream before the first bytes"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counter(&data_path.all_rbac_stats(), "tcp."), (0, 0));
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .expect("the connection is closed");
    assert!(
        out.is_empty(),
        "denied data reached the upstream: {read:?} {out:?}"
    );
    // LOG counted it allowed, DENY denied it.
    assert_eq!(counter(&data_path.all_rbac_stats(), "tcp."), (1, 1));
}

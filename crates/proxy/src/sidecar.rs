//! `proxy sidecar`: what the injected `istio-proxy` container runs — istio-agent
//! and Envoy in one process, with no shell in the image.
//!
//! It owns turning the pod's environment into a running proxy: the pod's name,
//! namespace, IP and service account (downward-API environment the injector
//! sets), its labels (the downward-API file `/etc/istio/pod/labels`) and
//! istio-agent's `ISTIO_META_*` variables become the sidecar bootstrap
//! ([`common::bootstrap`], pilot by DNS name through a `STRICT_DNS` cluster),
//! written to `--bootstrap-out` in the `istio-envoy` volume; [`Config::run_config`]
//! gives the data plane's own flags (the certificate from citadel with the
//! projected token, the status, health and Prometheus ports), and the `proxy`
//! binary then runs [`crate::app::App`] in-process as `proxy -c` would.
//!
//! `proxy wait` ([`wait`]) is the classic sidecar's `postStart` hook: it polls
//! the readiness URL until it answers 200, so the kubelet starts the app
//! containers only once the sidecar has its configuration.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::bootstrap::{Sidecar, XdsAddress};
use common::runtime::LogFormat;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Prefix of istio-agent's environment variables that become node metadata.
pub const META_PREFIX: &str = "ISTIO_META_";

/// `proxy sidecar`'s flags, each with the environment variable the injector
/// (or istio-agent) sets.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "sidecar",
    about = "Run as a pod's injected sidecar: build the bootstrap from the pod's environment \
             and labels file, get the certificate from citadel and serve (istio-agent and \
             Envoy in one process)."
)]
pub struct Config {
    /// Pilot's plaintext ADS address; a DNS name works.
    #[arg(
        long,
        env = "DISCOVERY_ADDRESS",
        default_value = "pilot.istio-system.svc:15010",
        value_name = "HOST:PORT"
    )]
    pub discovery_address: XdsAddress,
    /// Citadel's address (IstioCertificateService over TLS).
    #[arg(
        long,
        env = "CA_ADDR",
        default_value = "citadel.istio-system.svc:15012",
        value_name = "HOST:PORT"
    )]
    pub ca_address: String,
    /// The pod's name.
    #[arg(long, env = "POD_NAME")]
    pub pod_name: String,
    /// The pod's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: String,
    /// The pod's IP.
    #[arg(long, env = "INSTANCE_IP")]
    pub pod_ip: IpAddr,
    /// The pod's service account.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: String,
    /// The pod's labels as the downward API writes them (`key="value"` lines).
    #[arg(
        long,
        env = "PROXY_LABELS_FILE",
        default_value = "/etc/istio/pod/labels",
        value_name = "FILE"
    )]
    pub labels_file: PathBuf,
    /// The projected service account token (audience istio-ca) sent to citadel.
    #[arg(
        long,
        env = "PROXY_TOKEN_FILE",
        default_value = "/var/run/secrets/tokens/istio-token",
        value_name = "FILE"
    )]
    pub token_file: PathBuf,
    /// PEM roots that verify citadel (ConfigMap istio-ca-root-cert).
    #[arg(
        long,
        env = "PROXY_CA_ROOT_CERT",
        default_value = "/var/run/secrets/istio/root-cert.pem",
        value_name = "FILE"
    )]
    pub ca_root_cert: PathBuf,
    /// The mesh's trust domain.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// Worker threads (Istio's sidecar default: 2; 0 runs one).
    #[arg(long, env = "PROXY_CONCURRENCY", default_value_t = 2)]
    pub concurrency: usize,
    /// Log level (Envoy's names, or a tracing filter).
    #[arg(short = 'l', long, env = "MIZZEN_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log output: `text` or `json`.
    #[arg(long, env = "MIZZEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// `REDIRECT` when `istio-init` captures the pod's traffic, `NONE` without capture.
    #[arg(long, env = "INTERCEPTION_MODE", value_enum, ignore_case = true, default_value_t = crate::agent::InterceptionMode::Redirect)]
    pub interception_mode: crate::agent::InterceptionMode,
    /// Run as a gateway (a `router` node: the listeners of the Gateway
    /// resources that select this pod, no capture), as istio-agent's
    /// `proxy router`.
    #[arg(long, env = "PROXY_ROUTER")]
    pub router: bool,
    /// Write an access log line per request and connection to this file
    /// (`/dev/stdout` for the container's log; meshConfig.accessLogFile).
    #[arg(long, env = "PROXY_ACCESS_LOG", value_name = "FILE")]
    pub access_log: Option<PathBuf>,
    /// Where the bootstrap is written (the istio-envoy volume).
    #[arg(
        long,
        env = "PROXY_BOOTSTRAP_OUT",
        default_value = "/etc/istio/proxy/envoy-rev.json",
        value_name = "FILE"
    )]
    pub bootstrap_out: PathBuf,
    /// The admin interface (Envoy's 15000, loopback only).
    #[arg(long, env = "PROXY_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// istio-agent's status port (`/healthz/ready`, `/stats/prometheus`,
    /// `POST /quitquitquit`); 0 turns it off.
    #[arg(long, env = "PROXY_STATUS_PORT", default_value_t = 15020)]
    pub status_port: u16,
    /// The readiness port (`/healthz/ready`).
    #[arg(long, env = "PROXY_HEALTH_PORT", default_value_t = 15021)]
    pub health_port: u16,
    /// Envoy's Prometheus port (`/stats/prometheus`); 0 turns it off.
    #[arg(long, env = "PROXY_PROMETHEUS_PORT", default_value_t = 15090)]
    pub prometheus_port: u16,
    /// Address the status, health and Prometheus ports bind.
    #[arg(long, env = "PROXY_BIND_ADDRESS", default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// On SIGTERM, how long inbound listeners drain before the proxy exits.
    #[arg(long, env = "TERMINATION_DRAIN_DURATION_SECONDS", default_value_t = 5)]
    pub termination_drain_s: u64,
}

/// Why the sidecar could not prepare its bootstrap.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The labels file could not be read.
    #[error(
        "cannot read the pod's labels {} (--labels-file): {source}; the injector mounts the \
         istio-podinfo downward-API volume at /etc/istio/pod",
        path.display()
    )]
    Labels {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of the labels file is not `key="value"`.
    #[error("{}:{line}: not a downward-API label line (key=\"value\"): {text:?}", path.display())]
    LabelLine {
        /// The file.
        path: PathBuf,
        /// Line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// The bootstrap could not be written.
    #[error(
        "cannot write the bootstrap {} (--bootstrap-out): {source}; the injector mounts the \
         istio-envoy volume at /etc/istio/proxy",
        path.display()
    )]
    Bootstrap {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Config {
    /// The data plane's flags: `proxy -c BOOTSTRAP` with the sidecar's
    /// identity, ports and logging. A pure function of the flags (the
    /// bootstrap reader in a child process derives the same).
    pub fn run_config(&self) -> crate::config::Config {
        let at = |port: u16| (port != 0).then(|| SocketAddr::new(self.bind_address, port));
        let mut c = crate::config::Config::for_path(&self.bootstrap_out);
        c.concurrency = self.concurrency;
        c.log_level = self.log_level.clone();
        c.log_format = self.log_format;
        c.ca_addr = Some(self.ca_address.clone());
        c.ca_root_cert = self.ca_root_cert.clone();
        c.token_file = self.token_file.clone();
        c.trust_domain = self.trust_domain.clone();
        c.status_addr = at(self.status_port);
        c.health_addr = Some(SocketAddr::new(self.bind_address, self.health_port));
        c.prometheus_addr = at(self.prometheus_port);
        c.termination_drain_s = self.termination_drain_s;
        c.access_log = self.access_log.clone();
        c
    }

    /// The bootstrap for this pod; `env` is the process environment, whose
    /// `ISTIO_META_*` variables become node metadata.
    pub fn sidecar(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Sidecar, Error> {
        let labels = read_labels(&self.labels_file)?;
        let metadata: BTreeMap<String, String> = env
            .into_iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(META_PREFIX)?.to_string(), v)))
            .filter(|(k, _)| !k.is_empty())
            .collect();
        Ok(Sidecar {
            pod: self.pod_name.clone(),
            namespace: self.pod_namespace.clone(),
            ip: self.pod_ip,
            labels,
            service_account: self.service_account.clone(),
            xds: self.discovery_address.clone(),
            delta: true,
            admin: self.admin_addr,
            sds_socket: None,
            router: self.router,
            health_port: None,
            capture: !self.router
                && self.interception_mode == crate::agent::InterceptionMode::Redirect,
            metadata,
        })
    }

    /// Writes the bootstrap to `--bootstrap-out` (a temporary file, then a rename).
    pub fn write_bootstrap(
        &self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), Error> {
        let sidecar = self.sidecar(env)?;
        let path = &self.bootstrap_out;
        let failed = |source| Error::Bootstrap {
            path: path.clone(),
            source,
        };
        let text = serde_json::to_string_pretty(&sidecar.bootstrap())
            .map_err(std::io::Error::other)
            .map_err(failed)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(failed)?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).map_err(failed)?;
        std::fs::rename(&tmp, path).map_err(failed)
    }
}

/// The downward API's labels file: one `key="value"` per line, the value
/// quoted as Go's `%q`.
pub fn read_labels(path: &Path) -> Result<BTreeMap<String, String>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Labels {
        path: path.to_path_buf(),
        source,
    })?;
    let mut labels = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || Error::LabelLine {
            path: path.to_path_buf(),
            line: i + 1,
            text: line.to_string(),
        };
        let (key, quoted) = line.split_once('=').ok_or_else(bad)?;
        let inner = quoted
            .strip_prefix('"')
            .and_then(|q| q.strip_suffix('"'))
            .ok_or_else(bad)?;
        labels.insert(key.to_string(), unquote(inner));
    }
    Ok(labels)
}

/// Undoes Go's `%q` escapes (`\"`, `\\`, `\n`, `\t`, `\r`).
fn unquote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// `proxy wait`'s flags (istio-agent's `pilot-agent wait`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "wait",
    about = "Wait until the sidecar is ready (HTTP 200 from its readiness URL), for a classic \
             sidecar's postStart hook; exits non-zero on timeout."
)]
pub struct WaitConfig {
    /// The readiness URL (plain HTTP).
    #[arg(long, default_value = "http://127.0.0.1:15021/healthz/ready")]
    pub url: String,
    /// Give up after this long (Go syntax: 60s, 2m).
    #[arg(long, default_value = "60s", value_parser = common::runtime::duration_flag)]
    pub timeout: Duration,
    /// Time between attempts (Go syntax: 500ms).
    #[arg(long, default_value = "500ms", value_parser = common::runtime::duration_flag)]
    pub period: Duration,
}

/// Why `proxy wait` gave up.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The URL is not `http://HOST:PORT/PATH`.
    #[error("--url {0:?} is not http://HOST:PORT/PATH (https is not supported)")]
    Url(String),
    /// Not ready in time.
    #[error("the sidecar is not ready after {timeout:?}: {url} last answered {last}")]
    Timeout {
        /// The URL.
        url: String,
        /// `--timeout`.
        timeout: Duration,
        /// What the last attempt saw.
        last: String,
    },
}

/// Polls `config.url` until it answers 200, at most `config.timeout`.
pub async fn wait(config: &WaitConfig) -> Result<Duration, WaitError> {
    let rest = config
        .url
        .strip_prefix("http://")
        .ok_or_else(|| WaitError::Url(config.url.clone()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(WaitError::Url(config.url.clone()));
    }
    let start = tokio::time::Instant::now();
    let mut last: String;
    loop {
        let attempt = tokio::time::timeout(
            config.period.max(Duration::from_secs(1)),
            get(authority, path),
        );
        match attempt.await {
            Ok(Ok(200)) => return Ok(start.elapsed()),
            Ok(Ok(code)) => last = format!("HTTP {code}"),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "no answer in time".into(),
        }
        if start.elapsed() + config.period > config.timeout {
            return Err(WaitError::Timeout {
                url: config.url.clone(),
                timeout: config.timeout,
                last,
            });
        }
        tokio::time::sleep(config.period).await;
    }
}

/// One `GET path` over HTTP/1.1; the response's status code.
async fn get(authority: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "not an HTTP response: {:?}",
                line.lines().next().unwrap_or("")
            ))
        })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn reads_the_downward_api_labels_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("labels");
        std::fs::write(
            &path,
            "app=\"productpage\"\npod-template-hash=\"6b746f74dc\"\nquote=\"a\\\"b\"\nversion=\"v1\"",
        )
        .unwrap();
        let labels = read_labels(&path).unwrap();
        assert_eq!(labels["app"], "productpage");
        assert_eq!(labels["quote"], "a\"b");
        assert_eq!(labels.len(), 4);
        std::fs::write(&path, "app: productpage\n").unwrap();
        let err = read_labels(&path).unwrap_err().to_string();
        assert!(
            err.contains(":1:") && err.contains("key=\"value\""),
            "{err}"
        );
        let err = read_labels(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--labels-file") && err.contains("istio-podinfo"),
            "{err}"
        );
    }

    #[test]
    fn the_bootstrap_comes_from_the_pod_environment() {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("labels");
        std::fs::write(&labels, "app=\"reviews\"\nversion=\"v2\"\n").unwrap();
        let out = dir.path().join("proxy/envoy-rev.json");
        let config = Config::try_parse_from([
            "sidecar",
            "--pod-name",
            "reviews-v2-5d8f9c7b4-x2x9q",
            "--pod-namespace",
            "default",
            "--pod-ip",
            "10.244.1.7",
            "--service-account",
            "bookinfo-reviews",
            "--labels-file",
            labels.to_str().unwrap(),
            "--bootstrap-out",
            out.to_str().unwrap(),
        ])
        .unwrap();
        let env = [
            ("ISTIO_META_DNS_CAPTURE", "true"),
            ("PATH", "/usr/bin"),
            ("ISTIO_META_", "empty key"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        config.write_bootstrap(env).unwrap();
        let b: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(
            b["node"]["id"],
            "sidecar~10.244.1.7~reviews-v2-5d8f9c7b4-x2x9q.default~default.svc.cluster.local"
        );
        assert_eq!(b["node"]["metadata"]["LABELS"]["version"], "v2");
        assert_eq!(b["node"]["metadata"]["DNS_CAPTURE"], "true");
        assert_eq!(b["node"]["metadata"].as_object().unwrap().len(), 8);
        let xds = &b["static_resources"]["clusters"][0];
        assert_eq!(xds["type"], "STRICT_DNS");
        let run = config.run_config();
        assert_eq!(run.config_path, out);
        assert_eq!(run.concurrency, 2);
        assert_eq!(
            run.ca_addr.as_deref(),
            Some("citadel.istio-system.svc:15012")
        );
        assert_eq!(run.health_addr, Some("0.0.0.0:15021".parse().unwrap()));
        assert_eq!(run.status_addr, Some("0.0.0.0:15020".parse().unwrap()));
        assert_eq!(run.prometheus_addr, Some("0.0.0.0:15090".parse().unwrap()));
        assert!(run.access_log.is_none());
        // A gateway: a router node, no capture, its access log where asked.
        let mut gateway = config.clone();
        gateway.router = true;
        gateway.access_log = Some("/dev/stdout".into());
        let node = gateway.sidecar(Vec::new()).unwrap();
        assert!(node.router && !node.capture);
        assert!(
            serde_json::to_string(&node.bootstrap())
                .unwrap()
                .contains("router~10.244.1.7~reviews-v2-5d8f9c7b4-x2x9q.default~")
        );
        assert_eq!(
            gateway.run_config().access_log.as_deref(),
            Some(Path::new("/dev/stdout"))
        );
        let mut off = config.clone();
        off.status_port = 0;
        off.prometheus_port = 0;
        assert!(
            off.run_config().status_addr.is_none() && off.run_config().prometheus_addr.is_none()
        );
        // Pod facts are required.
        assert!(Config::try_parse_from(["sidecar", "--pod-name", "p"]).is_err());
        assert!(
            Config::try_parse_from(["sidecar", "--discovery-address", "pilot"])
                .unwrap_err()
                .to_string()
                .contains("HOST:PORT")
        );
    }

    #[tokio::test]
    async fn wait_returns_once_ready_and_times_out_with_the_last_answer() {
        use axum::http::StatusCode;
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ready.clone();
        let app = axum::Router::new().route(
            "/healthz/ready",
            axum::routing::get(move || {
                let ready = flag.load(std::sync::atomic::Ordering::SeqCst);
                async move {
                    if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let config = WaitConfig {
            url: format!("http://{addr}/healthz/ready"),
            timeout: Duration::from_millis(600),
            period: Duration::from_millis(50),
        };
        let err = wait(&config).await.unwrap_err().to_string();
        assert!(
            err.contains("HTTP 503") && err.contains("not ready after"),
            "{err}"
        );
        let later = tokio::spawn({
            let ready = ready.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(200)).await;
                ready.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        });
        let config = WaitConfig {
            timeout: Duration::from_secs(10),
            ..config
        };
        let took = wait(&config).await.unwrap();
        assert!(took >= Duration::from_millis(150), "{took:?}");
        later.await.unwrap();
        // Nothing listening: the connection error is reported.
        drop(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
        let closed = WaitConfig {
            url: "http://127.0.0.1:1/healthz/ready".into(),
            timeout: Duration::from_millis(200),
            period: Duration::from_millis(50),
        };
        let err = wait(&closed).await.unwrap_err().to_string();
        assert!(err.contains("refused"), "{err}");
        assert!(
            wait(&WaitConfig {
                url: "https://x/".into(),
                ..closed
            })
            .await
            .is_err()
        );
    }
}

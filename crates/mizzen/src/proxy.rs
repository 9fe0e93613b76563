//! `mizzen proxy-status` and `mizzen proxy-config`: what pilot serves each
//! connected proxy, read from pilot's debug API (`/debug/syncz`,
//! `/debug/config_dump?proxyID=…`, on `--pilot-addr`, pilot's `--http-addr`;
//! with `--kubernetes`, through the API server's service proxy to the Service
//! `pilot` port 15014, so no port-forward is needed).
//!
//! Where Mizzen differs from istioctl: istioctl asks istiod over xDS and
//! reads `proxy-config` from the Envoy admin API of the pod. Here both read
//! pilot's debug API, so `proxy-config` shows the configuration pilot
//! generates for the proxy (what it sends), not what the proxy reports
//! holding; `proxy-status` shows, per type, whether the proxy ACKed the last
//! response. The `secret` type of `proxy-config` is not supported: pilot's
//! config dump has no secrets (the agent serves workload certificates).

use std::io::Write;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde_json::Value;

use crate::{EXIT_OK, EXIT_USAGE};

/// Exit status when pilot cannot be reached or does not know the proxy.
pub const EXIT_PILOT_ERROR: u8 = 1;

/// Where pilot's debug API is, and the output format.
#[derive(Debug, Clone, Args)]
pub struct PilotArgs {
    /// Pilot's debug/metrics address (pilot's --http-addr).
    #[arg(long, env = "MIZZEN_PILOT_ADDR", default_value = "127.0.0.1:15014")]
    pub pilot_addr: String,
    /// Reach pilot in the current cluster (KUBECONFIG or in-cluster) through
    /// the API server's service proxy, as istioctl reaches istiod: Service
    /// `pilot` (`pilot-REVISION`) port 15014 in --istio-namespace. Needs `get`
    /// on `services/proxy` there.
    #[arg(short = 'k', long, conflicts_with = "pilot_addr")]
    pub kubernetes: bool,
    /// The control plane's namespace (with --kubernetes).
    #[arg(
        short = 'i',
        long,
        default_value = "istio-system",
        requires = "kubernetes"
    )]
    pub istio_namespace: String,
    /// The control-plane revision whose pilot to ask (with --kubernetes).
    #[arg(short = 'r', long, requires = "kubernetes")]
    pub revision: Option<String>,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = TableOutput::Table)]
    pub output: TableOutput,
}

/// Output formats of the proxy commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum TableOutput {
    /// Aligned columns with a header.
    #[default]
    Table,
    /// The debug API's JSON, as pilot sent it.
    Json,
}

/// `mizzen proxy-status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Pilot and output.
    #[command(flatten)]
    pub pilot: PilotArgs,
}

/// The configuration types of `mizzen proxy-config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigType {
    /// Clusters (CDS).
    #[value(alias = "clusters")]
    Cluster,
    /// Listeners (LDS).
    #[value(alias = "listeners")]
    Listener,
    /// Route configurations (RDS).
    #[value(alias = "routes")]
    Route,
    /// Endpoints (EDS).
    #[value(alias = "endpoints")]
    Endpoint,
    /// Secrets (SDS): not supported, see the module doc.
    #[value(alias = "secrets")]
    Secret,
}

/// `mizzen proxy-config TYPE PROXY`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// What to show.
    #[arg(value_enum)]
    pub kind: ConfigType,
    /// The proxy: POD.NAMESPACE, its node id, or its connection id (as
    /// `mizzen proxy-status` lists them).
    pub proxy: String,
    /// Pilot and output.
    #[command(flatten)]
    pub pilot: PilotArgs,
}

/// Why a proxy command could not print.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Pilot did not answer.
    #[error(
        "cannot reach pilot's debug API at {addr}: {reason}; is pilot running? Pass its --http-addr with --pilot-addr, or --kubernetes for pilot in the current cluster"
    )]
    Unreachable {
        /// The address tried.
        addr: String,
        /// Why.
        reason: String,
    },
    /// No Kubernetes cluster for --kubernetes.
    #[error(
        "cannot reach the Kubernetes API: {0}; set KUBECONFIG (or ~/.kube/config), or drop --kubernetes and pass --pilot-addr"
    )]
    NoCluster(String),
    /// Pilot answered with an error.
    #[error("pilot: {0}")]
    Pilot(String),
    /// The command is parsed but not supported.
    #[error("{0}")]
    Unsupported(&'static str),
}

/// Runs `mizzen proxy-status`.
pub fn status(args: &StatusArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    finish(
        get(&args.pilot, "/debug/syncz").map(|syncz| match args.pilot.output {
            TableOutput::Json => pretty(&syncz),
            TableOutput::Table => status_table(&syncz, &args.pilot.describe()),
        }),
        out,
        err,
    )
}

/// Runs `mizzen proxy-config`.
pub fn config(args: &ConfigArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    if args.kind == ConfigType::Secret {
        return finish(
            Err(Error::Unsupported(
                "proxy-config secret is not supported: pilot's config dump has no secrets (workload certificates come from the agent); see `mizzen ca list` for what citadel issued",
            )),
            out,
            err,
        );
    }
    let path = format!("/debug/config_dump?proxyID={}", query_escape(&args.proxy));
    let result = get(&args.pilot, &path).map(|dump| {
        let short = match args.kind {
            ConfigType::Cluster => "cds",
            ConfigType::Listener => "lds",
            ConfigType::Route => "rds",
            ConfigType::Endpoint | ConfigType::Secret => "eds",
        };
        let of_type = dump["types"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["type"] == short)
            .cloned()
            .unwrap_or(Value::Null);
        match args.pilot.output {
            TableOutput::Json => pretty(&of_type),
            TableOutput::Table => config_table(args.kind, &of_type),
        }
    });
    finish(result, out, err)
}

fn finish(result: Result<String, Error>, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match result {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            EXIT_OK
        }
        Err(e @ Error::Unsupported(_)) => {
            let _ = writeln!(err, "Error: {e}");
            EXIT_USAGE
        }
        Err(e) => {
            let _ = writeln!(err, "Error: {e}");
            EXIT_PILOT_ERROR
        }
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn query_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET http://addr{path}` as JSON; a non-2xx answer becomes its `error`.
impl PilotArgs {
    /// Pilot's Service name (`pilot`, `pilot-REVISION`).
    pub fn service(&self) -> String {
        match &self.revision {
            Some(r) => format!("pilot-{r}"),
            None => "pilot".into(),
        }
    }

    /// Where pilot is asked, for tables and errors.
    pub fn describe(&self) -> String {
        if self.kubernetes {
            format!(
                "{}.{} (via the API server)",
                self.service(),
                self.istio_namespace
            )
        } else {
            self.pilot_addr.clone()
        }
    }
}

fn get(pilot: &PilotArgs, path: &str) -> Result<Value, Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Unreachable {
            addr: pilot.describe(),
            reason: e.to_string(),
        })?;
    let (status, body) = if pilot.kubernetes {
        runtime.block_on(async {
            let client = kube::Client::try_default()
                .await
                .map_err(|e| Error::NoCluster(e.to_string()))?;
            get_through_api(&client, &pilot.istio_namespace, &pilot.service(), path).await
        })?
    } else {
        runtime.block_on(get_direct(&pilot.pilot_addr, path))?
    };
    decode(path, status, &body)
}

/// `path` of pilot's debug API through the API server's service proxy:
/// `/api/v1/namespaces/NS/services/SERVICE:15014/proxy/PATH`.
pub async fn get_through_api(
    client: &kube::Client,
    namespace: &str,
    service: &str,
    path: &str,
) -> Result<(hyper::StatusCode, bytes::Bytes), Error> {
    let unreachable = |reason: String| Error::Unreachable {
        addr: format!("{service}.{namespace} (via the API server)"),
        reason,
    };
    let uri = format!("/api/v1/namespaces/{namespace}/services/{service}:15014/proxy{path}");
    let request = hyper::Request::get(uri)
        .body(kube::client::Body::empty())
        .map_err(|e| unreachable(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.send(request))
        .await
        .map_err(|_| unreachable("no answer within 10 s".to_string()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let (status, body) = read(response).await.map_err(unreachable)?;
    if status == hyper::StatusCode::SERVICE_UNAVAILABLE || status == hyper::StatusCode::NOT_FOUND {
        // The API server's own answer (no such Service, no ready pod) is a
        // Kubernetes Status, not pilot's JSON.
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if parsed["kind"] == "Status" {
            return Err(unreachable(
                parsed["message"]
                    .as_str()
                    .unwrap_or("the API server refused")
                    .to_string(),
            ));
        }
    }
    Ok((status, body))
}

async fn get_direct(addr: &str, path: &str) -> Result<(hyper::StatusCode, bytes::Bytes), Error> {
    let unreachable = |reason: String| Error::Unreachable {
        addr: addr.to_string(),
        reason,
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| unreachable(e.to_string()))?;
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .map_err(|_| unreachable("no answer within 10 s".to_string()))?
        .map_err(|e| unreachable(format!("{e:#}")))?;
    read(response).await.map_err(unreachable)
}

/// A response's status and whole body.
async fn read<B>(response: hyper::Response<B>) -> Result<(hyper::StatusCode, bytes::Bytes), String>
where
    B: hyper::body::Body,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Pilot's answer as JSON, or its error (with the proxies it knows).
fn decode(path: &str, status: hyper::StatusCode, body: &[u8]) -> Result<Value, Error> {
    let json: Value = serde_json::from_slice(body)
        .map_err(|e| Error::Pilot(format!("{path} answered {status} with no JSON: {e}")))?;
    if !status.is_success() {
        let mut message = json["error"].as_str().unwrap_or("").to_string();
        if let Some(connected) = json["connected"].as_array() {
            let names: Vec<&str> = connected.iter().filter_map(Value::as_str).collect();
            message.push_str(&format!(
                " (connected: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        return Err(Error::Pilot(message));
    }
    Ok(json)
}

/// Aligned columns, two spaces apart.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    crate::table::render(header, &rows, 2)
}

/// `POD.NAMESPACE` from a node id `TYPE~IP~POD.NAMESPACE~DOMAIN`, else the id.
fn proxy_name(node_id: &str) -> String {
    node_id
        .split('~')
        .nth(2)
        .filter(|n| !n.is_empty())
        .unwrap_or(node_id)
        .to_string()
}

/// One type's sync state, as istioctl names them: SYNCED (the last
/// response is ACKed), NACKED (the proxy rejected it), STALE (sent, not yet
/// answered), NOT SENT.
fn sync_state(t: &Value) -> &'static str {
    let sent = t["nonce_sent"].as_str();
    if t.is_null() || sent.is_none() {
        return "NOT SENT";
    }
    if t["nonce_acked"].as_str() == sent {
        "SYNCED"
    } else if t["last_nack"]["nonce"].as_str() == sent {
        "NACKED"
    } else {
        "STALE"
    }
}

fn status_table(syncz: &Value, pilot: &str) -> String {
    let rows = syncz
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let id = c["proxy_id"].as_str().unwrap_or("");
            let mut row = vec![
                proxy_name(id),
                c["proxy_type"].as_str().unwrap_or("").to_string(),
            ];
            for t in ["cds", "lds", "eds", "rds"] {
                row.push(sync_state(&c["types"][t]).to_string());
            }
            row.push(pilot.to_string());
            row.push(c["snapshot_version"].to_string());
            row
        })
        .collect();
    table(
        &[
            "NAME",
            "TYPE",
            "CDS",
            "LDS",
            "EDS",
            "RDS",
            "PILOT",
            "CONFIG VERSION",
        ],
        rows,
    )
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The items of a JSON array (none for anything else).
fn list(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn config_table(kind: ConfigType, of_type: &Value) -> String {
    let resources = list(&of_type["resources"]);
    match kind {
        ConfigType::Cluster => {
            let rows = resources
                .iter()
                .map(|c| {
                    let name = c["name"].as_str().unwrap_or("");
                    let parts: Vec<&str> = name.split('|').collect();
                    let (fqdn, port, subset, direction) = match parts.as_slice() {
                        [dir, port, subset, host] => (*host, *port, *subset, *dir),
                        _ => (name, "-", "-", "-"),
                    };
                    vec![
                        fqdn.to_string(),
                        port.to_string(),
                        if subset.is_empty() { "-" } else { subset }.to_string(),
                        direction.to_string(),
                        text(&c["type"]),
                        text(&c["lb_policy"]),
                    ]
                })
                .collect();
            table(
                &[
                    "SERVICE FQDN",
                    "PORT",
                    "SUBSET",
                    "DIRECTION",
                    "TYPE",
                    "LB POLICY",
                ],
                rows,
            )
        }
        ConfigType::Listener => {
            let rows = resources
                .iter()
                .map(|l| {
                    vec![
                        text(&l["name"]),
                        text(&l["address"]),
                        text(&l["filter_chains"]),
                        if l["use_original_dst"] == true {
                            "yes"
                        } else {
                            "no"
                        }
                        .to_string(),
                    ]
                })
                .collect();
            table(&["NAME", "ADDRESS", "FILTER CHAINS", "ORIGINAL DST"], rows)
        }
        ConfigType::Route => {
            let rows = resources
                .iter()
                .flat_map(|rc| {
                    let name = text(&rc["name"]);
                    list(&rc["virtual_hosts"]).into_iter().map(move |vh| {
                        let domains: Vec<String> = vh["domains"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(text)
                            .collect();
                        vec![
                            name.clone(),
                            text(&vh["name"]),
                            domains.join(","),
                            text(&vh["routes"]),
                        ]
                    })
                })
                .collect();
            table(&["NAME", "VHOST NAME", "DOMAINS", "ROUTES"], rows)
        }
        ConfigType::Endpoint | ConfigType::Secret => {
            let rows = resources
                .iter()
                .flat_map(|cla| {
                    let cluster = text(&cla["cluster_name"]);
                    list(&cla["endpoints"]).into_iter().map(move |e| {
                        // envoy.config.core.v3.HealthStatus numbers.
                        let status = match e["health_status"].as_i64() {
                            Some(1) => "HEALTHY",
                            Some(2) => "UNHEALTHY",
                            Some(3) => "DRAINING",
                            Some(4) => "TIMEOUT",
                            Some(5) => "DEGRADED",
                            _ => "UNKNOWN",
                        };
                        vec![text(&e["address"]), status.to_string(), cluster.clone()]
                    })
                })
                .collect();
            table(&["ENDPOINT", "STATUS", "CLUSTER"], rows)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sync_states_follow_the_nonces() {
        assert_eq!(sync_state(&Value::Null), "NOT SENT");
        assert_eq!(
            sync_state(&json!({"nonce_sent": "a", "nonce_acked": "a"})),
            "SYNCED"
        );
        assert_eq!(
            sync_state(
                &json!({"nonce_sent": "b", "nonce_acked": "a", "last_nack": {"nonce": "b"}})
            ),
            "NACKED"
        );
        assert_eq!(
            sync_state(&json!({"nonce_sent": "b", "nonce_acked": "a"})),
            "STALE"
        );
    }

    #[test]
    fn names_come_from_node_ids_and_tables_align() {
        assert_eq!(
            proxy_name("sidecar~10.1.0.5~productpage-v1-1.default~default.svc.cluster.local"),
            "productpage-v1-1.default"
        );
        assert_eq!(proxy_name("plain-id"), "plain-id");
        let t = table(&["A", "LONGER"], vec![vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
        assert_eq!(query_escape("a b~c/d"), "a%20b~c%2Fd");
    }

    /// A client whose API server answers every request with `status` and
    /// `body`, recording the paths asked.
    fn api(
        status: u16,
        body: Value,
    ) -> (kube::Client, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        let (service, mut handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                log.lock().unwrap().push(request.uri().to_string());
                send.send_response(
                    http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(kube::client::Body::from(serde_json::to_vec(&body).unwrap()))
                        .unwrap(),
                );
            }
        });
        (kube::Client::new(service, "default"), seen)
    }

    #[tokio::test]
    async fn kubernetes_mode_asks_pilot_through_the_api_servers_service_proxy() {
        let syncz = json!([{
            "proxy_id": "sidecar~10.244.1.7~productpage-v1-1.default~default.svc.cluster.local",
            "connection_id": "c1",
            "types": {}
        }]);
        let (client, seen) = api(200, syncz.clone());
        let (status, body) =
            get_through_api(&client, "istio-system", "pilot-canary", "/debug/syncz")
                .await
                .unwrap();
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            ["/api/v1/namespaces/istio-system/services/pilot-canary:15014/proxy/debug/syncz"]
        );
        let value = decode("/debug/syncz", status, &body).unwrap();
        assert_eq!(value, syncz);
        let args = PilotArgs {
            pilot_addr: String::new(),
            kubernetes: true,
            istio_namespace: "istio-system".into(),
            revision: Some("canary".into()),
            output: TableOutput::Table,
        };
        assert!(status_table(&value, &args.describe()).contains("productpage-v1-1.default"));
        assert_eq!(
            args.describe(),
            "pilot-canary.istio-system (via the API server)"
        );
    }

    #[tokio::test]
    async fn kubernetes_mode_reports_the_api_servers_refusal() {
        let refusal = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "no endpoints available for service \"pilot\"", "reason": "ServiceUnavailable", "code": 503});
        let (client, _) = api(503, refusal);
        let e = get_through_api(&client, "istio-system", "pilot", "/debug/syncz")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("pilot.istio-system (via the API server)"), "{e}");
        assert!(e.contains("no endpoints available"), "{e}");
    }
}

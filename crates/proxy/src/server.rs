//! The running data path: [`DataPath`] holds the current [`Dataplane`] and
//! recompiles it whenever the xDS client publishes; [`run`] keeps the bound
//! listeners in step with it (binding new ones, closing removed ones, leaving
//! unchanged ones alone) and dispatches every accepted connection:
//!
//! 1. the destination is the original one (`SO_ORIGINAL_DST`) when the
//!    listener has `use_original_dst` or the `original_dst` listener filter,
//!    else the local address;
//! 2. a `use_original_dst` listener hands the connection to the listener of
//!    that destination (exact address, else `0.0.0.0:PORT`), if there is one;
//! 3. the listener's filter chain for the connection decides: HTTP
//!    ([`crate::http`]) or TCP ([`crate::tcp`]); no chain closes it.
//!
//! Connections keep the snapshot they started with; removing a listener
//! stops accepting on it but lets its connections finish.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use common::runtime::Stop;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::dataplane::{Dataplane, Statics};
use crate::http::{self, ConnInfo, HttpStats};
use crate::inspect::{self, Detected};
use crate::listener::{Chain, ConnFacts, NetworkFilter};
use crate::secrets::Secrets;
use crate::telemetry::Telemetry;
use crate::xds::{XdsState, XdsStore};

/// The current compiled configuration, shared by every connection.
#[derive(Debug)]
pub struct DataPath {
    current: ArcSwap<Dataplane>,
    statics: Statics,
    /// Istio's standard metrics of this proxy.
    pub telemetry: Telemetry,
    /// Certificates for TLS chains and clusters.
    pub secrets: Arc<Secrets>,
    /// Where HTTP access log lines go (`--access-log`).
    pub access_log: Option<Arc<crate::body::AccessLogSink>>,
    bound: Mutex<HashMap<String, SocketAddr>>,
    inbound_draining: tokio::sync::watch::Sender<bool>,
    http_stats: Mutex<HashMap<String, Arc<HttpStats>>>,
    rbac_stats: Mutex<HashMap<String, Arc<crate::rbac::RbacStats>>>,
}

impl DataPath {
    /// An empty data path over the bootstrap's static resources.
    pub fn new(statics: Statics, telemetry: Telemetry, secrets: Arc<Secrets>) -> Arc<DataPath> {
        Self::with_access_log(statics, telemetry, secrets, None)
    }

    /// As [`DataPath::new`], writing HTTP access log lines to `access_log`.
    pub fn with_access_log(
        statics: Statics,
        telemetry: Telemetry,
        secrets: Arc<Secrets>,
        access_log: Option<Arc<crate::body::AccessLogSink>>,
    ) -> Arc<DataPath> {
        let empty = Dataplane::build(
            &XdsState::default(),
            &statics,
            &Dataplane::default(),
            &secrets,
        );
        Arc::new(DataPath {
            current: ArcSwap::from_pointee(empty),
            statics,
            telemetry,
            secrets,
            access_log,
            bound: Mutex::default(),
            inbound_draining: tokio::sync::watch::channel(false).0,
            http_stats: Mutex::default(),
            rbac_stats: Mutex::default(),
        })
    }

    /// The current configuration.
    pub fn current(&self) -> Arc<Dataplane> {
        self.current.load_full()
    }

    /// Recompiles from `state` and publishes the result.
    pub fn update(&self, state: &XdsState) -> Arc<Dataplane> {
        let previous = self.current.load_full();
        self.secrets.set_xds(state.secrets.clone());
        let next = Arc::new(Dataplane::build(
            state,
            &self.statics,
            &previous,
            &self.secrets,
        ));
        for e in &next.errors {
            tracing::warn!("data path: {e}");
        }
        self.current.store(Arc::clone(&next));
        next
    }

    /// Starts draining inbound listeners: they stop accepting and inbound
    /// HTTP/1.1 responses ask the client to close. Returns whether any
    /// inbound listener is bound (there is something to drain).
    pub fn drain_inbound(&self) -> bool {
        self.inbound_draining.send_replace(true);
        let dp = self.current();
        self.bound()
            .keys()
            .any(|name| dp.listeners.get(name).is_some_and(|l| l.inbound))
    }

    /// Whether inbound listeners are draining.
    pub fn inbound_draining(&self) -> bool {
        *self.inbound_draining.borrow()
    }

    /// The counters of the HTTP connection managers with `stat_prefix`.
    pub fn http_stats(&self, stat_prefix: &str) -> Arc<HttpStats> {
        let mut all = self.http_stats.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(all.entry(stat_prefix.to_string()).or_default())
    }

    /// Every HTTP connection manager's counters, by stat prefix.
    pub fn all_http_stats(&self) -> Vec<(String, Arc<HttpStats>)> {
        let all = self.http_stats.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// The counters of the network RBAC filters with `stat_prefix`.
    pub fn rbac_stats(&self, stat_prefix: &str) -> Arc<crate::rbac::RbacStats> {
        let mut all = self.rbac_stats.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(all.entry(stat_prefix.to_string()).or_default())
    }

    /// Every network RBAC filter's counters, by stat prefix.
    pub fn all_rbac_stats(&self) -> Vec<(String, Arc<crate::rbac::RbacStats>)> {
        let all = self.rbac_stats.lock().unwrap_or_else(|p| p.into_inner());
        all.iter()
            .map(|(k, v)| (k.clone(), Arc::clone(v)))
            .collect()
    }

    /// The addresses the listeners are bound to now, by listener name.
    pub fn bound(&self) -> HashMap<String, SocketAddr> {
        self.bound.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

struct Bound {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

/// Follows `store` until `stop`: recompiles on every publish and keeps the
/// bound listeners in step.
pub async fn run(path: Arc<DataPath>, store: XdsStore, stop: Stop) {
    let mut generations = store.subscribe();
    let mut bound: HashMap<String, Bound> = HashMap::new();
    loop {
        let dp = path.update(&store.load());
        reconcile(&path, &dp, &mut bound).await;
        tokio::select! {
            changed = generations.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            () = stop.stopped() => break,
        }
    }
    for (_, b) in bound.drain() {
        b.task.abort();
    }
}

async fn reconcile(path: &Arc<DataPath>, dp: &Dataplane, bound: &mut HashMap<String, Bound>) {
    bound.retain(|name, b| {
        let keep = dp
            .listeners
            .get(name)
            .is_some_and(|l| l.bind && l.addr == b.addr);
        if !keep {
            tracing::info!(listener = %name, addr = %b.addr, "listener removed");
            b.task.abort();
        }
        keep
    });
    for (name, l) in &dp.listeners {
        if !l.bind || bound.contains_key(name) {
            continue;
        }
        match TcpListener::bind(l.addr).await {
            Ok(listener) => {
                let local = listener.local_addr().unwrap_or(l.addr);
                tracing::info!(listener = %name, addr = %local, "listener bound");
                let task = tokio::spawn(accept_loop(
                    Arc::clone(path),
                    name.clone(),
                    listener,
                    l.inbound,
                ));
                bound.insert(name.clone(), Bound { addr: l.addr, task });
                path.bound
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(name.clone(), local);
            }
            Err(e) => tracing::error!(
                listener = %name,
                addr = %l.addr,
                "cannot bind listener: {e}; free the port or change the listener's address"
            ),
        }
    }
    path.bound
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|name, _| bound.contains_key(name));
}

async fn accept_loop(path: Arc<DataPath>, name: String, listener: TcpListener, inbound: bool) {
    let mut draining = path.inbound_draining.subscribe();
    loop {
        if inbound && *draining.borrow_and_update() {
            tracing::info!(listener = %name, "inbound listener drained: no longer accepting");
            return;
        }
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = draining.changed(), if inbound => continue,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(dispatch(Arc::clone(&path), name.clone(), stream, peer));
            }
            Err(e) => {
                tracing::warn!(listener = %name, "accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Routes one accepted connection to its listener's filter chain.
async fn dispatch(path: Arc<DataPath>, name: String, stream: TcpStream, peer: SocketAddr) {
    let dp = path.current();
    let Some(mut listener) = dp.listeners.get(&name) else {
        return;
    };
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let dst = if listener.use_original_dst || listener.original_dst_filter {
        crate::net::original_dst(&stream).unwrap_or(local)
    } else {
        local
    };
    if listener.use_original_dst
        && let Some(target) = dp.listener_for(dst)
        && target.name != listener.name
    {
        listener = target;
    }
    let detected = match listener.inspect {
        Some(wait) => inspect::detect(&stream, wait).await,
        None => Detected::Plain,
    };
    let (transport, hello) = match &detected {
        Detected::Tls(hello) => ("tls", Some(hello)),
        Detected::Plain => ("raw_buffer", None),
    };
    let no_alpn: Vec<String> = Vec::new();
    let offered = hello.map_or(&no_alpn, |h| &h.alpn);
    let facts = ConnFacts {
        dst,
        src: peer,
        server_name: hello.and_then(|h| h.sni.as_deref()),
        transport,
        alpn: offered,
    };
    let Some(chain) = listener.select_chain(&facts) else {
        tracing::debug!(listener = %listener.name, %dst, "no filter chain matches; closing");
        return;
    };
    let mut conn = ConnInfo {
        peer,
        dst,
        inbound: listener.inbound,
        peer_identity: None,
        tls: false,
        peer_cert: None,
        local_identity: None,
        // Only the authorization filters read the SNI: no allocation otherwise.
        sni: facts
            .server_name
            .filter(|_| {
                !chain.rbac.is_empty()
                    || matches!(&chain.filter, NetworkFilter::Http(h) if !h.auth.is_empty())
            })
            .map(Arc::from),
    };
    let Some(tls) = &chain.tls else {
        serve(stream, conn, chain, &path, &dp).await;
        return;
    };
    // Negotiate only protocols the client offered (Envoy ignores a mismatch;
    // rustls would refuse the handshake).
    let mut tls = tls.clone();
    tls.alpn.retain(|p| offered.contains(p));
    let config = match path.secrets.server_config(&tls) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(listener = %listener.name, chain = %chain.name, "cannot terminate TLS: {e}");
            return;
        }
    };
    match tokio_rustls::TlsAcceptor::from(config).accept(stream).await {
        Ok(stream) => {
            conn.peer_identity = crate::identity::tls::peer_identity(stream.get_ref().1);
            conn.tls = true;
            if matches!(&chain.filter, NetworkFilter::Http(h) if h.forwards_client_cert()) {
                conn.peer_cert = crate::identity::tls::peer_cert(stream.get_ref().1).map(Arc::new);
                conn.local_identity = tls
                    .cert
                    .workload
                    .then(|| path.secrets.identity().map(|m| Arc::from(m.spiffe_id())))
                    .flatten();
            }
            serve(stream, conn, chain, &path, &dp).await;
        }
        Err(e) => {
            tracing::debug!(listener = %listener.name, %peer, "TLS handshake failed: {e}");
        }
    }
}

/// Runs the chain's network RBAC filters (when it has any) ahead of its
/// terminal filter.
async fn serve<S>(
    stream: S,
    conn: ConnInfo,
    chain: &Chain,
    path: &Arc<DataPath>,
    dp: &Arc<Dataplane>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if chain.rbac.is_empty() {
        return terminal(stream, conn, &chain.filter, path, dp).await;
    }
    let input = crate::rbac::Input {
        tls: conn.tls,
        peer_identity: conn.peer_identity.as_deref(),
        direct_remote: conn.peer.ip(),
        remote: conn.peer.ip(),
        dst: conn.dst,
        sni: conn.sni.as_deref(),
        request: None,
        metadata: None,
    };
    let gated = crate::rbac::network::gate(stream, &chain.rbac, &input, |p| path.rbac_stats(p));
    terminal(gated, conn, &chain.filter, path, dp).await;
}

async fn terminal<S>(
    stream: S,
    conn: ConnInfo,
    filter: &NetworkFilter,
    path: &Arc<DataPath>,
    dp: &Arc<Dataplane>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match filter {
        NetworkFilter::Http(hcm) => {
            http::serve(stream, conn, Arc::clone(hcm), Arc::clone(path)).await;
        }
        NetworkFilter::Tcp(tp) => {
            let telemetry = path.telemetry.clone();
            crate::tcp::proxy(stream, conn, Arc::clone(tp), Arc::clone(dp), telemetry).await;
        }
    }
}

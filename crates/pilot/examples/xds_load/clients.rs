//! The simulated proxies: delta ADS clients over [`wire`](super::wire), each
//! subscribing as Envoy does and ACKing every response, and how they report to
//! the driver.

use super::*;

/// What a client reports to the driver over a channel.
pub(crate) enum Report {
    /// Initial sync done (CDS, EDS, LDS, RDS all received and ACKed).
    Synced,
    /// The stream failed.
    Failed(String),
}

/// When each client last received an EDS update for the watched host, written
/// by the clients and read by the driver. Atomics, not a channel, so that
/// reporting a measurement wakes no other thread (a wake-up per client per
/// change would be measurement overhead on the same two cores).
pub(crate) struct Board {
    base: Instant,
    /// Nanoseconds after `base` plus one; zero for "not yet".
    eds: Vec<std::sync::atomic::AtomicU64>,
}

impl Board {
    fn new(k: usize) -> Self {
        Board {
            base: Instant::now(),
            eds: (0..k)
                .map(|_| std::sync::atomic::AtomicU64::new(0))
                .collect(),
        }
    }

    fn mark(&self, i: usize, at: Instant) {
        let nanos = u64::try_from(at.duration_since(self.base).as_nanos()).unwrap_or(u64::MAX);
        self.eds[i].store(
            nanos.saturating_add(1),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub(crate) fn clear(&self) {
        for e in &self.eds {
            e.store(0, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<Instant> {
        match self.eds[i].load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            n => Some(self.base + Duration::from_nanos(n - 1)),
        }
    }
}

fn cluster_host(name: &str) -> &str {
    name.rsplit('|').next().unwrap_or("")
}

async fn client(
    i: usize,
    addr: SocketAddr,
    watched_host: Arc<String>,
    reports: mpsc::UnboundedSender<Report>,
    board: Arc<Board>,
    connect: Arc<Semaphore>,
) {
    if let Err(e) = run_client(i, addr, &watched_host, &reports, &board, connect).await {
        let _ = reports.send(Report::Failed(format!("client {i}: {e:#}")));
    }
}

/// The ADS method every client calls.
const DELTA_PATH: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

async fn run_client(
    i: usize,
    addr: SocketAddr,
    watched_host: &str,
    reports: &mpsc::UnboundedSender<Report>,
    board: &Board,
    connect: Arc<Semaphore>,
) -> Result<()> {
    let permit = connect.acquire_owned().await?;
    let tcp = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .context("connecting: timed out")?
    .context("connecting")?;
    tcp.set_nodelay(true)?;
    let mut stream = wire::Call::open(tcp, &addr.to_string(), DELTA_PATH)
        .await
        .context("opening the ADS call")?;
    let sub = |type_url: &str, names: Vec<String>| DeltaDiscoveryRequest {
        type_url: type_url.to_string(),
        resource_names_subscribe: names,
        ..Default::default()
    };
    stream
        .send(&DeltaDiscoveryRequest {
            node: Some(node(i)),
            ..sub(CLUSTER, vec![])
        })
        .await?;
    stream.send(&sub(LISTENER, vec![])).await?;
    drop(permit);
    let mut eds_subscribed = BTreeSet::new();
    let mut rds_subscribed = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut synced = false;
    loop {
        let resp: DeltaDiscoveryResponse = stream.recv().await?;
        let received = Instant::now();
        // Only clusters and listeners name what to subscribe to next.
        let named: Vec<NamedResource> = match resp.type_url.as_str() {
            CLUSTER | LISTENER => resp
                .resources
                .iter()
                .filter_map(|r| {
                    Some(NamedResource {
                        name: r.name.clone(),
                        resource: r.resource.clone()?,
                    })
                })
                .collect(),
            _ => Vec::new(),
        };
        // ACK first, as Envoy does once it applied the response.
        stream
            .send(&DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            })
            .await?;
        match resp.type_url.as_str() {
            CLUSTER => {
                let new: Vec<String> = eds_names(&named)
                    .into_iter()
                    .filter(|n| eds_subscribed.insert(n.clone()))
                    .collect();
                if !new.is_empty() {
                    stream.send(&sub(ENDPOINT, new)).await?;
                }
            }
            LISTENER => {
                let new: Vec<String> = route_names(&named)
                    .into_iter()
                    .filter(|n| rds_subscribed.insert(n.clone()))
                    .collect();
                if !new.is_empty() {
                    stream.send(&sub(ROUTE, new)).await?;
                }
            }
            ENDPOINT
                if resp
                    .resources
                    .iter()
                    .any(|r| cluster_host(&r.name) == watched_host) =>
            {
                board.mark(i, received);
            }
            _ => {}
        }
        if !synced {
            seen.insert(resp.type_url);
        }
        if !synced && seen.len() == 4 {
            synced = true;
            let _ = reports.send(Report::Synced);
        }
    }
}

/// Clients started by [`start_clients`].
pub(crate) struct Clients {
    pub(crate) reports: mpsc::UnboundedReceiver<Report>,
    pub(crate) board: Arc<Board>,
    pub(crate) sync_time: Duration,
}

/// Starts `k` clients on `runtime` and waits until all synced.
pub(crate) async fn start_clients(
    k: usize,
    addr: SocketAddr,
    watched_host: &str,
    runtime: &tokio::runtime::Handle,
) -> Result<Clients> {
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let watched = Arc::new(watched_host.to_string());
    let connect = Arc::new(Semaphore::new(64));
    let board = Arc::new(Board::new(k));
    let started = Instant::now();
    for i in 0..k {
        runtime.spawn(client(
            i,
            addr,
            watched.clone(),
            reports_tx.clone(),
            board.clone(),
            connect.clone(),
        ));
    }
    let mut synced = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while synced < k {
        match tokio::time::timeout_at(deadline, reports.recv()).await {
            Ok(Some(Report::Synced)) => synced += 1,
            Ok(Some(Report::Failed(e))) => bail!("{e}"),
            Ok(None) => bail!("all clients ended"),
            Err(_) => bail!("only {synced} of {k} clients synced within 600 s"),
        }
    }
    Ok(Clients {
        reports,
        board,
        sync_time: started.elapsed(),
    })
}

//! Load generator for citadel (issue 4, item 8; results in `BENCHMARKS.md`, run by
//! `scripts/bench-citadel`).
//!
//! It starts a `citadel` child process (the release binary) on loopback with a fresh
//! key directory, mints local-mode tokens for `--identities` service accounts, makes
//! one P-256 CSR per identity, and then keeps `--concurrency` CreateCertificate calls
//! in flight over `--connections` TLS/HTTP-2 connections for `--seconds`. Every call
//! is a full signing: JWT verification, CSR signature check, signing, and a durable
//! ledger record. It prints signings per second, latency p50/p99 and errors, then
//! checks that the ledger holds exactly the certificates the clients received.
//!
//! `cargo run --release -p citadel --example csr_load -- --citadel target/release/citadel`

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use common::pb::istio_ca::IstioCertificateRequest;
use common::pb::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[derive(Parser, Debug)]
#[command(about = "CSR signing load against a citadel child process")]
struct Cli {
    /// The citadel binary to start.
    #[arg(long, default_value = "target/release/citadel")]
    citadel: PathBuf,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// TLS connections the calls are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Distinct identities (tokens and CSRs).
    #[arg(long, default_value_t = 64)]
    identities: usize,
    /// Measured seconds (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Root key algorithm for the fresh CA.
    #[arg(long, default_value = "ecdsa-p256")]
    key_algorithm: String,
}

struct Citadel {
    child: Child,
}

impl Drop for Citadel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_ready(http: SocketAddr, child: &mut Child) -> Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("citadel exited during start: {status}");
        }
        if let Ok(mut s) = TcpStream::connect(http) {
            s.write_all(b"GET /ready HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out);
            if out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200") {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("citadel not ready on {http} after 30 s")
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    common::tls::install_crypto_provider();
    let dir = tempfile::tempdir()?;
    let key_dir = dir.path().join("keys");
    let (grpc, http): (SocketAddr, SocketAddr) = (
        format!("127.0.0.1:{}", free_port()?).parse()?,
        format!("127.0.0.1:{}", free_port()?).parse()?,
    );
    let mut child = Command::new(&cli.citadel)
        .arg("--grpc-addr")
        .arg(grpc.to_string())
        .arg("--http-addr")
        .arg(http.to_string())
        .arg("--key-dir")
        .arg(&key_dir)
        .arg("--key-algorithm")
        .arg(&cli.key_algorithm)
        .arg("--log-level")
        .arg("warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", cli.citadel.display()))?;
    wait_ready(http, &mut child)?;
    let citadel = Citadel { child };

    let issuer = citadel::local_issuer::LocalIssuer::load(&key_dir)?;
    let mut work = Vec::new();
    for i in 0..cli.identities {
        let sa = format!("sa-{i}");
        let token = issuer.mint("bench", &sa, "istio-ca", Duration::from_secs(3600))?;
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(
            format!("spiffe://cluster.local/ns/bench/sa/{sa}").try_into()?,
        )];
        let csr = params.serialize_request(&key)?.pem()?;
        work.push((format!("Bearer {token}"), csr));
    }
    let work = Arc::new(work);

    let root = std::fs::read_to_string(key_dir.join("root-cert.pem"))?;
    let mut channels = Vec::new();
    for _ in 0..cli.connections {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&root))
            .domain_name("localhost");
        channels.push(
            Channel::from_shared(format!("https://{grpc}"))?
                .tls_config(tls)?
                .connect()
                .await?,
        );
    }

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, errors, total) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut tasks = Vec::new();
    for t in 0..cli.concurrency {
        let channel = channels[t % channels.len()].clone();
        let (work, measuring, stop) = (work.clone(), measuring.clone(), stop.clone());
        let (ok, errors, total) = (ok.clone(), errors.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = IstioCertificateServiceClient::new(channel);
            let mut latencies = Vec::new();
            let mut i = t;
            while !stop.load(Ordering::Relaxed) {
                let (auth, csr) = &work[i % work.len()];
                i += cli.concurrency;
                let mut req = tonic::Request::new(IstioCertificateRequest {
                    csr: csr.clone(),
                    validity_duration: 3600,
                    metadata: None,
                });
                req.metadata_mut()
                    .insert("authorization", auth.parse().expect("ascii token"));
                let start = Instant::now();
                let res = client.create_certificate(req).await;
                total.fetch_add(1, Ordering::Relaxed);
                let counted = measuring.load(Ordering::Relaxed);
                match res {
                    Ok(r) if r.get_ref().cert_chain.len() == 2 => {
                        if counted {
                            ok.fetch_add(1, Ordering::Relaxed);
                            latencies.push(start.elapsed());
                        }
                    }
                    Ok(_) | Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(cli.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = start.elapsed();
    let signed = ok.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await?);
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    if latencies.is_empty() {
        bail!(
            "no signing succeeded ({} errors)",
            errors.load(Ordering::Relaxed)
        );
    }
    println!(
        "signings/s: {:.0}  ({} in {:.1} s; concurrency {}, {} connections, {} identities, root {})",
        signed as f64 / elapsed.as_secs_f64(),
        signed,
        elapsed.as_secs_f64(),
        cli.concurrency,
        cli.connections,
        cli.identities,
        cli.key_algorithm
    );
    println!(
        "latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors {}",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        errors.load(Ordering::Relaxed)
    );
    drop(citadel);
    let ledger =
        citadel::ledger::Ledger::open_existing(&citadel::ledger::Ledger::default_url(&key_dir))
            .await?;
    let recorded = ledger.count().await?;
    let answered = total.load(Ordering::Relaxed) - errors.load(Ordering::Relaxed);
    println!("ledger: {recorded} issuances recorded, {answered} certificates received");
    if recorded < answered {
        bail!("the ledger lost issuances: {recorded} < {answered}");
    }
    Ok(())
}

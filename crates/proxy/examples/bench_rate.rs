//! The fixed-rate load of `scripts/bench-proxy`: HTTP/1.1 GETs at a constant
//! rate over keep-alive connections, open loop (each request's latency is
//! measured from when it was scheduled, so a stall counts against every
//! request it delays), then the latency percentiles.
//!
//! `bench_rate ADDR RATE SECONDS CONNECTIONS` prints
//! `requests=N errors=E p50_us=.. p90_us=.. p99_us=.. max_us=.. p10_us=.. p25_us=..
//! p75_us=.. p95_us=..` (the first four as before, the rest for the shape).
//!
//! `ADDR` may be several addresses, comma-separated: each gets its own stream
//! at `RATE` on its own connections, all at the same time (their schedules
//! staggered evenly within the period), and one line is printed per address,
//! in order. Measured together, the streams meet the same moments of a shared
//! machine, so a stall lands on all of them alike.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

fn arg<T: std::str::FromStr>(i: usize, default: T) -> T {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Sends one request and reads one response with a `content-length` body.
async fn exchange(s: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
    s.write_all(req).await?;
    buf.clear();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return if head.starts_with("http/1.1 200") {
                    Ok(())
                } else {
                    Err(std::io::Error::other(head))
                };
            }
        }
    }
}

/// One address's stream: its connections' queues and its results.
struct Stream {
    senders: Vec<mpsc::UnboundedSender<Instant>>,
    done: mpsc::UnboundedReceiver<Result<Duration, ()>>,
}

/// Opens `conns` keep-alive connections to `addr`, each sending the requests
/// it is handed and reporting their latency.
async fn open(addr: &str, conns: usize) -> Stream {
    let req = b"GET /bench HTTP/1.1\r\nHost: bench.example\r\n\r\n".to_vec();
    let (done_tx, done) = mpsc::unbounded_channel::<Result<Duration, ()>>();
    let mut senders = Vec::new();
    for _ in 0..conns {
        let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
        senders.push(tx);
        let mut s = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
        s.set_nodelay(true).expect("nodelay");
        let req = req.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(8192);
            while let Some(scheduled) = rx.recv().await {
                // From the moment the request is written: the timer's
                // millisecond granularity would otherwise add up to 1 ms
                // to every sample. A request still waiting for the one
                // before it on its connection is counted from its
                // scheduled time (open loop).
                let sent = Instant::now().min(scheduled.max(Instant::now()));
                let queued = scheduled.elapsed();
                let r = exchange(&mut s, &req, &mut buf).await;
                let took = if queued > Duration::from_millis(2) {
                    scheduled.elapsed()
                } else {
                    sent.elapsed()
                };
                let _ = done.send(r.map(|()| took).map_err(drop));
            }
        });
    }
    Stream { senders, done }
}

/// The stream's results line.
async fn report(mut done: mpsc::UnboundedReceiver<Result<Duration, ()>>, total: u64) -> String {
    let mut lat = Vec::with_capacity(total as usize);
    let mut errors = 0u64;
    while let Some(r) = done.recv().await {
        match r {
            Ok(d) => lat.push(d.as_micros() as u64),
            Err(()) => errors += 1,
        }
    }
    lat.sort_unstable();
    let p = |q: f64| {
        lat.get(((lat.len() as f64 * q) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    format!(
        "requests={} errors={errors} p50_us={} p90_us={} p99_us={} max_us={} p10_us={} p25_us={} p75_us={} p95_us={}",
        lat.len(),
        p(0.50),
        p(0.90),
        p(0.99),
        lat.last().copied().unwrap_or(0),
        p(0.10),
        p(0.25),
        p(0.75),
        p(0.95),
    )
}

fn main() {
    let addrs: String = arg(1, "127.0.0.1:18000".to_string());
    let rate: u64 = arg(2, 1000);
    let seconds: u64 = arg(3, 10);
    let conns: usize = arg(4, 10);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let mut streams = Vec::new();
        for addr in addrs.split(',') {
            streams.push(open(addr, conns).await);
        }
        let total = rate * seconds;
        // The schedule runs on its own thread with the OS's sleep (microsecond
        // precision): tokio's timer has millisecond granularity, which would
        // fire every stream's request of a period in the same tick, one
        // behind the other, instead of staggered.
        let senders: Vec<_> = streams
            .iter_mut()
            .map(|s| std::mem::take(&mut s.senders))
            .collect();
        let schedule = std::thread::spawn(move || {
            let start = Instant::now();
            let period = Duration::from_secs_f64(1.0 / rate as f64);
            let stagger = period / senders.len() as u32;
            for i in 0..total {
                for (k, stream) in senders.iter().enumerate() {
                    let at = start + period * i as u32 + stagger * k as u32;
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let _ = stream[i as usize % conns].send(at);
                }
            }
        });
        let mut lines = Vec::new();
        for stream in streams {
            lines.push(report(stream.done, total).await);
        }
        schedule.join().expect("the schedule thread");
        for line in lines {
            println!("{line}");
        }
    });
}

//! Series storage and Prometheus rendering for Istio's standard metrics.
//!
//! Layout: a [`SeriesMap`] (sharded `RwLock<HashMap<hash, chain>>`) interns one
//! [`RequestSeries`] per distinct set of *stable* labels (reporter, both
//! workloads, destination service, protocol, security policy). Each request
//! series holds a short copy-on-write list of [`Variant`]s, one per
//! (response code, gRPC status, response flags) seen, and each variant holds
//! the three histograms as plain atomics. `istio_requests_total` is not stored
//! separately: it is the total of the duration histogram's buckets, so a
//! recorded request costs six relaxed atomic adds and nothing else.
//!
//! Label values are resolved to their rendered text before hashing, so two
//! inputs that render the same (`""` vs `"unknown"`) share a series and the
//! exposition never repeats a label set.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use arc_swap::ArcSwap;

use super::labels::{
    LocalWorkload, Peer, Protocol, Reporter, Security, latest_if_empty, unknown_if_empty,
};

/// Istio's (Envoy's default) histogram bucket bounds, used for
/// `istio_request_duration_milliseconds`, `istio_request_bytes` and
/// `istio_response_bytes` alike: the stats filter records all three through
/// Envoy histograms and Istio's bootstrap sets no `histogram_bucket_settings`
/// unless the `sidecar.istio.io/statsHistogramBuckets` annotation asks for it.
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// `BUCKETS` as Envoy prints them in `le="…"` (`{:.32g}`).
const BUCKET_TEXT: [&str; 19] = [
    "0.5", "1", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "10000",
    "30000", "60000", "300000", "600000", "1800000", "3600000",
];

/// Label names in the order the istio/proxy stats filter pushes them (and so
/// the order Envoy prints them): the 21 stable labels ending with
/// `request_protocol`; then, for HTTP, `response_code`, `grpc_response_status`;
/// then `response_flags` and `connection_security_policy`.
const STABLE_NAMES: [&str; 21] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
];

/// Resolved label values: the 21 stable ones, `response_flags` (TCP only,
/// `""` for HTTP keys) and `connection_security_policy`.
pub(crate) type Resolved<'a> = [&'a str; 23];

/// A borrowed view of the stable labels of a request or connection.
pub(crate) struct KeyView<'a> {
    pub reporter: Reporter,
    pub peer: &'a Peer,
    pub service: &'a str,
    pub service_name: &'a str,
    pub service_namespace: &'a str,
    /// `None` for TCP.
    pub protocol: Option<Protocol>,
    /// TCP only; `""` for HTTP.
    pub flags: &'a str,
    pub security: Security,
}

impl<'a> KeyView<'a> {
    /// The label values this view renders to, following istio_stats.cc's
    /// inbound (`destination`) and outbound (`source`) assignments.
    pub fn resolve(&self, local: &'a LocalWorkload) -> Resolved<'a> {
        let p = self.peer;
        let mtls = self.security == Security::MutualTls;
        let local_principal = if mtls { &*local.principal } else { "unknown" };
        let protocol = self.protocol.map_or("tcp", Protocol::as_str);
        let flags = match self.protocol {
            Some(_) => "",
            None => flags_or_dash(self.flags),
        };
        match self.reporter {
            Reporter::Destination => [
                "destination",
                unknown_if_empty(&p.workload),
                unknown_if_empty(&p.canonical_service),
                latest_if_empty(&p.canonical_revision),
                unknown_if_empty(&p.namespace),
                unknown_if_empty(&p.principal),
                unknown_if_empty(&p.app),
                unknown_if_empty(&p.version),
                unknown_if_empty(&p.cluster),
                &local.workload,
                &local.namespace,
                local_principal,
                &local.app,
                &local.version,
                or(self.service, &local.canonical_service),
                &local.canonical_service,
                &local.canonical_revision,
                or(self.service_name, &local.canonical_service),
                or(self.service_namespace, &local.namespace),
                &local.cluster,
                protocol,
                flags,
                self.security.as_str(),
            ],
            // Istio: "unknown when report is from source since security policy
            // cannot be properly populated"; the caller's value still decides
            // whether our own principal was presented.
            Reporter::Source => [
                "source",
                &local.workload,
                &local.canonical_service,
                &local.canonical_revision,
                &local.namespace,
                local_principal,
                &local.app,
                &local.version,
                &local.cluster,
                unknown_if_empty(&p.workload),
                unknown_if_empty(&p.namespace),
                unknown_if_empty(&p.principal),
                unknown_if_empty(&p.app),
                unknown_if_empty(&p.version),
                unknown_if_empty(self.service),
                unknown_if_empty(&p.canonical_service),
                latest_if_empty(&p.canonical_revision),
                unknown_if_empty(self.service_name),
                unknown_if_empty(or(self.service_namespace, &p.namespace)),
                unknown_if_empty(&p.cluster),
                protocol,
                flags,
                Security::Unknown.as_str(),
            ],
        }
    }
}

fn or<'a>(s: &'a str, fallback: &'a str) -> &'a str {
    if s.is_empty() { fallback } else { s }
}

fn flags_or_dash(flags: &str) -> &str {
    if flags.is_empty() { "-" } else { flags }
}

/// Hashes resolved labels with the map's keyed hasher (SipHash: label values
/// can come from request headers, so an unkeyed hash would invite collisions).
pub(crate) fn hash_resolved(state: &std::hash::RandomState, r: &Resolved<'_>) -> u64 {
    let mut h = state.build_hasher();
    for s in r {
        h.write(s.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

fn owned_key(r: &Resolved<'_>) -> Box<[Box<str>]> {
    r.iter().map(|s| Box::<str>::from(*s)).collect()
}

fn key_eq(stored: &[Box<str>], r: &Resolved<'_>) -> bool {
    stored.iter().zip(r.iter()).all(|(a, b)| **a == **b)
}

/// Appends `name="value"` with Prometheus escaping.
fn push_label(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn render_stable(r: &Resolved<'_>) -> String {
    let mut out = String::with_capacity(640);
    for (i, (name, value)) in STABLE_NAMES.iter().zip(r.iter()).enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_label(&mut out, name, value);
    }
    out
}

/// Identity hasher for the already-hashed `u64` keys of a [`SeriesMap`].
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const SHARDS: usize = 32;

type Chain<T> = Vec<Arc<T>>;
type Shard<T> = RwLock<HashMap<u64, Chain<T>, BuildHasherDefault<IdHasher>>>;

/// Interned series, sharded by label hash; a chain per hash resolves collisions.
pub(crate) struct SeriesMap<T> {
    shards: Box<[Shard<T>]>,
}

impl<T> SeriesMap<T> {
    pub fn new() -> Self {
        SeriesMap {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
        }
    }

    fn shard(&self, hash: u64) -> &Shard<T> {
        &self.shards[(hash >> 59) as usize % SHARDS]
    }

    /// Runs `f` on the series `eq` picks, creating it with `make` the first
    /// time. The fast path takes one shard read lock and clones nothing.
    pub fn with<R>(
        &self,
        hash: u64,
        eq: impl Fn(&T) -> bool,
        make: impl FnOnce() -> T,
        f: impl FnOnce(&T) -> R,
    ) -> R {
        let shard = self.shard(hash);
        {
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map.get(&hash).and_then(|c| c.iter().find(|s| eq(s))) {
                return f(s);
            }
        }
        let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
        let chain = map.entry(hash).or_default();
        if let Some(s) = chain.iter().find(|s| eq(s)) {
            return f(s);
        }
        chain.push(Arc::new(make()));
        f(chain.last().expect("just pushed"))
    }

    /// The series `eq` picks as a shareable handle, created on first use.
    pub fn get_arc(&self, hash: u64, eq: impl Fn(&T) -> bool, make: impl FnOnce() -> T) -> Arc<T> {
        let shard = self.shard(hash);
        {
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = map.get(&hash).and_then(|c| c.iter().find(|s| eq(s))) {
                return s.clone();
            }
        }
        let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
        let chain = map.entry(hash).or_default();
        if let Some(s) = chain.iter().find(|s| eq(s)) {
            return s.clone();
        }
        let s = Arc::new(make());
        chain.push(s.clone());
        s
    }

    /// Calls `f` on every series, one shard read-locked at a time.
    pub fn for_each(&self, mut f: impl FnMut(&T)) {
        for shard in self.shards.iter() {
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            map.values().flatten().for_each(|s| f(s));
        }
    }
}

/// A histogram over [`BUCKETS`]: non-cumulative counts (the last slot is
/// `+Inf` only) and the sum of recorded values.
struct Histogram {
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0),
        }
    }

    fn record(&self, value: u64) {
        let v = value as f64;
        let i = BUCKETS.partition_point(|b| *b < v);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    /// `name_bucket`, `name_sum` and `name_count` lines for one label set.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0u64;
        for (i, le) in BUCKET_TEXT.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.buckets[BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum.load(Relaxed);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// One full HTTP label set: a request series plus its varying labels.
struct Variant {
    response_code: u16,
    grpc_status: Option<u32>,
    flags: Box<str>,
    /// Every label, rendered: `reporter="…",…,connection_security_policy="…"`.
    labels: Box<str>,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

/// The counters of one stable HTTP/gRPC label set (one route, cluster and peer
/// as seen by one reporter). Obtain once with
/// [`super::Telemetry::request_series`] and keep it beside the route or
/// connection: [`RequestSeries::record`] then costs a lock-free scan of the few
/// (status, flags) combinations seen so far and six relaxed atomic adds.
pub struct RequestSeries {
    key: Box<[Box<str>]>,
    /// The stable labels up to `request_protocol`, rendered.
    prefix: Box<str>,
    security: Box<str>,
    grpc: bool,
    variants: ArcSwap<Vec<Arc<Variant>>>,
    grow: Mutex<()>,
}

impl RequestSeries {
    pub(crate) fn new(r: &Resolved<'_>, grpc: bool) -> Self {
        RequestSeries {
            key: owned_key(r),
            prefix: render_stable(r).into(),
            security: r[22].into(),
            grpc,
            variants: ArcSwap::from_pointee(Vec::new()),
            grow: Mutex::new(()),
        }
    }

    pub(crate) fn matches(&self, r: &Resolved<'_>) -> bool {
        key_eq(&self.key, r)
    }

    /// Records one completed request: `response_code` (0 when none was sent),
    /// the gRPC status (ignored for plain HTTP, as Istio prints `""` there),
    /// Envoy's short response flags (`""` means `"-"`), the duration (counted
    /// in whole milliseconds, as the Istio filter does) and the body sizes.
    pub fn record(
        &self,
        response_code: u16,
        grpc_response_status: Option<u32>,
        response_flags: &str,
        duration: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let grpc = if self.grpc {
            grpc_response_status
        } else {
            None
        };
        let flags = flags_or_dash(response_flags);
        let record = |v: &Variant| {
            v.duration.record(duration.as_millis() as u64);
            v.request_bytes.record(request_bytes);
            v.response_bytes.record(response_bytes);
        };
        let is = |v: &&Arc<Variant>| {
            v.response_code == response_code && v.grpc_status == grpc && *v.flags == *flags
        };
        if let Some(v) = self.variants.load().iter().find(is) {
            return record(v);
        }
        let _grow = self.grow.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.variants.load_full();
        if let Some(v) = current.iter().find(is) {
            return record(v);
        }
        let v = Arc::new(self.variant(response_code, grpc, flags));
        record(&v);
        let mut next = Vec::with_capacity(current.len() + 1);
        next.extend(current.iter().cloned());
        next.push(v);
        self.variants.store(Arc::new(next));
    }

    fn variant(&self, response_code: u16, grpc_status: Option<u32>, flags: &str) -> Variant {
        let mut labels = String::with_capacity(self.prefix.len() + 160);
        labels.push_str(&self.prefix);
        labels.push(',');
        push_label(
            &mut labels,
            "response_code",
            itoa(&mut [0; 20], response_code.into()),
        );
        labels.push(',');
        match grpc_status {
            Some(s) => push_label(
                &mut labels,
                "grpc_response_status",
                itoa(&mut [0; 20], s.into()),
            ),
            None => push_label(&mut labels, "grpc_response_status", ""),
        }
        labels.push(',');
        push_label(&mut labels, "response_flags", flags);
        labels.push(',');
        push_label(&mut labels, "connection_security_policy", &self.security);
        Variant {
            response_code,
            grpc_status,
            flags: flags.into(),
            labels: labels.into(),
            duration: Histogram::new(),
            request_bytes: Histogram::new(),
            response_bytes: Histogram::new(),
        }
    }

    /// Number of distinct full label sets (status, gRPC status, flags) recorded.
    pub fn len(&self) -> usize {
        self.variants.load().len()
    }

    /// Whether nothing was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn for_each_variant(&self, mut f: impl FnMut(&Variant)) {
        self.variants.load().iter().for_each(|v| f(v));
    }
}

fn itoa(buf: &mut [u8; 20], mut n: u64) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

/// The counters of one TCP label set. Obtain once per connection (or per
/// listener and peer) with [`super::Telemetry::tcp_series`].
pub struct TcpSeries {
    key: Box<[Box<str>]>,
    labels: Box<str>,
    opened: AtomicU64,
    closed: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

impl TcpSeries {
    pub(crate) fn new(r: &Resolved<'_>) -> Self {
        let mut labels = render_stable(r);
        labels.push(',');
        push_label(&mut labels, "response_flags", r[21]);
        labels.push(',');
        push_label(&mut labels, "connection_security_policy", r[22]);
        TcpSeries {
            key: owned_key(r),
            labels: labels.into(),
            opened: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
        }
    }

    pub(crate) fn matches(&self, r: &Resolved<'_>) -> bool {
        key_eq(&self.key, r)
    }

    /// Counts an opened connection (`istio_tcp_connections_opened_total`).
    pub fn open(&self) {
        self.opened.fetch_add(1, Relaxed);
    }

    /// Adds bytes sent downstream and received from downstream so far; Istio
    /// reports long connections periodically this way.
    pub fn add_bytes(&self, sent: u64, received: u64) {
        if sent > 0 {
            self.sent.fetch_add(sent, Relaxed);
        }
        if received > 0 {
            self.received.fetch_add(received, Relaxed);
        }
    }

    /// Counts a closed connection with the bytes not yet added by
    /// [`TcpSeries::add_bytes`].
    pub fn close(&self, sent: u64, received: u64) {
        self.add_bytes(sent, received);
        self.closed.fetch_add(1, Relaxed);
    }
}

/// Renders every family in Envoy's `/stats/prometheus` order: counters first,
/// then histograms, each sorted by name. A `# TYPE` line is printed only for a
/// family with at least one series, as Envoy does.
pub(crate) fn render(
    requests: &SeriesMap<RequestSeries>,
    tcp: &SeriesMap<TcpSeries>,
    out: &mut String,
) {
    let mut any_request = false;
    requests.for_each(|s| any_request |= !s.is_empty());
    let mut any_tcp = false;
    tcp.for_each(|_| any_tcp = true);

    if any_request {
        out.push_str("# TYPE istio_requests_total counter\n");
        requests.for_each(|s| {
            s.for_each_variant(|v| {
                let _ = writeln!(
                    out,
                    "istio_requests_total{{{}}} {}",
                    v.labels,
                    v.duration.count()
                );
            })
        });
    }
    if any_tcp {
        type Pick = fn(&TcpSeries) -> u64;
        let families: [(&str, Pick); 4] = [
            ("istio_tcp_connections_closed_total", |s| {
                s.closed.load(Relaxed)
            }),
            ("istio_tcp_connections_opened_total", |s| {
                s.opened.load(Relaxed)
            }),
            ("istio_tcp_received_bytes_total", |s| {
                s.received.load(Relaxed)
            }),
            ("istio_tcp_sent_bytes_total", |s| s.sent.load(Relaxed)),
        ];
        for (name, pick) in families {
            let _ = writeln!(out, "# TYPE {name} counter");
            tcp.for_each(|s| {
                let _ = writeln!(out, "{name}{{{}}} {}", s.labels, pick(s));
            });
        }
    }
    if any_request {
        type Pick = fn(&Variant) -> &Histogram;
        let families: [(&str, Pick); 3] = [
            ("istio_request_bytes", |v| &v.request_bytes),
            ("istio_request_duration_milliseconds", |v| &v.duration),
            ("istio_response_bytes", |v| &v.response_bytes),
        ];
        for (name, pick) in families {
            let _ = writeln!(out, "# TYPE {name} histogram");
            requests.for_each(|s| s.for_each_variant(|v| pick(v).render(out, name, &v.labels)));
        }
    }
}

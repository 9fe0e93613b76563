//! The guide's scenarios on bookinfo, each the seed's YAML applied unchanged
//! and real traffic sent through productpage, with what was expected beside
//! what was observed.
//!
//! Every scenario writes its seed files (with the seed's reviews and ratings
//! DestinationRules, 03 and 39, which name the subsets) as one file in the
//! mesh config, waits until every sidecar has ACKed pilot's new config, then
//! sends its traffic. The bookinfo base config is the sample minus its reviews
//! and ratings VirtualServices and DestinationRules, which the seeds replace.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::traffic::{Answer, Client};

/// The seed files the scenarios apply (name, YAML).
pub mod seed {
    /// A seed file of `testdata/corpus/seed`, as (name, YAML).
    macro_rules! seed {
        ($file:literal) => {
            (
                $file,
                include_str!(concat!("../../../../testdata/corpus/seed/", $file)),
            )
        };
    }

    /// VirtualService reviews: `end-user: jason` → v2, else v1 75 %, v3 25 %.
    pub const REVIEWS_JASON_SPLIT: (&str, &str) = seed!("02-virtualservice-reviews.yaml");
    /// DestinationRule reviews: subsets v1, v2, v3.
    pub const REVIEWS_SUBSETS: (&str, &str) = seed!("03-destinationrule-reviews.yaml");
    /// VirtualService ratings: delay 10 % by 5 s, abort 5 % with 500.
    pub const RATINGS_FAULT: (&str, &str) = seed!("06-virtualservice-ratings.yaml");
    /// VirtualService reviews: all to v1, mirrored to v2.
    pub const REVIEWS_MIRROR: (&str, &str) = seed!("07-virtualservice-reviews.yaml");
    /// VirtualService reviews: v1 90 %, v2 10 %.
    pub const REVIEWS_90_10: (&str, &str) = seed!("25-virtualservice-reviews.yaml");
    /// VirtualService reviews: v1 50 %, v2 50 %.
    pub const REVIEWS_50_50: (&str, &str) = seed!("26-virtualservice-reviews.yaml");
    /// PeerAuthentication default in istio-system: STRICT mTLS mesh-wide.
    pub const MESH_STRICT: (&str, &str) = seed!("10-peerauthentication-default.yaml");
    /// VirtualService ratings: 3 attempts on 5xx and connection failures.
    pub const RATINGS_RETRIES: (&str, &str) = seed!("38-virtualservice-ratings.yaml");
    /// DestinationRule ratings: subsets v1, v2 with connection pools.
    pub const RATINGS_SUBSETS: (&str, &str) = seed!("39-destinationrule-ratings.yaml");
    /// VirtualService reviews: the cookie `user=test` → v2, else v1.
    pub const REVIEWS_COOKIE: (&str, &str) = seed!("29-virtualservice-reviews.yaml");
    /// AuthorizationPolicy reviews-viewer: GET from productpage's identity, or
    /// anything from namespace `admin`.
    pub const REVIEWS_VIEWER: (&str, &str) = seed!("13-authorizationpolicy-reviews-viewer.yaml");
    /// PeerAuthentication ratings-mtls: STRICT mTLS for ratings' pods.
    pub const RATINGS_STRICT: (&str, &str) = seed!("11-peerauthentication-ratings-mtls.yaml");
    /// VirtualService ratings: a 5 s timeout.
    pub const RATINGS_TIMEOUT: (&str, &str) = seed!("40-virtualservice-ratings.yaml");
    /// DestinationRule reviews: connection pool limits and outlier detection
    /// (5 consecutive errors eject a pod for 30 s).
    pub const REVIEWS_CIRCUIT_BREAKER: (&str, &str) = seed!("09-destinationrule-reviews.yaml");
}

/// bookinfo's Kubernetes objects (Services with virtual IPs, service accounts).
pub const BOOKINFO_PLATFORM: &str = include_str!("../../../../samples/bookinfo/platform.yaml");
/// bookinfo's Istio config.
pub const BOOKINFO_NETWORKING: &str = include_str!("../../../../samples/bookinfo/networking.yaml");

/// The base mesh config for the scenarios: the sample's networking without the
/// reviews and ratings VirtualServices and DestinationRules.
pub fn base_networking() -> String {
    BOOKINFO_NETWORKING
        .split("\n---\n")
        .filter(|doc| {
            let routing =
                doc.contains("kind: VirtualService") || doc.contains("kind: DestinationRule");
            let replaced =
                doc.contains("\n  name: reviews\n") || doc.contains("\n  name: ratings\n");
            !(routing && replaced)
        })
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Where the scenarios send traffic.
#[derive(Debug, Clone)]
pub struct Target {
    /// productpage's pod address (port 9080).
    pub productpage: SocketAddr,
    /// The ingress gateway (the sample's Gateway on port 8080), where the
    /// scenarios' requests enter when there is one; else they go to
    /// productpage's pod directly.
    pub ingress: Option<SocketAddr>,
    /// Every pod's address, by pod name.
    pub pods: BTreeMap<String, Ipv4Addr>,
    /// Every pod's data plane, by pod name.
    pub sidecars: BTreeMap<String, crate::pod::SidecarKind>,
    /// The bookinfo binary (for a scenario's own pods).
    pub bookinfo: std::path::PathBuf,
    /// A client pod in the mesh (Istio's `sleep`), from which a scenario
    /// calls a service by name through the client's sidecar, as `kubectl
    /// exec sleep -- curl` does in Istio's guides.
    pub client: Option<ClientPod>,
    /// Whether the pods capture their traffic (network namespaces), or run
    /// on loopback addresses without ([`crate::pod::loopback`]).
    pub capture: bool,
}

/// Where the in-mesh client's requests start.
#[derive(Debug, Clone)]
pub enum ClientPod {
    /// Inside the pod's network namespace (this name): its traffic is
    /// captured by its sidecar.
    Netns(String),
    /// A pod without capture: its sidecar's egress listeners on this address.
    Egress(Ipv4Addr),
}

/// One expectation and what was seen.
#[derive(Debug, Clone)]
pub struct Check {
    /// What is measured.
    pub what: String,
    /// What Istio's semantics lead to expect.
    pub expected: String,
    /// What the traffic showed.
    pub observed: String,
    /// Whether the observation meets the expectation.
    pub ok: bool,
}

/// A scenario's outcome.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario.
    pub title: &'static str,
    /// Its checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// Every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// The report as a table.
    pub fn table(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.what.clone(),
                    c.expected.clone(),
                    c.observed.clone(),
                    if c.ok { "ok" } else { "MISMATCH" }.to_string(),
                ]
            })
            .collect();
        crate::table::render(&["WHAT", "EXPECTED", "OBSERVED", ""], &rows, 3)
    }
}

/// A scenario: seeds to apply, then traffic and checks.
#[derive(Debug, Clone, Copy)]
pub struct Scenario {
    /// Its title.
    pub title: &'static str,
    /// The seed files it applies (with the subsets' DestinationRules).
    pub seeds: &'static [(&'static str, &'static str)],
    /// What it sends and checks.
    pub kind: Kind,
}

/// The scenarios' traffic and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Header match and weighted split.
    JasonAndSplit,
    /// Delay and abort faults.
    Faults,
    /// Mirroring.
    Mirror,
    /// STRICT mTLS mesh-wide.
    StrictMtls,
    /// Retries around a failing instance.
    Retries,
    /// A route timeout cutting a slow instance's answers.
    Timeout,
    /// Outlier detection ejecting a failing instance.
    Ejection,
    /// Routing by a cookie.
    Cookie,
    /// An AuthorizationPolicy allowing one caller's identity.
    Authorization,
    /// STRICT mTLS for one workload.
    WorkloadStrict,
}

/// Every scenario, in the order the demo walks through them.
pub fn all() -> Vec<Scenario> {
    use seed::*;
    vec![
        Scenario {
            title: "request routing: end-user jason to v2, everyone else 75/25 to v1 and v3 (seeds 02, 03)",
            seeds: &[REVIEWS_JASON_SPLIT, REVIEWS_SUBSETS, RATINGS_SUBSETS],
            kind: Kind::JasonAndSplit,
        },
        Scenario {
            title: "fault injection: ratings delayed 5 s for 10 %, aborted with 500 for 5 % (seed 06)",
            seeds: &[RATINGS_FAULT, REVIEWS_SUBSETS, RATINGS_SUBSETS],
            kind: Kind::Faults,
        },
        Scenario {
            title: "mirroring: all reviews traffic to v1, a copy of each request to v2 (seed 07)",
            seeds: &[REVIEWS_MIRROR, REVIEWS_SUBSETS, RATINGS_SUBSETS],
            kind: Kind::Mirror,
        },
        Scenario {
            title: "retries: a second ratings pod answers every request with 503; 3 attempts on 5xx retry on the healthy one (seed 38)",
            seeds: &[RATINGS_RETRIES, REVIEWS_SUBSETS, RATINGS_SUBSETS],
            kind: Kind::Retries,
        },
        Scenario {
            title: "request routing by cookie: user=test to reviews v2, everyone else to v1 (seed 29)",
            seeds: &[REVIEWS_COOKIE, REVIEWS_SUBSETS, RATINGS_SUBSETS],
            kind: Kind::Cookie,
        },
        Scenario {
            title: "timeouts: a second ratings pod takes 7 s to answer; the route's 5 s timeout cuts it with 504 (seed 40)",
            seeds: &[RATINGS_TIMEOUT, REVIEWS_SUBSETS, RATINGS_SUBSETS],
            kind: Kind::Timeout,
        },
        Scenario {
            title: "circuit breaking: a fourth reviews pod answers 503; 5 consecutive errors eject it for 30 s (seed 09)",
            seeds: &[REVIEWS_CIRCUIT_BREAKER, RATINGS_SUBSETS],
            kind: Kind::Ejection,
        },
        Scenario {
            title: "authorization: reviews allows GET from productpage's identity only; the sleep pod is denied (seed 13)",
            seeds: &[REVIEWS_VIEWER, REVIEWS_SUBSETS, RATINGS_SUBSETS],
            kind: Kind::Authorization,
        },
        Scenario {
            title: "security: STRICT mTLS for ratings only; the rest of the mesh stays PERMISSIVE (seed 11)",
            seeds: &[RATINGS_STRICT, REVIEWS_SUBSETS, RATINGS_SUBSETS],
            kind: Kind::WorkloadStrict,
        },
        Scenario {
            title: "security: STRICT mTLS mesh-wide, sidecars authenticate each other by SPIFFE identity (seed 10, with 02)",
            seeds: &[
                MESH_STRICT,
                REVIEWS_JASON_SPLIT,
                REVIEWS_SUBSETS,
                RATINGS_SUBSETS,
            ],
            kind: Kind::StrictMtls,
        },
    ]
}

/// The failing ratings pod of the retries scenario.
pub const BROKEN_RATINGS: &str = "ratings-v1-broken";
/// The slow ratings pod of the timeouts scenario.
pub const SLOW_RATINGS: &str = "ratings-v1-slow";
/// The failing reviews pod of the circuit breaking scenario.
pub const BROKEN_REVIEWS: &str = "reviews-v1-broken";
/// How long the slow ratings pod takes to answer.
const SLOW_RATINGS_DELAY: &str = "7s";
/// Seed 40's timeout.
const RATINGS_TIMEOUT: Duration = Duration::from_secs(5);

impl Scenario {
    /// The pod this scenario adds while it runs, if any, with the labels and
    /// data plane of the instance it joins: for retries a ratings instance
    /// answering every request with 503; for timeouts one taking 7 s to
    /// answer; for circuit breaking a reviews instance answering 503.
    pub fn extra_pod(&self, target: &Target) -> Option<crate::pod::PodSpec> {
        let (name, app, flags): (&str, &str, &[&str]) = match self.kind {
            Kind::Retries => (BROKEN_RATINGS, "ratings", &["--fail-with", "503"]),
            Kind::Timeout => (SLOW_RATINGS, "ratings", &["--delay", SLOW_RATINGS_DELAY]),
            Kind::Ejection => (BROKEN_REVIEWS, "reviews", &["--fail-with", "503"]),
            _ => return None,
        };
        let sidecar = target
            .sidecars
            .get(&format!("{app}-v1"))
            .copied()
            .unwrap_or(crate::pod::SidecarKind::Proxy);
        let command = super::bookinfo_command(&target.bookinfo, app, "v1", flags, target.capture);
        Some(crate::pod::PodSpec {
            name: name.into(),
            namespace: "default".into(),
            service_account: format!("bookinfo-{app}"),
            labels: [("app", app), ("version", "v1")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
            ports: vec![9080],
            sidecar,
            command,
            env: Vec::new(),
            gateway: false,
        })
    }

    /// The scenario's config, as one multi-document YAML file.
    pub fn config(&self) -> String {
        let mut out = String::new();
        for (name, text) in self.seeds {
            out.push_str(&format!("# {name}\n{}\n---\n", text.trim_end()));
        }
        out
    }

    /// Sends the scenario's traffic to `target` and checks it.
    pub async fn run(&self, target: &Target) -> Report {
        let client = Client::new(target.ingress.unwrap_or(target.productpage));
        let checks = match self.kind {
            Kind::JasonAndSplit => jason_and_split(&client).await,
            Kind::Faults => faults(&client).await,
            Kind::Mirror => mirror(&client, target).await,
            Kind::StrictMtls => strict_mtls(&client, target).await,
            Kind::Retries => retries(&client, target).await,
            Kind::Timeout => timeout(target).await,
            Kind::Ejection => ejection(&client, target).await,
            Kind::Cookie => cookie(&client).await,
            Kind::Authorization => authorization(&client, target).await,
            Kind::WorkloadStrict => workload_strict(&client, target).await,
        };
        Report {
            title: self.title,
            checks,
        }
    }
}

fn share(answers: &[Answer], pred: impl Fn(&Answer) -> bool) -> (usize, usize) {
    (answers.iter().filter(|a| pred(a)).count(), answers.len())
}

fn pct(n: usize, of: usize) -> String {
    format!("{n}/{of} ({:.0} %)", 100.0 * n as f64 / of.max(1) as f64)
}

fn tally(answers: &[Answer]) -> String {
    let mut t: BTreeMap<String, usize> = BTreeMap::new();
    for a in answers {
        *t.entry(a.served_by()).or_default() += 1;
    }
    t.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

const REVIEWS: &str = "/api/v1/products/0/reviews";

/// 20 requests as `end-user: jason`: the answers, how many reviews v2 served,
/// of how many, and whether every review showed black stars (v2's, from
/// ratings).
async fn jason(client: &Client) -> (Vec<Answer>, usize, usize, bool) {
    let answers = client.many(20, 4, REVIEWS, &[("end-user", "jason")]).await;
    let (v2, n) = share(&answers, |a| a.served_by() == "reviews-v2");
    let black = answers.iter().all(|a| {
        a.json["reviews"]
            .as_array()
            .is_some_and(|r| r.iter().all(|r| r["rating"]["color"] == "black"))
    });
    (answers, v2, n, black)
}
const RATINGS: &str = "/api/v1/products/0/ratings";

async fn jason_and_split(client: &Client) -> Vec<Check> {
    let (jason, v2, n, black) = jason(client).await;
    let others = client.many(200, 8, REVIEWS, &[]).await;
    let (v1, m) = share(&others, |a| a.served_by() == "reviews-v1");
    let (v3, _) = share(&others, |a| a.served_by() == "reviews-v3");
    vec![
        Check {
            what: "end-user: jason → reviews".into(),
            expected: "all v2".into(),
            observed: tally(&jason),
            ok: v2 == n,
        },
        Check {
            what: "jason's ratings (v2 calls ratings)".into(),
            expected: "black stars".into(),
            observed: if black { "black stars" } else { "missing" }.into(),
            ok: black,
        },
        Check {
            what: "everyone else → reviews v1".into(),
            expected: "75 % (60–90 %)".into(),
            observed: pct(v1, m),
            ok: v1 + v3 == m && (120..=180).contains(&v1),
        },
        Check {
            what: "everyone else → reviews v3".into(),
            expected: "25 % (10–40 %)".into(),
            observed: pct(v3, m),
            ok: v1 + v3 == m && (20..=80).contains(&v3),
        },
    ]
}

/// productpage's own timeout on its calls (bookinfo's 3 s), which a 5 s delay
/// outlasts: a delayed call ends as productpage's 503 after 3 s.
const PRODUCTPAGE_GIVES_UP: Duration = Duration::from_millis(2900);

async fn faults(client: &Client) -> Vec<Check> {
    // Ten at a time: seed 39's ratings subset allows 10 pending requests, and
    // Envoy counts a request waiting for a new connection as pending, so more
    // at once would trip that circuit breaker (503) instead.
    let answers = client.many(200, 10, RATINGS, &[]).await;
    let (aborted, n) = share(&answers, |a| a.status == 500);
    let (delayed, _) = share(&answers, |a| a.latency >= PRODUCTPAGE_GIVES_UP);
    let (fine, _) = share(&answers, |a| {
        a.status == 200 && a.latency < PRODUCTPAGE_GIVES_UP
    });
    vec![
        Check {
            what: "ratings aborted with 500".into(),
            expected: "5 % (0.5–15 %)".into(),
            observed: pct(aborted, n),
            ok: (1..=30).contains(&aborted),
        },
        Check {
            what: "ratings held 5 s (productpage gives up at 3 s: 503)".into(),
            expected: "10 % (3–20 %)".into(),
            observed: pct(delayed, n),
            ok: (6..=40).contains(&delayed),
        },
        Check {
            what: "ratings answered 200 at once".into(),
            expected: "the rest (~85 %)".into(),
            observed: {
                let others: Vec<Answer> = answers
                    .iter()
                    .filter(|a| {
                        a.status != 500 && a.latency < PRODUCTPAGE_GIVES_UP && a.status != 200
                    })
                    .cloned()
                    .collect();
                if others.is_empty() {
                    pct(fine, n)
                } else {
                    format!("{}; others: {}", pct(fine, n), tally(&others))
                }
            },
            ok: fine + aborted + delayed >= n && fine >= n / 2,
        },
    ]
}

/// `bookinfo_requests_total` of the pod at `addr`, if there is one.
async fn requests_served(addr: Option<Ipv4Addr>) -> Option<u64> {
    let body = crate::up::http_get(SocketAddr::from((addr?, 9080)), "/metrics")
        .await
        .ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find(|l| l.starts_with("bookinfo_requests_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
}

async fn mirror(client: &Client, target: &Target) -> Vec<Check> {
    let v2 = target.pods.get("reviews-v2").copied();
    let before = requests_served(v2).await;
    let answers = client.many(50, 5, REVIEWS, &[]).await;
    let (v1, n) = share(&answers, |a| a.served_by() == "reviews-v1");
    // Mirrored requests are fire-and-forget: give the last ones a moment.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = requests_served(v2).await;
    let mirrored = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    vec![
        Check {
            what: "reviews answered by".into(),
            expected: "all v1".into(),
            observed: tally(&answers),
            ok: v1 == n,
        },
        Check {
            what: "copies reviews v2 received".into(),
            expected: format!("{n} (one per request, answers dropped)"),
            observed: mirrored.map_or_else(
                || "cannot read v2's /metrics".to_string(),
                |m| m.to_string(),
            ),
            ok: mirrored == Some(n as u64),
        },
    ]
}

/// The identity the mesh gives a bookinfo service account.
fn spiffe(sa: &str) -> String {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
}

async fn strict_mtls(client: &Client, target: &Target) -> Vec<Check> {
    let (jason, v2, n, black) = jason(client).await;
    let xfcc = jason
        .iter()
        .find_map(|a| a.json["forwardedClientCert"].as_str().map(str::to_string))
        .unwrap_or_else(|| "none".into());
    let (caller, callee) = (spiffe("bookinfo-productpage"), spiffe("bookinfo-reviews"));
    let identities_ok = xfcc.contains(&format!("URI={caller}"));
    // A client outside the mesh (this host) calling a pod directly, in plain text.
    let outside = plain_text(target, "reviews-v1", "/reviews/0").await;
    let refused = outside.status == 0;
    vec![
        Check {
            what: "productpage → reviews v2 → ratings, over mTLS".into(),
            expected: "all 200, black stars".into(),
            observed: format!(
                "{}{}",
                tally(&jason),
                if black { ", black stars" } else { ", no stars" }
            ),
            ok: v2 == n && black,
        },
        Check {
            what: "caller identity reviews' sidecar saw (XFCC)".into(),
            expected: format!("URI={caller}"),
            observed: xfcc
                .split(';')
                .find(|p| p.starts_with("URI="))
                .unwrap_or(&xfcc)
                .to_string(),
            ok: identities_ok,
        },
        Check {
            what: "reviews' own identity (XFCC By)".into(),
            expected: format!("By={callee}"),
            observed: xfcc
                .split(';')
                .find(|p| p.starts_with("By="))
                .unwrap_or("none")
                .to_string(),
            ok: xfcc.contains(&format!("By={callee}")),
        },
        Check {
            what: "plain-text client outside the mesh → reviews-v1 pod".into(),
            expected: "refused".into(),
            observed: match &outside.error {
                Some(e) => format!("refused ({})", e.chars().take(60).collect::<String>()),
                None => format!("answered {}", outside.status),
            },
            ok: refused,
        },
    ]
}

async fn retries(client: &Client, target: &Target) -> Vec<Check> {
    let broken = target.pods.get(BROKEN_RATINGS).copied();
    let before = requests_served(broken).await;
    let answers = client.many(60, 4, RATINGS, &[]).await;
    let (ok, n) = share(&answers, |a| a.status == 200);
    let after = requests_served(broken).await;
    let tried = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    vec![
        Check {
            what: "ratings through productpage".into(),
            expected: "all 200 (503s retried on ratings-v1)".into(),
            observed: tally(&answers),
            ok: ok == n,
        },
        Check {
            what: "requests the failing pod answered 503".into(),
            expected: "some (it is tried, then retried around)".into(),
            observed: tried.map_or_else(|| "cannot read its /metrics".into(), |t| t.to_string()),
            ok: tried.is_some_and(|t| t > 0),
        },
    ]
}

/// A client inside the mesh's client pod calling `service` on port 9080 by
/// name, as the pod resolves it; `Err` says why there is none.
fn in_mesh(target: &Target, service: &str) -> Result<Client, String> {
    let host = format!("{service}:9080");
    match target
        .client
        .as_ref()
        .ok_or("no client pod in the mesh (sleep)")?
    {
        ClientPod::Netns(netns) => {
            let dialer = crate::pod::net::Dialer::new(netns).map_err(|e| e.to_string())?;
            let vip = dialer
                .resolve(service)
                .ok_or_else(|| format!("{service} is not in {netns}'s /etc/hosts"))?;
            Ok(Client::in_pod(dialer, SocketAddr::from((vip, 9080)), &host))
        }
        ClientPod::Egress(egress) => {
            Ok(Client::with_host(SocketAddr::from((*egress, 9080)), &host))
        }
    }
}

/// A check that could not be made, saying why.
fn cannot(what: &str, why: String) -> Vec<Check> {
    vec![Check {
        what: what.into(),
        expected: "can be measured".into(),
        observed: why,
        ok: false,
    }]
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

async fn timeout(target: &Target) -> Vec<Check> {
    let client = match in_mesh(target, "ratings") {
        Ok(c) => c,
        Err(e) => return cannot("ratings from the sleep pod", e),
    };
    let slow = target.pods.get(SLOW_RATINGS).copied();
    let before = requests_served(slow).await;
    let answers = client.many(20, 10, "/ratings/0", &[]).await;
    let after = requests_served(slow).await;
    let to_slow = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    let cut: Vec<&Answer> = answers.iter().filter(|a| a.status == 504).collect();
    let cut_at_timeout = cut.iter().all(|a| {
        a.latency >= RATINGS_TIMEOUT - Duration::from_millis(100)
            && a.latency < RATINGS_TIMEOUT + Duration::from_secs(1)
    });
    let (fast, n) = share(&answers, |a| {
        a.status == 200 && a.latency < Duration::from_secs(1)
    });
    let slowest = cut.iter().map(|a| a.latency).max().unwrap_or_default();
    let quickest = cut.iter().map(|a| a.latency).min().unwrap_or_default();
    vec![
        Check {
            what: "requests the slow pod got, cut with 504".into(),
            expected: "all of them (at least one), at 5 s".into(),
            observed: format!(
                "{} of {} at {}–{}",
                cut.len(),
                to_slow.map_or_else(|| "? (cannot read its /metrics)".into(), |t| t.to_string()),
                seconds(quickest),
                seconds(slowest)
            ),
            ok: !cut.is_empty() && to_slow == Some(cut.len() as u64) && cut_at_timeout,
        },
        Check {
            what: "the others (ratings-v1)".into(),
            expected: "200 at once (< 1 s)".into(),
            observed: pct(fast, n),
            ok: fast + cut.len() == n,
        },
    ]
}

/// The consecutive errors seed 09 ejects a pod after.
const CONSECUTIVE_ERRORS: u64 = 5;

async fn ejection(client: &Client, target: &Target) -> Vec<Check> {
    let broken = target.pods.get(BROKEN_REVIEWS).copied();
    let start = requests_served(broken).await;
    let first = client.many(60, 4, REVIEWS, &[]).await;
    let middle = requests_served(broken).await;
    let then = client.many(60, 4, REVIEWS, &[]).await;
    let end = requests_served(broken).await;
    let got = start.zip(middle).map(|(s, m)| m.saturating_sub(s));
    let later = middle.zip(end).map(|(m, e)| e.saturating_sub(m));
    let answers: Vec<Answer> = first.into_iter().chain(then).collect();
    let (ok, n) = share(&answers, |a| a.status == 200);
    let count =
        |c: Option<u64>| c.map_or_else(|| "? (cannot read its /metrics)".into(), |c| c.to_string());
    vec![
        Check {
            what: "reviews through productpage".into(),
            expected: "all 200 (the broken pod's 503s retried on another pod)".into(),
            observed: tally(&answers),
            ok: ok == n,
        },
        Check {
            what: "requests the broken pod got in the first 60".into(),
            expected: format!(
                "{CONSECUTIVE_ERRORS} (ejected after 5 consecutive errors), and a few in flight"
            ),
            observed: count(got),
            ok: got.is_some_and(|g| (CONSECUTIVE_ERRORS..=CONSECUTIVE_ERRORS + 4).contains(&g)),
        },
        Check {
            what: "requests it got in the next 60".into(),
            expected: "none (ejected for 30 s)".into(),
            observed: count(later),
            ok: later == Some(0),
        },
    ]
}

async fn cookie(client: &Client) -> Vec<Check> {
    let test = client
        // The seed's regex wants `user=test` at the start or right after a
        // `;` (no space).
        .many(20, 4, REVIEWS, &[("cookie", "theme=dark;user=test")])
        .await;
    let (v2, n) = share(&test, |a| a.served_by() == "reviews-v2");
    let others = client
        .many(20, 4, REVIEWS, &[("cookie", "user=jason")])
        .await;
    let (v1, m) = share(&others, |a| a.served_by() == "reviews-v1");
    vec![
        Check {
            what: "cookie user=test → reviews".into(),
            expected: "all v2".into(),
            observed: tally(&test),
            ok: v2 == n,
        },
        Check {
            what: "other cookies → reviews".into(),
            expected: "all v1".into(),
            observed: tally(&others),
            ok: v1 == m,
        },
    ]
}

/// A plain-text GET from this host straight to `pod`'s port 9080: its status,
/// 0 when the connection was refused or reset.
async fn plain_text(target: &Target, pod: &str, path: &str) -> Answer {
    match target.pods.get(pod) {
        Some(addr) => {
            Client::new(SocketAddr::from((*addr, 9080)))
                .get(path, &[])
                .await
        }
        None => Answer {
            status: 0,
            json: serde_json::Value::Null,
            body: bytes::Bytes::new(),
            latency: Duration::ZERO,
            error: Some(format!("no {pod} pod")),
        },
    }
}

async fn authorization(client: &Client, target: &Target) -> Vec<Check> {
    let allowed = client.many(20, 4, REVIEWS, &[]).await;
    let (ok, n) = share(&allowed, |a| a.status == 200);
    let denied = match in_mesh(target, "reviews") {
        Ok(sleep) => sleep.many(10, 2, "/reviews/0", &[]).await,
        Err(e) => return cannot("reviews from the sleep pod", e),
    };
    let (forbidden, m) = share(&denied, |a| a.status == 403);
    vec![
        Check {
            what: "productpage (sa bookinfo-productpage) GET → reviews".into(),
            expected: "all 200".into(),
            observed: tally(&allowed),
            ok: ok == n,
        },
        Check {
            what: "sleep (sa sleep) GET → reviews".into(),
            expected: "all 403 (RBAC: access denied)".into(),
            observed: tally(&denied),
            ok: forbidden == m,
        },
    ]
}

async fn workload_strict(client: &Client, target: &Target) -> Vec<Check> {
    let through = client.many(20, 4, RATINGS, &[]).await;
    let (ok, n) = share(&through, |a| a.status == 200);
    let ratings = plain_text(target, "ratings-v1", "/ratings/0").await;
    let details = plain_text(target, "details-v1", "/details/0").await;
    let said = |a: &Answer| match &a.error {
        Some(e) => format!("refused ({})", e.chars().take(40).collect::<String>()),
        None => format!("answered {}", a.status),
    };
    vec![
        Check {
            what: "productpage → ratings, over mTLS".into(),
            expected: "all 200".into(),
            observed: tally(&through),
            ok: ok == n,
        },
        Check {
            what: "plain text from outside the mesh → ratings-v1 pod".into(),
            expected: "refused".into(),
            observed: said(&ratings),
            ok: ratings.status == 0,
        },
        Check {
            what: "plain text from outside the mesh → details-v1 pod".into(),
            expected: "200 (PERMISSIVE)".into(),
            observed: said(&details),
            ok: details.status == 200,
        },
    ]
}

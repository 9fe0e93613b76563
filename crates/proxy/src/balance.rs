//! Load balancing and outlier detection for one upstream cluster, following Envoy's
//! semantics. Pure logic: no I/O, no clock reads, no global randomness; the caller passes
//! time (`Instant`) and random values in.
//!
//! The data path holds one immutable [`Balancer`] per cluster, built from the EDS hosts
//! ([`HostInfo`]) and their health, and rebuilds it whenever endpoints change or the
//! [`OutlierDetector`] ejects or returns a host. A pick goes top-down:
//!
//! 1. **Priority.** At build time each priority level gets a share of the load the way
//!    Envoy computes it: the level's health is `min(100, 140 * healthy / total)` percent
//!    (overprovisioning factor 1.4), levels take load in order until 100 % is covered, and
//!    when the health summed over levels is below 100 the shares are normalized. The pick
//!    draws a number in `0..100` (the request hash for ring hash and maglev, the random
//!    value otherwise) and takes the level whose share covers it.
//! 2. **Panic.** When the summed health is below 100 and a level's healthy share is below
//!    `panic_threshold`, that level balances over all its hosts, healthy or not. When no
//!    host is healthy anywhere, every level is in panic (load spread by host count) if the
//!    threshold is above zero, and otherwise [`Balancer::pick`] returns `None` (Envoy's
//!    "no healthy upstream").
//! 3. **Locality** (only with `locality_weighted`, outside panic, and for the non-hash
//!    policies). A locality is drawn with probability proportional to its weight times
//!    `min(1, 1.4 * healthy / total)`. For ring hash and maglev, locality weights are folded
//!    into the host weights instead.
//! 4. **Host**, by policy, in `balance/pick.rs`: round robin (an atomic rotation; an EDF
//!    schedule when weights differ), random, least request (power of two choices; a draw
//!    weighted by `weight / (active + 1)` when weights differ), ring hash (`balance/ring.rs`)
//!    or maglev (`balance/maglev.rs`).
//!
//! Hosts the pick must avoid (`PickContext::usable`) are skipped inside the chosen level;
//! if none there is usable the pick is still returned and the caller decides. The outlier
//! detector lives in `balance/outlier.rs`; xxHash64 in `balance/hash.rs`.

mod hash;
mod maglev;
mod outlier;
mod pick;
mod ring;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use hash::xxhash64;
pub use outlier::{Outcome, OutlierConfig, OutlierDetector};

use hash::SplitMix;
use pick::{HostSet, weighted_index};

/// Envoy's default overprovisioning factor, in percent.
const OVERPROVISIONING: u64 = 140;

/// One upstream host as the balancer sees it.
#[derive(Debug, Clone)]
pub struct HostInfo {
    /// "ip:port" (what ring hash / maglev hash onto the ring, as Envoy hashes the address).
    pub key: String,
    /// Load balancing weight, >= 1 (EDS `load_balancing_weight`, default 1).
    pub weight: u32,
    /// EDS priority (0 is highest).
    pub priority: u32,
    /// Index of the host's locality within its priority's localities; used only when
    /// `locality_weighted` is set.
    pub locality: usize,
    /// That locality's weight (EDS `LocalityLbEndpoints.load_balancing_weight`); used only
    /// when `locality_weighted` is set.
    pub locality_weight: u32,
}

/// The load balancing policy of a cluster (Envoy's `Cluster.lb_policy` and its config).
#[derive(Debug, Clone, PartialEq)]
pub enum Policy {
    /// Weighted round robin.
    RoundRobin,
    /// Uniformly random (Envoy's random balancer ignores host weights).
    Random,
    /// Fewest active requests among `choice_count` random candidates.
    LeastRequest {
        /// Candidates compared per pick; Envoy's default is 2.
        choice_count: u32,
    },
    /// Consistent hashing on a ketama ring.
    RingHash {
        /// Smallest ring size; Envoy's default is 1024.
        minimum_ring_size: u64,
        /// Largest ring size; Envoy's default is 8M (8,388,608).
        maximum_ring_size: u64,
    },
    /// Consistent hashing with a maglev table.
    Maglev {
        /// Table size, a prime; Envoy's default is 65537.
        table_size: u64,
    },
}

/// What a [`Balancer`] is built from besides the hosts.
#[derive(Debug, Clone)]
pub struct BalancerConfig {
    /// The policy picking a host inside a priority level (or locality).
    pub policy: Policy,
    /// Envoy's `common_lb_config.healthy_panic_threshold` in percent (Envoy default 50;
    /// Istio sets 0 unless DestinationRule minHealthPercent). Below it, balance over all
    /// hosts of the priority.
    pub panic_threshold: f64,
    /// `common_lb_config.locality_weighted_lb_config` set.
    pub locality_weighted: bool,
}

/// Per-pick inputs from the caller.
pub struct PickContext<'a> {
    /// The request's hash (from route hash policies) for RingHash/Maglev; None → behave
    /// like Random (a random point on the ring or table).
    pub hash: Option<u64>,
    /// A fresh random value for this pick.
    pub random: u64,
    /// false for hosts this pick must avoid (e.g. already tried by a retry with
    /// previous_hosts).
    pub usable: &'a dyn Fn(usize) -> bool,
    /// In-flight requests on host i (least request).
    pub active: &'a dyn Fn(usize) -> u64,
}

/// Picks hosts for one (hosts, health) state of a cluster. Immutable apart from the round
/// robin counters; rebuild it when endpoints or health (outlier ejection) change.
/// `Send + Sync`.
#[derive(Debug)]
pub struct Balancer {
    len: usize,
    hash_based: bool,
    /// Levels that receive load, in priority order.
    levels: Vec<Level>,
}

#[derive(Debug)]
struct Level {
    /// End (exclusive) of this level's slice of `0..100`.
    load_end: u32,
    pick: LevelPick,
}

#[derive(Debug)]
enum LevelPick {
    Hosts(HostSet),
    /// Locality-weighted: one set per locality with a positive effective weight.
    Localities {
        sets: Vec<HostSet>,
        weights: Vec<f64>,
    },
}

/// The hosts of one priority, split by health.
struct PriorityHosts {
    all: Vec<usize>,
    healthy: Vec<usize>,
}

impl PriorityHosts {
    /// Envoy's level health: `min(100, 140 * healthy / total)`.
    fn health(&self) -> u32 {
        let total = self.all.len() as u64;
        (OVERPROVISIONING * self.healthy.len() as u64 / total).min(100) as u32
    }
}

impl Balancer {
    /// Builds the balancer. `healthy[i]` false = ejected/unhealthy host (never picked
    /// unless panic mode); a missing entry counts as healthy.
    pub fn new(config: &BalancerConfig, hosts: &[HostInfo], healthy: &[bool]) -> Balancer {
        let is_healthy = |i: usize| healthy.get(i).copied().unwrap_or(true);
        let mut by_priority: BTreeMap<u32, PriorityHosts> = BTreeMap::new();
        for (i, host) in hosts.iter().enumerate() {
            let level = by_priority.entry(host.priority).or_insert(PriorityHosts {
                all: Vec::new(),
                healthy: Vec::new(),
            });
            level.all.push(i);
            if is_healthy(i) {
                level.healthy.push(i);
            }
        }
        let priorities: Vec<PriorityHosts> = by_priority.into_values().collect();
        let hash_based = matches!(
            config.policy,
            Policy::RingHash { .. } | Policy::Maglev { .. }
        );

        // (load, panic) per level.
        let health: Vec<u32> = priorities.iter().map(PriorityHosts::health).collect();
        let total_health = health.iter().sum::<u32>().min(100);
        let plan: Vec<(u32, bool)> = if total_health == 0 {
            if config.panic_threshold > 0.0 && !hosts.is_empty() {
                // Total panic: every level balances over all its hosts, load by host count.
                let counts: Vec<u64> = priorities.iter().map(|p| p.all.len() as u64).collect();
                spread(&counts)
                    .into_iter()
                    .map(|load| (load, true))
                    .collect()
            } else {
                Vec::new()
            }
        } else {
            let loads = spread_health(&health, total_health);
            priorities
                .iter()
                .zip(loads)
                .map(|(p, load)| {
                    let healthy_percent = 100.0 * p.healthy.len() as f64 / p.all.len() as f64;
                    (
                        load,
                        total_health < 100 && healthy_percent < config.panic_threshold,
                    )
                })
                .collect()
        };

        let mut levels = Vec::new();
        let mut load_end = 0;
        for (p, (load, panic)) in priorities.iter().zip(plan) {
            if load == 0 {
                continue;
            }
            load_end += load;
            let members = if panic { &p.all } else { &p.healthy };
            let use_localities = config.locality_weighted && !panic && !hash_based;
            let pick = use_localities
                .then(|| locality_pick(config, hosts, p))
                .flatten()
                .unwrap_or_else(|| {
                    LevelPick::Hosts(HostSet::new(
                        &config.policy,
                        members.clone(),
                        hosts,
                        config.locality_weighted,
                    ))
                });
            levels.push(Level { load_end, pick });
        }
        Balancer {
            len: hosts.len(),
            hash_based,
            levels,
        }
    }

    /// Index into `hosts`, or None when there is no host at all (or, with a panic threshold
    /// of 0, when no host is healthy: Envoy's "no healthy upstream").
    ///
    /// Hosts failing `ctx.usable` are avoided within the chosen priority level (other
    /// localities of the level are tried too). When every host there is unusable the pick
    /// is returned anyway, like Envoy after `host_selection_max_attempts`; the caller
    /// decides whether to use it.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let last = self.levels.last()?;
        let mut rng = SplitMix::new(ctx.random);
        let hash = if self.hash_based { ctx.hash } else { None };
        let point = (hash.unwrap_or_else(|| rng.next_u64()) % 100) as u32;
        let level = self
            .levels
            .iter()
            .find(|l| point < l.load_end)
            .unwrap_or(last);
        match &level.pick {
            LevelPick::Hosts(set) => Some(set.pick(ctx, &mut rng, hash)),
            LevelPick::Localities { sets, weights } => {
                let chosen = weighted_index(weights, rng.next_u64()).unwrap_or(0);
                let first = sets[chosen].pick(ctx, &mut rng, hash);
                if (ctx.usable)(first) {
                    return Some(first);
                }
                let other = (1..sets.len())
                    .map(|step| &sets[(chosen + step) % sets.len()])
                    .find(|set| set.any_usable(ctx));
                Some(other.map_or(first, |set| set.pick(ctx, &mut rng, hash)))
            }
        }
    }

    /// Number of hosts the balancer was built from.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the balancer was built from no hosts.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Splits 100 % over levels by `health` normalized to `total` (Envoy's priority load);
/// rounding leftovers go to the first level with health.
fn spread_health(health: &[u32], total: u32) -> Vec<u32> {
    let mut remaining = 100u32;
    let mut loads: Vec<u32> = health
        .iter()
        .map(|&h| {
            let load = (h * 100 / total).min(remaining);
            remaining -= load;
            load
        })
        .collect();
    if let Some(first) = health.iter().position(|&h| h > 0) {
        loads[first] += remaining;
    }
    loads
}

/// Splits 100 % proportionally to `counts` (total panic: by host count).
fn spread(counts: &[u64]) -> Vec<u32> {
    let total: u64 = counts.iter().sum();
    let mut loads: Vec<u32> = counts.iter().map(|&c| (c * 100 / total) as u32).collect();
    let leftover = 100 - loads.iter().sum::<u32>();
    if let Some(first) = counts.iter().position(|&c| c > 0) {
        loads[first] += leftover;
    }
    loads
}

/// Locality-weighted sets for a healthy (non-panic) level, or `None` when no locality has a
/// positive effective weight (then the level balances over all its healthy hosts).
fn locality_pick(
    config: &BalancerConfig,
    hosts: &[HostInfo],
    level: &PriorityHosts,
) -> Option<LevelPick> {
    // locality -> (weight, total hosts, healthy members)
    let mut localities: BTreeMap<usize, (u32, usize, Vec<usize>)> = BTreeMap::new();
    for &i in &level.all {
        localities
            .entry(hosts[i].locality)
            .or_insert((hosts[i].locality_weight, 0, Vec::new()))
            .1 += 1;
    }
    for &i in &level.healthy {
        if let Some(l) = localities.get_mut(&hosts[i].locality) {
            l.2.push(i);
        }
    }
    let mut sets = Vec::new();
    let mut weights = Vec::new();
    for (weight, total, members) in localities.into_values() {
        let availability =
            (OVERPROVISIONING as f64 / 100.0 * members.len() as f64 / total as f64).min(1.0);
        let effective = f64::from(weight) * availability;
        if effective > 0.0 && !members.is_empty() {
            sets.push(HostSet::new(&config.policy, members, hosts, true));
            weights.push(effective);
        }
    }
    (!sets.is_empty()).then_some(LevelPick::Localities { sets, weights })
}

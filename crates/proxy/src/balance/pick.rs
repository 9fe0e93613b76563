//! One set of candidate hosts (a priority level, or one locality of it) and the policy
//! that picks among them: round robin, random, least request, ring hash or maglev.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::hash::{SplitMix, below};
use super::maglev::Maglev;
use super::ring::Ring;
use super::{HostInfo, PickContext, Policy};

/// Largest round robin schedule kept; larger weight sums are scaled down to fit.
const MAX_SCHEDULE: u64 = 1 << 16;
/// Largest maglev table built (Envoy's own upper bound).
const MAX_MAGLEV_TABLE: u64 = 5_000_011;
/// Random draws tried before falling back to listing the usable hosts.
const RANDOM_TRIES: usize = 8;

/// Candidate hosts (indices into the balancer's host list) and their picker.
#[derive(Debug)]
pub(crate) struct HostSet {
    members: Vec<usize>,
    picker: Picker,
}

#[derive(Debug)]
enum Picker {
    /// Rotation over `schedule` (an EDF order over one weight period), or over the members
    /// themselves when all weights are equal.
    RoundRobin {
        next: AtomicUsize,
        schedule: Option<Vec<u32>>,
    },
    Random,
    /// Power of `choice_count` choices when weights are equal (`weights` is `None`),
    /// otherwise a weighted draw by `weight / (active + 1)`.
    LeastRequest {
        choice_count: u32,
        weights: Option<Vec<u32>>,
    },
    Ring(Ring),
    Maglev(Maglev),
}

impl HostSet {
    /// Builds the picker for `members` (non-empty indices into `hosts`). For the hash
    /// policies `locality_weighted` folds locality weights into the host weights, as Envoy
    /// does for its thread-aware balancers.
    pub(crate) fn new(
        policy: &Policy,
        members: Vec<usize>,
        hosts: &[HostInfo],
        locality_weighted: bool,
    ) -> HostSet {
        let weights: Vec<u32> = members.iter().map(|&i| hosts[i].weight.max(1)).collect();
        let equal = weights.windows(2).all(|w| w[0] == w[1]);
        let picker = match policy {
            Policy::RoundRobin => Picker::RoundRobin {
                next: AtomicUsize::new(0),
                schedule: (!equal).then(|| edf_schedule(&weights)),
            },
            Policy::Random => Picker::Random,
            Policy::LeastRequest { choice_count } => Picker::LeastRequest {
                choice_count: (*choice_count).max(1),
                weights: (!equal).then_some(weights),
            },
            Policy::RingHash {
                minimum_ring_size,
                maximum_ring_size,
            } => {
                let keys: Vec<&str> = members.iter().map(|&i| hosts[i].key.as_str()).collect();
                let normalized = normalized_weights(&members, hosts, locality_weighted);
                Picker::Ring(Ring::build(
                    &keys,
                    &normalized,
                    *minimum_ring_size,
                    *maximum_ring_size,
                ))
            }
            Policy::Maglev { table_size } => {
                let keys: Vec<&str> = members.iter().map(|&i| hosts[i].key.as_str()).collect();
                let normalized = normalized_weights(&members, hosts, locality_weighted);
                Picker::Maglev(Maglev::build(
                    &keys,
                    &normalized,
                    (*table_size).min(MAX_MAGLEV_TABLE),
                ))
            }
        };
        HostSet { members, picker }
    }

    /// Whether any member passes `ctx.usable`.
    pub(crate) fn any_usable(&self, ctx: &PickContext<'_>) -> bool {
        self.members.iter().any(|&i| (ctx.usable)(i))
    }

    /// Picks a member, preferring usable ones; returns an index into the host list.
    /// `hash` is the request hash for the hash policies (`None` draws one from `rng`).
    pub(crate) fn pick(
        &self,
        ctx: &PickContext<'_>,
        rng: &mut SplitMix,
        hash: Option<u64>,
    ) -> usize {
        let usable = |local: usize| (ctx.usable)(self.members[local]);
        let n = self.members.len();
        let local = match &self.picker {
            Picker::RoundRobin { next, schedule } => {
                let start = next.fetch_add(1, Ordering::Relaxed);
                let entry = |k: usize| match schedule {
                    Some(s) => s[k % s.len()] as usize,
                    None => k % n,
                };
                let period = schedule.as_ref().map_or(n, Vec::len);
                (0..period)
                    .map(|step| entry(start.wrapping_add(step)))
                    .find(|&l| usable(l))
                    .unwrap_or_else(|| entry(start))
            }
            Picker::Random => {
                draw_usable(rng, n, &usable).unwrap_or_else(|| below(rng.next_u64(), n))
            }
            Picker::LeastRequest {
                choice_count,
                weights: None,
            } => {
                let any = draw_usable(rng, n, &usable).is_some();
                let mut best: Option<(usize, u64)> = None;
                for _ in 0..*choice_count {
                    let candidate = if any {
                        draw_usable(rng, n, &usable)
                    } else {
                        Some(below(rng.next_u64(), n))
                    };
                    let Some(candidate) = candidate else { continue };
                    let active = (ctx.active)(self.members[candidate]);
                    if best.is_none_or(|(_, a)| active < a) {
                        best = Some((candidate, active));
                    }
                }
                best.map_or(0, |(l, _)| l)
            }
            Picker::LeastRequest {
                weights: Some(weights),
                ..
            } => {
                let any = (0..n).any(&usable);
                let effective: Vec<f64> = (0..n)
                    .map(|l| {
                        if any && !usable(l) {
                            0.0
                        } else {
                            f64::from(weights[l]) / ((ctx.active)(self.members[l]) as f64 + 1.0)
                        }
                    })
                    .collect();
                weighted_index(&effective, rng.next_u64()).unwrap_or(0)
            }
            Picker::Ring(ring) if ring.len() > 0 => {
                let h = hash.unwrap_or_else(|| rng.next_u64());
                walk(ring.position(h), ring.len(), |p| ring.host_at(p), &usable)
            }
            Picker::Maglev(table) if table.len() > 0 => {
                let h = hash.unwrap_or_else(|| rng.next_u64());
                walk(
                    table.position(h),
                    table.len(),
                    |p| table.host_at(p),
                    &usable,
                )
            }
            // An empty ring or table only comes from weights that are all zero.
            Picker::Ring(_) | Picker::Maglev(_) => 0,
        };
        self.members[local]
    }
}

/// From `start`, the first position (at most `len` steps on) whose host is usable, or the
/// host at `start` when none is.
fn walk(
    start: usize,
    len: usize,
    host_at: impl Fn(usize) -> usize,
    usable: &dyn Fn(usize) -> bool,
) -> usize {
    let first = host_at(start);
    if usable(first) {
        return first;
    }
    (1..len)
        .map(|step| host_at(start + step))
        .find(|&l| usable(l))
        .unwrap_or(first)
}

/// A uniformly drawn usable index in `0..n`, or `None` when no index is usable.
fn draw_usable(rng: &mut SplitMix, n: usize, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
    for _ in 0..RANDOM_TRIES {
        let l = below(rng.next_u64(), n);
        if usable(l) {
            return Some(l);
        }
    }
    let candidates: Vec<usize> = (0..n).filter(|&l| usable(l)).collect();
    (!candidates.is_empty()).then(|| candidates[below(rng.next_u64(), candidates.len())])
}

/// Index drawn with probability proportional to `weights[i]`; `None` if all are zero.
pub(crate) fn weighted_index(weights: &[f64], r: u64) -> Option<usize> {
    let total: f64 = weights.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let mut point = (r >> 11) as f64 / (1u64 << 53) as f64 * total;
    let mut last = None;
    for (i, &w) in weights.iter().enumerate() {
        if w <= 0.0 {
            continue;
        }
        if point < w {
            return Some(i);
        }
        point -= w;
        last = Some(i);
    }
    last
}

/// Earliest-deadline-first order over one period: host `i` with weight `w_i` appears
/// `w_i` times, at deadlines `k / w_i` (`k = 1..=w_i`), ties broken by index. This is the
/// sequence Envoy's EDF scheduler produces from a fresh start.
fn edf_schedule(weights: &[u32]) -> Vec<u32> {
    let sum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
    let scaled: Vec<u64> = weights
        .iter()
        .map(|&w| {
            if sum > MAX_SCHEDULE {
                (u64::from(w) * MAX_SCHEDULE / sum).max(1)
            } else {
                u64::from(w)
            }
        })
        .collect();
    let mut slots: Vec<(u64, u64, u32)> = Vec::new();
    for (i, &w) in scaled.iter().enumerate() {
        for k in 1..=w {
            slots.push((k, w, i as u32));
        }
    }
    // Compare k1/w1 with k2/w2 exactly as k1*w2 vs k2*w1.
    slots.sort_by(|a, b| (a.0 * b.1).cmp(&(b.0 * a.1)).then(a.2.cmp(&b.2)));
    slots.into_iter().map(|(_, _, i)| i).collect()
}

/// Host weights normalized to sum 1. With locality weighting each locality's share is its
/// weight over the sum of locality weights, split among its hosts by host weight.
fn normalized_weights(members: &[usize], hosts: &[HostInfo], locality_weighted: bool) -> Vec<f64> {
    let weight = |i: usize| f64::from(hosts[i].weight.max(1));
    if locality_weighted {
        let mut localities: Vec<(usize, f64, f64)> = Vec::new(); // (locality, weight, host weight sum)
        for &i in members {
            match localities.iter_mut().find(|l| l.0 == hosts[i].locality) {
                Some(l) => l.2 += weight(i),
                None => localities.push((
                    hosts[i].locality,
                    f64::from(hosts[i].locality_weight),
                    weight(i),
                )),
            }
        }
        let total: f64 = localities.iter().map(|l| l.1).sum();
        if total > 0.0 {
            return members
                .iter()
                .map(|&i| {
                    let l = localities
                        .iter()
                        .find(|l| l.0 == hosts[i].locality)
                        .expect("every member's locality was recorded above");
                    l.1 / total * weight(i) / l.2
                })
                .collect();
        }
    }
    let total: f64 = members.iter().map(|&i| weight(i)).sum();
    members.iter().map(|&i| weight(i) / total).collect()
}

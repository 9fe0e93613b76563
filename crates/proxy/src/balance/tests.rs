//! Unit tests for the balancer and the hash.

use std::time::Instant;

use super::*;

fn host(i: usize) -> HostInfo {
    HostInfo {
        key: format!("10.0.{}.{}:8080", i / 250, i % 250 + 1),
        weight: 1,
        priority: 0,
        locality: 0,
        locality_weight: 1,
    }
}

fn hosts(n: usize) -> Vec<HostInfo> {
    (0..n).map(host).collect()
}

fn config(policy: Policy) -> BalancerConfig {
    BalancerConfig {
        policy,
        panic_threshold: 50.0,
        locality_weighted: false,
    }
}

const RING: Policy = Policy::RingHash {
    minimum_ring_size: 1024,
    maximum_ring_size: 8 * 1024 * 1024,
};
const MAGLEV: Policy = Policy::Maglev { table_size: 65537 };

fn all_usable(_: usize) -> bool {
    true
}

fn idle(_: usize) -> u64 {
    0
}

fn pick(b: &Balancer, random: u64, hash: Option<u64>) -> usize {
    b.pick(&PickContext {
        hash,
        random,
        usable: &all_usable,
        active: &idle,
    })
    .expect("a host")
}

/// Pick counts per host over `n` picks with fresh random values (and random hashes when
/// `hashed`).
fn counts(b: &Balancer, n: usize, hashed: bool) -> Vec<usize> {
    let mut rng = fastrand::Rng::with_seed(42);
    let mut counts = vec![0; b.len()];
    for _ in 0..n {
        let hash = hashed.then(|| rng.u64(..));
        counts[pick(b, rng.u64(..), hash)] += 1;
    }
    counts
}

fn share(count: usize, n: usize) -> f64 {
    count as f64 / n as f64
}

// ---- xxHash64 ----

#[test]
fn xxhash64_matches_reference_vectors() {
    assert_eq!(xxhash64(b"", 0), 0xEF46_DB37_51D8_E999);
    assert_eq!(xxhash64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
    assert_eq!(xxhash64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
    // 32 and 39 bytes: the four-lane stripe loop and its merge.
    assert_eq!(xxhash64(&[b'a'; 32], 0), 0x856E_8432_98F9_9AD7);
    assert_eq!(
        xxhash64(b"0123456789abcdef0123456789abcdef", 0),
        0x642A_9495_8E71_E6C5
    );
    assert_eq!(
        xxhash64(b"Nobody inspects the spammish repetition", 0),
        0xFBCE_A83C_8A37_8BF1
    );
    assert_eq!(
        xxhash64(b"The quick brown fox jumps over the lazy dog", 0),
        0x0B24_2D36_1FDA_71BC
    );
}

#[test]
fn xxhash64_seed_changes_the_hash() {
    assert_eq!(xxhash64(b"abc", 12345), 0x0170_0E64_F6F2_3509);
    assert_ne!(xxhash64(b"10.0.0.1:80", 0), xxhash64(b"10.0.0.1:80", 1));
}

// ---- basic shape ----

#[test]
fn empty_balancer_picks_nothing() {
    let b = Balancer::new(&config(Policy::RoundRobin), &[], &[]);
    assert!(b.is_empty());
    assert_eq!(b.len(), 0);
    assert_eq!(
        b.pick(&PickContext {
            hash: None,
            random: 1,
            usable: &all_usable,
            active: &idle
        }),
        None
    );
}

#[test]
fn balancer_and_detector_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Balancer>();
    check::<OutlierDetector>();
}

// ---- round robin ----

#[test]
fn round_robin_rotates_through_equal_hosts() {
    let b = Balancer::new(&config(Policy::RoundRobin), &hosts(3), &[true; 3]);
    let picks: Vec<usize> = (0..12).map(|i| pick(&b, i * 7919, None)).collect();
    for window in picks.chunks(3) {
        let mut sorted = window.to_vec();
        sorted.sort();
        assert_eq!(
            sorted,
            vec![0, 1, 2],
            "each round visits every host once: {picks:?}"
        );
    }
    for i in 3..picks.len() {
        assert_eq!(picks[i], picks[i - 3], "same order every round: {picks:?}");
    }
}

#[test]
fn round_robin_honours_weights() {
    let mut hs = hosts(2);
    hs[0].weight = 3;
    let b = Balancer::new(&config(Policy::RoundRobin), &hs, &[true; 2]);
    let picks: Vec<usize> = (0..400).map(|i| pick(&b, i, None)).collect();
    assert_eq!(picks.iter().filter(|&&p| p == 0).count(), 300);
    assert!(
        picks.windows(2).all(|w| !(w[0] == 1 && w[1] == 1)),
        "the light host is interleaved, never picked twice in a row"
    );
}

#[test]
fn round_robin_skips_unusable_hosts() {
    let b = Balancer::new(&config(Policy::RoundRobin), &hosts(3), &[true; 3]);
    let not_one = |i: usize| i != 1;
    for r in 0..30 {
        let picked = b
            .pick(&PickContext {
                hash: None,
                random: r,
                usable: &not_one,
                active: &idle,
            })
            .unwrap();
        assert_ne!(picked, 1);
    }
}

#[test]
fn every_host_unusable_still_returns_a_pick() {
    for policy in [Policy::RoundRobin, Policy::Random, RING, MAGLEV] {
        let b = Balancer::new(&config(policy.clone()), &hosts(3), &[true; 3]);
        let none = |_: usize| false;
        let picked = b.pick(&PickContext {
            hash: Some(99),
            random: 5,
            usable: &none,
            active: &idle,
        });
        assert!(picked.is_some_and(|p| p < 3), "{policy:?}");
    }
}

// ---- random ----

#[test]
fn random_spreads_evenly() {
    let b = Balancer::new(&config(Policy::Random), &hosts(3), &[true; 3]);
    let n = 30_000;
    for c in counts(&b, n, false) {
        assert!(
            (share(c, n) - 1.0 / 3.0).abs() < 0.03,
            "share {}",
            share(c, n)
        );
    }
}

#[test]
fn random_avoids_unusable_hosts() {
    let b = Balancer::new(&config(Policy::Random), &hosts(4), &[true; 4]);
    let only_two = |i: usize| i == 2;
    for r in 0..200 {
        let picked = b.pick(&PickContext {
            hash: None,
            random: r,
            usable: &only_two,
            active: &idle,
        });
        assert_eq!(picked, Some(2));
    }
}

// ---- least request ----

#[test]
fn least_request_prefers_the_idle_host() {
    let b = Balancer::new(
        &config(Policy::LeastRequest { choice_count: 2 }),
        &hosts(2),
        &[true; 2],
    );
    let busy_zero = |i: usize| if i == 0 { 10 } else { 0 };
    let n = 10_000;
    let mut rng = fastrand::Rng::with_seed(1);
    let idle_picks = (0..n)
        .filter(|_| {
            b.pick(&PickContext {
                hash: None,
                random: rng.u64(..),
                usable: &all_usable,
                active: &busy_zero,
            }) == Some(1)
        })
        .count();
    // Two draws over two hosts: the busy host wins only when drawn twice (1/4).
    assert!(
        (share(idle_picks, n) - 0.75).abs() < 0.03,
        "{}",
        share(idle_picks, n)
    );
}

#[test]
fn least_request_with_more_choices_finds_the_idle_host_more_often() {
    let busy = |i: usize| if i == 3 { 0 } else { 5 };
    let run = |choices: u32| {
        let b = Balancer::new(
            &config(Policy::LeastRequest {
                choice_count: choices,
            }),
            &hosts(8),
            &[true; 8],
        );
        let mut rng = fastrand::Rng::with_seed(2);
        (0..5_000)
            .filter(|_| {
                b.pick(&PickContext {
                    hash: None,
                    random: rng.u64(..),
                    usable: &all_usable,
                    active: &busy,
                }) == Some(3)
            })
            .count()
    };
    assert!(run(5) > run(2));
}

#[test]
fn weighted_least_request_follows_weight_over_load() {
    let mut hs = hosts(2);
    hs[0].weight = 2;
    let b = Balancer::new(
        &config(Policy::LeastRequest { choice_count: 2 }),
        &hs,
        &[true; 2],
    );
    let n = 20_000;
    let equal_load = counts(&b, n, false);
    assert!((share(equal_load[0], n) - 2.0 / 3.0).abs() < 0.03);
    // Host 0 with three requests in flight: 2/4 against 1/1.
    let loaded = |i: usize| if i == 0 { 3 } else { 0 };
    let mut rng = fastrand::Rng::with_seed(3);
    let to_zero = (0..n)
        .filter(|_| {
            b.pick(&PickContext {
                hash: None,
                random: rng.u64(..),
                usable: &all_usable,
                active: &loaded,
            }) == Some(0)
        })
        .count();
    assert!(
        (share(to_zero, n) - 1.0 / 3.0).abs() < 0.03,
        "{}",
        share(to_zero, n)
    );
}

// ---- ring hash and maglev ----

/// Compares picks for 20k random hashes before and after adding a fifth host; returns
/// (share of keys that moved, share of the moved keys that went to the new host).
fn moved_keys(before: Policy, after: Policy) -> (f64, f64) {
    let b4 = Balancer::new(&config(before.clone()), &hosts(4), &[true; 4]);
    let b5 = Balancer::new(&config(after), &hosts(5), &[true; 5]);
    let mut rng = fastrand::Rng::with_seed(9);
    let keys: Vec<u64> = (0..20_000).map(|_| rng.u64(..)).collect();

    // Same hash, same host, whatever the random value.
    for &k in keys.iter().take(200) {
        assert_eq!(pick(&b4, 1, Some(k)), pick(&b4, 2, Some(k)));
    }

    let mut per_host = [0usize; 4];
    let mut moved = 0;
    let mut to_new = 0;
    for &k in &keys {
        let old = pick(&b4, 0, Some(k));
        let new = pick(&b5, 0, Some(k));
        per_host[old] += 1;
        if old != new {
            moved += 1;
            to_new += usize::from(new == 4);
        }
    }
    for c in per_host {
        let s = share(c, keys.len());
        assert!((s - 0.25).abs() < 0.08, "{before:?}: uneven share {s}");
    }
    (share(moved, keys.len()), share(to_new, moved.max(1)))
}

#[test]
fn ring_hash_is_consistent_and_even() {
    // With the per-host entry count kept (256 each: ring 1024 for 4 hosts, 1280 for 5),
    // keys move only to the added host, about a fifth of them.
    let ring = |minimum_ring_size| Policy::RingHash {
        minimum_ring_size,
        maximum_ring_size: 8 * 1024 * 1024,
    };
    let (moved, to_new) = moved_keys(ring(1024), ring(1280));
    assert!((moved - 0.2).abs() < 0.05, "{moved} of keys moved");
    assert_eq!(to_new, 1.0, "keys move only to the added host");
    // With the same minimum each host has fewer entries after the change (Envoy sizes the
    // ring from the minimum): still a minority moves, most of it to the new host.
    let (moved, to_new) = moved_keys(RING, RING);
    assert!(moved < 0.4, "{moved} of keys moved");
    assert!(to_new > 0.5, "{to_new} of moved keys went to the new host");
}

#[test]
fn maglev_is_consistent_and_even() {
    let (moved, to_new) = moved_keys(MAGLEV, MAGLEV);
    assert!(moved < 0.3, "{moved} of keys moved");
    assert!(to_new > 0.9, "{to_new} of moved keys went to the new host");
}

#[test]
fn hash_policies_honour_weights() {
    for policy in [RING, MAGLEV] {
        let mut hs = hosts(2);
        hs[0].weight = 3;
        let b = Balancer::new(&config(policy.clone()), &hs, &[true; 2]);
        let n = 20_000;
        let c = counts(&b, n, true);
        assert!(
            (share(c[0], n) - 0.75).abs() < 0.06,
            "{policy:?}: {}",
            share(c[0], n)
        );
    }
}

#[test]
fn hash_policies_walk_past_unusable_hosts() {
    for policy in [RING, MAGLEV] {
        let b = Balancer::new(&config(policy.clone()), &hosts(5), &[true; 5]);
        for k in [1u64, 77, 123_456_789, u64::MAX - 3] {
            let first = pick(&b, 0, Some(k));
            let avoid = |i: usize| i != first;
            let ctx = PickContext {
                hash: Some(k),
                random: 0,
                usable: &avoid,
                active: &idle,
            };
            let second = b.pick(&ctx).unwrap();
            assert_ne!(second, first, "{policy:?}");
            assert_eq!(
                b.pick(&ctx),
                Some(second),
                "{policy:?}: the fallback is stable"
            );
        }
    }
}

#[test]
fn hash_policies_without_a_hash_spread_like_random() {
    for policy in [RING, MAGLEV] {
        let b = Balancer::new(&config(policy.clone()), &hosts(4), &[true; 4]);
        let n = 20_000;
        for c in counts(&b, n, false) {
            assert!((share(c, n) - 0.25).abs() < 0.08, "{policy:?}");
        }
    }
}

#[test]
fn ring_size_respects_maximum() {
    // A tiny maximum still builds a working ring.
    let policy = Policy::RingHash {
        minimum_ring_size: 1024,
        maximum_ring_size: 8,
    };
    let b = Balancer::new(&config(policy), &hosts(3), &[true; 3]);
    let c = counts(&b, 3_000, true);
    assert!(c.iter().all(|&x| x > 0), "{c:?}");
}

// ---- priorities and panic ----

fn two_priorities(p0_healthy: usize) -> (Vec<HostInfo>, Vec<bool>) {
    let mut hs = hosts(8);
    for h in &mut hs[4..] {
        h.priority = 1;
    }
    let healthy = (0..8).map(|i| i >= 4 || i < p0_healthy).collect();
    (hs, healthy)
}

#[test]
fn priority_zero_takes_all_load_while_healthy_enough() {
    // 3 of 4 healthy: 140 * 3/4 = 105% → capped at 100, nothing spills.
    let (hs, healthy) = two_priorities(3);
    let b = Balancer::new(&config(Policy::Random), &hs, &healthy);
    let c = counts(&b, 10_000, false);
    assert_eq!(c[3], 0, "unhealthy host never picked");
    assert_eq!(c[4..].iter().sum::<usize>(), 0, "no spill to priority 1");
}

#[test]
fn load_spills_to_the_next_priority() {
    // 2 of 4 healthy: P0 health 70%, P1 gets the other 30%.
    let (hs, healthy) = two_priorities(2);
    let n = 20_000;
    for policy in [Policy::RoundRobin, Policy::Random, RING, MAGLEV] {
        let b = Balancer::new(&config(policy.clone()), &hs, &healthy);
        let c = counts(&b, n, true);
        assert_eq!(
            c[2] + c[3],
            0,
            "{policy:?}: unhealthy P0 hosts never picked"
        );
        let p1 = share(c[4..].iter().sum(), n);
        assert!((p1 - 0.30).abs() < 0.03, "{policy:?}: P1 share {p1}");
    }
    // Nothing healthy in P0: everything goes to P1.
    let (hs, healthy) = two_priorities(0);
    let b = Balancer::new(&config(Policy::Random), &hs, &healthy);
    let c = counts(&b, 5_000, false);
    assert_eq!(c[..4].iter().sum::<usize>(), 0);
}

#[test]
fn panic_balances_over_all_hosts() {
    // 4 of 10 healthy (40% < 50%), one priority: panic, every host gets traffic.
    let healthy: Vec<bool> = (0..10).map(|i| i < 4).collect();
    let b = Balancer::new(&config(Policy::Random), &hosts(10), &healthy);
    let c = counts(&b, 10_000, false);
    assert!(c.iter().all(|&x| x > 700), "{c:?}");

    // Panic threshold 0 (Istio's default): only healthy hosts.
    let mut cfg = config(Policy::Random);
    cfg.panic_threshold = 0.0;
    let b = Balancer::new(&cfg, &hosts(10), &healthy);
    let c = counts(&b, 10_000, false);
    assert_eq!(c[4..].iter().sum::<usize>(), 0, "{c:?}");
}

#[test]
fn no_healthy_host_means_panic_or_nothing() {
    let unhealthy = [false; 4];
    let b = Balancer::new(&config(Policy::RoundRobin), &hosts(4), &unhealthy);
    let c = counts(&b, 400, false);
    assert!(
        c.iter().all(|&x| x == 100),
        "total panic uses every host: {c:?}"
    );

    let mut cfg = config(Policy::RoundRobin);
    cfg.panic_threshold = 0.0;
    let b = Balancer::new(&cfg, &hosts(4), &unhealthy);
    let ctx = PickContext {
        hash: None,
        random: 3,
        usable: &all_usable,
        active: &idle,
    };
    assert_eq!(b.pick(&ctx), None, "no healthy upstream");
    assert_eq!(b.len(), 4);
}

#[test]
fn panic_is_ignored_when_lower_priorities_cover_the_load() {
    // P0: 1 of 4 healthy (25% < 50%) but P1 is fully healthy: total health 100%, so P0
    // is not in panic and its unhealthy hosts stay out.
    let (hs, healthy) = two_priorities(1);
    let b = Balancer::new(&config(Policy::Random), &hs, &healthy);
    let n = 20_000;
    let c = counts(&b, n, false);
    assert_eq!(c[1] + c[2] + c[3], 0, "{c:?}");
    assert!((share(c[0], n) - 0.35).abs() < 0.03, "P0 health 35%: {c:?}");
}

#[test]
fn degraded_total_health_is_normalized() {
    // P0 1 of 4 healthy (35%), P1 1 of 4 healthy (35%): total 70%, normalized to 50/50.
    let mut hs = hosts(8);
    for h in &mut hs[4..] {
        h.priority = 1;
    }
    let healthy: Vec<bool> = (0..8).map(|i| i == 0 || i == 4).collect();
    let mut cfg = config(Policy::Random);
    cfg.panic_threshold = 0.0;
    let b = Balancer::new(&cfg, &hs, &healthy);
    let n = 20_000;
    let c = counts(&b, n, false);
    assert_eq!(c[0] + c[4], n, "only healthy hosts without panic");
    assert!((share(c[0], n) - 0.5).abs() < 0.03, "{c:?}");
}

// ---- locality weighting ----

#[test]
fn locality_weights_split_the_load() {
    let mut hs = hosts(4);
    for (i, h) in hs.iter_mut().enumerate() {
        h.locality = i / 2;
        h.locality_weight = if i < 2 { 3 } else { 1 };
    }
    let mut cfg = config(Policy::RoundRobin);
    cfg.locality_weighted = true;
    let b = Balancer::new(&cfg, &hs, &[true; 4]);
    let n = 20_000;
    let c = counts(&b, n, false);
    assert!((share(c[0] + c[1], n) - 0.75).abs() < 0.03, "{c:?}");
    assert!(
        (c[0] as i64 - c[1] as i64).abs() < n as i64 / 20,
        "rotation inside a locality: {c:?}"
    );
}

#[test]
fn unhealthy_hosts_shrink_their_locality_share() {
    // Locality 0: 2 of 4 healthy → availability min(1, 1.4 × 0.5) = 0.7; locality 1 full.
    let mut hs = hosts(8);
    for (i, h) in hs.iter_mut().enumerate() {
        h.locality = i / 4;
    }
    let healthy: Vec<bool> = (0..8).map(|i| !(i == 2 || i == 3)).collect();
    let mut cfg = config(Policy::Random);
    cfg.locality_weighted = true;
    let b = Balancer::new(&cfg, &hs, &healthy);
    let n = 20_000;
    let c = counts(&b, n, false);
    assert_eq!(c[2] + c[3], 0);
    assert!((share(c[0] + c[1], n) - 0.7 / 1.7).abs() < 0.03, "{c:?}");
}

// ---- with outlier detection ----

fn fail(d: &OutlierDetector, host: usize, times: usize, now: Instant) -> bool {
    let mut ejected = false;
    for _ in 0..times {
        ejected |= d.record(host, Outcome::Response(500), 0, now);
    }
    ejected
}

#[test]
fn detector_feeds_the_balancer() {
    let d = OutlierDetector::new(
        OutlierConfig {
            max_ejection_percent: 50,
            ..OutlierConfig::default()
        },
        4,
    );
    let now = Instant::now();
    assert!(fail(&d, 1, 5, now));
    let mut cfg = config(Policy::RoundRobin);
    cfg.panic_threshold = 0.0;
    let b = Balancer::new(&cfg, &hosts(4), &d.healthy());
    let c = counts(&b, 300, false);
    assert_eq!(c, vec![100, 0, 100, 100]);
}

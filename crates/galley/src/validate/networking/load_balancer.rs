//! Load balancer rules: the simple/consistent-hash choice, hash keys and algorithms
//! (Maglev table sizes must be prime), locality and zone-aware settings, warmup.

use std::collections::{BTreeMap, BTreeSet};

use common::istio::networking::{
    ConsistentHashLb, LoadBalancerSettings, LocalityFailover, LocalityLoadBalancerSetting,
    WarmupConfiguration, ZoneAwareLoadBalancerSetting,
};

use super::super::checks;
use super::super::field::Field;

/// Largest Maglev table Envoy accepts (exclusive).
const MAGLEV_MAX: u64 = 5_000_011;

/// Topology labels that `failover` already uses, so `failoverPriority` may not.
const TOPOLOGY_LABELS: &[&str] = &[
    "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.istio.io/subzone",
];

/// Validates `loadBalancer`; `has_outlier` says whether the same policy sets
/// outlier detection, which failover needs.
pub(super) fn load_balancer(f: &mut Field<'_>, lb: &LoadBalancerSettings, has_outlier: bool) {
    checks::at_most_one(
        f,
        &[
            ("simple", lb.simple.is_some()),
            ("consistentHash", lb.consistent_hash.is_some()),
        ],
    );
    if let Some(ch) = &lb.consistent_hash {
        consistent_hash(&mut f.at("consistentHash"), ch);
    }
    if let Some(l) = &lb.locality_lb_setting {
        locality(&mut f.at("localityLbSetting"), l, has_outlier);
    }
    if let Some(z) = &lb.zone_aware_lb_setting {
        zone_aware(&mut f.at("zoneAwareLbSetting"), z);
    }
    if let Some(d) = &lb.warmup_duration_secs {
        let mut fw = f.at("warmupDurationSecs");
        checks::istio_duration(&mut fw, d);
        fw.warn("is deprecated; use warmup: {duration: ...} instead");
        if lb.warmup.is_some() {
            fw.error("cannot be combined with warmup; keep warmup");
        }
    }
    if let Some(w) = &lb.warmup {
        warmup(&mut f.at("warmup"), w);
    }
}

fn consistent_hash(f: &mut Field<'_>, ch: &ConsistentHashLb) {
    checks::at_most_one(
        f,
        &[
            ("httpHeaderName", ch.http_header_name.is_some()),
            ("httpCookie", ch.http_cookie.is_some()),
            ("useSourceIp", ch.use_source_ip.is_some()),
            (
                "httpQueryParameterName",
                ch.http_query_parameter_name.is_some(),
            ),
        ],
    );
    checks::at_most_one(
        f,
        &[
            ("ringHash", ch.ring_hash.is_some()),
            ("maglev", ch.maglev.is_some()),
        ],
    );
    if let Some(h) = ch.http_header_name.as_deref()
        && h.is_empty()
    {
        f.at("httpHeaderName")
            .error("cannot be empty; name the header to hash on");
    }
    if let Some(q) = ch.http_query_parameter_name.as_deref()
        && q.is_empty()
    {
        f.at("httpQueryParameterName")
            .error("cannot be empty; name the query parameter to hash on");
    }
    if let Some(c) = &ch.http_cookie {
        let mut fc = f.at("httpCookie");
        if c.name.is_empty() {
            fc.at("name")
                .error("is required: name the cookie to hash on (it is generated when missing)");
        }
        let mut fa = fc.at("attributes");
        for (i, a) in c.attributes.iter().enumerate() {
            if a.name.is_empty() {
                fa.index(i)
                    .at("name")
                    .error("is required: name the cookie attribute, such as SameSite");
            }
        }
    }
    if let Some(n) = ch.minimum_ring_size.filter(|n| *n != 0) {
        let mut fm = f.at("minimumRingSize");
        fm.warn("is deprecated; use ringHash: {minimumRingSize: ...} instead");
        if ch.ring_hash.is_some() || ch.maglev.is_some() {
            fm.error(format!(
                "cannot be combined with ringHash or maglev (got {n}); set the ring size in ringHash.minimumRingSize"
            ));
        }
    }
    if let Some(m) = &ch.maglev {
        let mut fmag = f.at("maglev");
        let mut ft = fmag.at("tableSize");
        match m.table_size.unwrap_or(0) {
            0 => ft.error("is required for maglev: use a prime number such as 65537"),
            n if n >= MAGLEV_MAX => ft.error(format!(
                "must be less than {MAGLEV_MAX} (got {n}); use a prime such as 65537"
            )),
            n if !is_prime(n) => ft.error(format!(
                "must be a prime number (got {n}); use a prime such as 65537 or 131071"
            )),
            _ => {}
        }
    }
}

/// Envoy's primality test for Maglev table sizes.
fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x & 1 == 0 {
        return false;
    }
    let mut factor = 3u64;
    while factor.saturating_mul(factor) <= x {
        if x.is_multiple_of(factor) {
            return false;
        }
        factor += 2;
    }
    true
}

fn locality(f: &mut Field<'_>, l: &LocalityLoadBalancerSetting, has_outlier: bool) {
    if !l.distribute.is_empty() && !l.failover.is_empty() {
        f.error("distribute and failover cannot be set together; keep one");
        return;
    }
    if !l.failover.is_empty() {
        let mut fp = f.at("failoverPriority");
        for (i, p) in l.failover_priority.iter().enumerate() {
            if TOPOLOGY_LABELS.contains(&p.as_str()) {
                fp.index(i).error(format!(
                    "{p:?} cannot be used together with failover, which already fails over by region; remove it or remove failover"
                ));
                return;
            }
        }
    }
    let mut fd = f.at("distribute");
    let mut sources = Vec::new();
    for (i, d) in l.distribute.iter().enumerate() {
        let mut fi = fd.index(i);
        sources.push(d.from.clone().unwrap_or_default());
        let mut total: u64 = 0;
        let mut bad = false;
        for (loc, w) in &d.to {
            if *w == 0 || *w > 100 {
                fi.at("to").key(loc).error(format!(
                    "weight {w} is out of range; each locality weight must be 1 to 100"
                ));
                bad = true;
            }
            total += u64::from(*w);
        }
        if bad {
            continue;
        }
        if total != 100 {
            fi.at("to").error(format!(
                "weights add up to {total}; they must add up to 100"
            ));
            continue;
        }
        let dests: Vec<String> = d.to.keys().cloned().collect();
        localities(&mut fi.at("to"), &dests);
    }
    localities(&mut fd, &sources);
    if (!l.failover.is_empty() || !l.failover_priority.is_empty()) && !has_outlier {
        f.warn("failover takes effect only with outlier detection; add outlierDetection to the same traffic policy");
    }
    failovers(&mut f.at("failover"), &l.failover);
}

fn failovers(f: &mut Field<'_>, list: &[LocalityFailover]) {
    for (i, fo) in list.iter().enumerate() {
        let mut fi = f.index(i);
        let from = fo.from.as_deref().unwrap_or("");
        let to = fo.to.as_deref().unwrap_or("");
        if from == to {
            fi.error(format!(
                "from and to are both {from:?}; fail over to a different region"
            ));
        }
        if from.contains('/') || to.contains('/') {
            fi.error("failover names regions only (us-east), not zones (us-east/zone1)");
        }
        if from.contains('*') || to.contains('*') {
            fi.error("failover regions cannot contain the wildcard '*'; name the regions");
        }
    }
}

/// Localities (`region/zone/subzone`, `*` only at the end) that do not overlap.
fn localities(f: &mut Field<'_>, list: &[String]) {
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for loc in list {
        let stars = loc.matches('*').count();
        if stars > 1 || (stars == 1 && !loc.ends_with('*')) {
            f.error(format!(
                "locality {loc:?} may contain one '*', only at the end (us-west/*)"
            ));
            return;
        }
        let parts: Vec<&str> = loc.splitn(3, '/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            f.error(format!(
                "locality {loc:?} has an empty region, zone or subzone; write region/zone/subzone"
            ));
            return;
        }
        // Overlap: an earlier entry covers this one, or this one covers it.
        let norm: Vec<&str> = parts.iter().copied().filter(|p| *p != "*").collect();
        let key = norm.join("/");
        let overlaps = seen.keys().any(|k| {
            k == &key
                || k.is_empty()
                || key.is_empty()
                || key.starts_with(&format!("{k}/"))
                || k.starts_with(&format!("{key}/"))
        });
        if overlaps {
            f.error(format!(
                "locality {loc:?} overlaps one listed before it; list each locality once"
            ));
            return;
        }
        seen.entry(key).or_default();
    }
}

fn zone_aware(f: &mut Field<'_>, z: &ZoneAwareLoadBalancerSetting) {
    if z.min_cluster_size == Some(0) {
        f.at("minClusterSize").error("must be at least 1");
    }
    failovers(&mut f.at("failover"), &z.failover);
}

fn warmup(f: &mut Field<'_>, w: &WarmupConfiguration) {
    match &w.duration {
        None => f
            .at("duration")
            .error("is required: how long new endpoints take to warm up, such as 60s"),
        Some(d) => {
            checks::istio_duration(&mut f.at("duration"), d);
        }
    }
    if let Some(p) = w.minimum_percent {
        checks::percent_value(&mut f.at("minimumPercent"), p);
    }
    if let Some(a) = w.aggression
        && (a.is_nan() || a <= 0.0)
    {
        f.at("aggression").error(format!(
            "must be greater than 0 (got {a}); 1.0 ramps traffic up linearly, larger values faster"
        ));
    }
}

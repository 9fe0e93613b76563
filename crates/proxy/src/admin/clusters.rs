//! `/clusters`: Envoy's text listing of every cluster: its circuit breaker
//! thresholds, then per host `CLUSTER::HOST::STAT::VALUE` lines with the
//! host's counters, weight and health flags (`healthy`, or
//! `/failed_outlier_check` while outlier detection ejects it).

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::dataplane::Dataplane;

/// The listing, clusters sorted by name; `statics` are the bootstrap's
/// cluster names (not `added_via_api`).
pub fn text(dp: &Dataplane, statics: &[&str]) -> String {
    let mut clusters: Vec<_> = dp.clusters.iter().collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for c in clusters {
        let n = &c.name;
        let l = c.limits;
        let _ = writeln!(out, "{n}::observability_name::{n}");
        for (k, v) in [
            ("max_connections", l.max_connections),
            ("max_pending_requests", l.max_pending_requests),
            ("max_requests", l.max_requests),
            ("max_retries", l.max_retries),
        ] {
            let _ = writeln!(out, "{n}::default_priority::{k}::{v}");
        }
        let _ = writeln!(
            out,
            "{n}::added_via_api::{}",
            !statics.contains(&n.as_str())
        );
        let set = c.hosts();
        for (i, h) in set.hosts.iter().enumerate() {
            let a = &h.addr;
            let _ = writeln!(
                out,
                "{n}::{a}::rq_active::{}",
                h.active.load(Ordering::Relaxed)
            );
            let _ = writeln!(out, "{n}::{a}::weight::{}", set.weight(i));
            let flags = if set.is_ejected(i) {
                "/failed_outlier_check"
            } else {
                "healthy"
            };
            let _ = writeln!(out, "{n}::{a}::health_flags::{flags}");
            let _ = writeln!(out, "{n}::{a}::priority::{}", set.priority(i));
        }
    }
    out
}

//! Passive health checking: Envoy's consecutive-error outlier detection.
//!
//! The data path reports every upstream result with [`OutlierDetector::record`]; a run of
//! consecutive 5xx, gateway failures (502/503/504) or, when
//! `split_external_local_origin_errors` is set, local-origin failures reaching its
//! threshold marks the host an outlier. The host is then ejected if the ejection cap
//! allows it and a roll against the `enforcing_*` percentage succeeds. An ejected host
//! stays out for `base_ejection_time × multiplier` (capped by `max_ejection_time`), where
//! the multiplier grows with each ejection; the periodic [`OutlierDetector::tick`] returns
//! hosts whose time is up and decays the multiplier of hosts that stay healthy. Success
//! rate and failure percentage detection are not implemented.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection;

#[cfg(test)]
mod tests;

/// Outlier detection settings (Envoy's `OutlierDetection`, consecutive-error parts).
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    /// Consecutive 5xx (or, when not split, local-origin failures) before ejection; 5.
    pub consecutive_5xx: u32,
    /// Consecutive 502/503/504 before ejection; 5. 0 disables.
    pub consecutive_gateway_failure: u32,
    /// Consecutive local-origin failures before ejection when split; 5.
    pub consecutive_local_origin_failure: u32,
    /// Count local-origin failures (connect failure, timeout, reset) apart from HTTP
    /// statuses instead of as a 503/504; false.
    pub split_external_local_origin_errors: bool,
    /// Time between [`OutlierDetector::tick`] sweeps; 10s.
    pub interval: Duration,
    /// Ejection time per ejection of the host; 30s.
    pub base_ejection_time: Duration,
    /// Cap on the ejection time; 300s, or `base_ejection_time` if larger.
    pub max_ejection_time: Duration,
    /// Most hosts (in percent of all) ejected at once; 10.
    pub max_ejection_percent: u32,
    /// Chance in percent that a consecutive 5xx outlier is ejected; 100.
    pub enforcing_consecutive_5xx: u32,
    /// Chance in percent that a consecutive gateway failure outlier is ejected; 0.
    pub enforcing_consecutive_gateway_failure: u32,
    /// Chance in percent that a consecutive local-origin outlier is ejected; 100.
    pub enforcing_consecutive_local_origin_failure: u32,
    /// Eject the first host even when `max_ejection_percent` would not allow it; false.
    pub always_eject_one_host: bool,
}

impl Default for OutlierConfig {
    fn default() -> OutlierConfig {
        OutlierConfig {
            consecutive_5xx: 5,
            consecutive_gateway_failure: 5,
            consecutive_local_origin_failure: 5,
            split_external_local_origin_errors: false,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: 10,
            enforcing_consecutive_5xx: 100,
            enforcing_consecutive_gateway_failure: 0,
            enforcing_consecutive_local_origin_failure: 100,
            always_eject_one_host: false,
        }
    }
}

fn duration(d: Option<&envoy_types::pb::google::protobuf::Duration>) -> Option<Duration> {
    d.map(|d| {
        Duration::from_secs(d.seconds.max(0) as u64) + Duration::from_nanos(d.nanos.max(0) as u64)
    })
}

impl OutlierConfig {
    /// Reads the consecutive-error settings of a cluster's `outlier_detection`, with
    /// Envoy's defaults for absent fields.
    pub fn from_proto(p: &OutlierDetection) -> OutlierConfig {
        let d = OutlierConfig::default();
        let u32_or = |v: Option<&envoy_types::pb::google::protobuf::UInt32Value>, default: u32| {
            v.map_or(default, |v| v.value)
        };
        let base_ejection_time =
            duration(p.base_ejection_time.as_ref()).unwrap_or(d.base_ejection_time);
        OutlierConfig {
            consecutive_5xx: u32_or(p.consecutive_5xx.as_ref(), d.consecutive_5xx),
            consecutive_gateway_failure: u32_or(
                p.consecutive_gateway_failure.as_ref(),
                d.consecutive_gateway_failure,
            ),
            consecutive_local_origin_failure: u32_or(
                p.consecutive_local_origin_failure.as_ref(),
                d.consecutive_local_origin_failure,
            ),
            split_external_local_origin_errors: p.split_external_local_origin_errors,
            interval: duration(p.interval.as_ref()).unwrap_or(d.interval),
            base_ejection_time,
            max_ejection_time: duration(p.max_ejection_time.as_ref())
                .unwrap_or_else(|| d.max_ejection_time.max(base_ejection_time)),
            max_ejection_percent: u32_or(p.max_ejection_percent.as_ref(), d.max_ejection_percent),
            enforcing_consecutive_5xx: u32_or(
                p.enforcing_consecutive_5xx.as_ref(),
                d.enforcing_consecutive_5xx,
            ),
            enforcing_consecutive_gateway_failure: u32_or(
                p.enforcing_consecutive_gateway_failure.as_ref(),
                d.enforcing_consecutive_gateway_failure,
            ),
            enforcing_consecutive_local_origin_failure: u32_or(
                p.enforcing_consecutive_local_origin_failure.as_ref(),
                d.enforcing_consecutive_local_origin_failure,
            ),
            always_eject_one_host: p.always_eject_one_host.as_ref().is_some_and(|v| v.value),
        }
    }
}

/// The result of one upstream request, as outlier detection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP response with this status from the upstream.
    Response(u16),
    /// The connection could not be established (local origin; a 503 when not split).
    ConnectFailure,
    /// The request timed out (local origin; a 504 when not split).
    Timeout,
    /// The stream or connection was reset (local origin; a 503 when not split).
    Reset,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Consecutive5xx,
    GatewayFailure,
    LocalOrigin,
}

#[derive(Debug, Default)]
struct HostState {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    /// When the current ejection started and how long it lasts; `None` when not ejected.
    ejection: Option<(Instant, Duration)>,
    /// Envoy's ejection time backoff: grows per ejection, decays while healthy.
    multiplier: u32,
    unejected_at: Option<Instant>,
}

impl HostState {
    fn reset_counters(&mut self) {
        self.consecutive_5xx = 0;
        self.consecutive_gateway = 0;
        self.consecutive_local = 0;
    }
}

#[derive(Debug)]
struct State {
    hosts: Vec<HostState>,
    ejected: usize,
    ejections_total: u64,
}

/// Consecutive-error outlier detection over a cluster's hosts (indices as in the
/// balancer's host list). `Send + Sync`.
#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    state: Mutex<State>,
}

impl OutlierDetector {
    /// A detector for `hosts` hosts, all healthy.
    pub fn new(config: OutlierConfig, hosts: usize) -> Self {
        let hosts = (0..hosts).map(|_| HostState::default()).collect();
        OutlierDetector {
            config,
            state: Mutex::new(State {
                hosts,
                ejected: 0,
                ejections_total: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records one result; returns true when this made the host ejected (the caller
    /// rebuilds the Balancer). `random` decides enforcement (`random % 100 < enforcing`).
    /// Out-of-range hosts are ignored.
    pub fn record(&self, host: usize, outcome: Outcome, random: u64, now: Instant) -> bool {
        let config = &self.config;
        let mut state = self.lock();
        let Some(h) = state.hosts.get_mut(host) else {
            return false;
        };
        // Which thresholds this result reached, in Envoy's order (gateway before 5xx).
        let mut reached: Vec<Kind> = Vec::new();
        let status = match outcome {
            Outcome::Response(code) => Some(code),
            _ if config.split_external_local_origin_errors => None,
            Outcome::Timeout => Some(504),
            Outcome::ConnectFailure | Outcome::Reset => Some(503),
        };
        match status {
            None => {
                h.consecutive_local += 1;
                if h.consecutive_local == config.consecutive_local_origin_failure {
                    reached.push(Kind::LocalOrigin);
                }
            }
            Some(code) => {
                if config.split_external_local_origin_errors {
                    // A response means the connection worked: a local-origin success.
                    h.consecutive_local = 0;
                }
                if (500..600).contains(&code) {
                    if matches!(code, 502..=504) {
                        h.consecutive_gateway += 1;
                        if h.consecutive_gateway == config.consecutive_gateway_failure {
                            reached.push(Kind::GatewayFailure);
                        }
                    } else {
                        h.consecutive_gateway = 0;
                    }
                    h.consecutive_5xx += 1;
                    if h.consecutive_5xx == config.consecutive_5xx {
                        reached.push(Kind::Consecutive5xx);
                    }
                } else {
                    h.consecutive_5xx = 0;
                    h.consecutive_gateway = 0;
                }
            }
        }
        reached
            .into_iter()
            .any(|kind| self.on_outlier(&mut state, host, kind, random, now))
    }

    /// A host reached a threshold: reset that counter and eject if allowed and enforced.
    fn on_outlier(
        &self,
        state: &mut State,
        host: usize,
        kind: Kind,
        random: u64,
        now: Instant,
    ) -> bool {
        let config = &self.config;
        let n = state.hosts.len() as u64;
        let active = state.ejected as u64;
        let h = &mut state.hosts[host];
        if h.ejection.is_some() {
            return false;
        }
        let enforcing = match kind {
            Kind::Consecutive5xx => {
                h.consecutive_5xx = 0;
                config.enforcing_consecutive_5xx
            }
            Kind::GatewayFailure => {
                h.consecutive_gateway = 0;
                config.enforcing_consecutive_gateway_failure
            }
            Kind::LocalOrigin => {
                h.consecutive_local = 0;
                config.enforcing_consecutive_local_origin_failure
            }
        };
        // Envoy: eject while (ejected + 1) / hosts stays within max_ejection_percent.
        let max_percent = u64::from(config.max_ejection_percent.min(100));
        let within_cap = 100 * (active + 1) <= max_percent * n;
        if !(within_cap || (config.always_eject_one_host && active == 0)) {
            return false;
        }
        if random % 100 >= u64::from(enforcing) {
            return false;
        }
        let base = config.base_ejection_time;
        let max = config.max_ejection_time.max(base);
        if base.saturating_mul(h.multiplier) < max {
            h.multiplier += 1;
        }
        h.ejection = Some((now, base.saturating_mul(h.multiplier).min(max)));
        state.ejected += 1;
        state.ejections_total += 1;
        true
    }

    /// Interval sweep: un-ejects hosts whose ejection time passed (resetting their
    /// counters) and decays by one the multiplier of each host that has been back for at
    /// least one interval; returns true if health changed.
    pub fn tick(&self, now: Instant) -> bool {
        let interval = self.config.interval;
        let mut state = self.lock();
        let mut returned = 0;
        for h in &mut state.hosts {
            match h.ejection {
                Some((at, length)) => {
                    if now.saturating_duration_since(at) >= length {
                        h.ejection = None;
                        h.reset_counters();
                        h.unejected_at = Some(now);
                        returned += 1;
                    }
                }
                None => {
                    let settled = h
                        .unejected_at
                        .is_none_or(|at| now.saturating_duration_since(at) >= interval);
                    if h.multiplier > 0 && settled {
                        h.multiplier -= 1;
                    }
                }
            }
        }
        state.ejected -= returned;
        returned > 0
    }

    /// Health per host for [`super::Balancer::new`]: false while ejected.
    pub fn healthy(&self) -> Vec<bool> {
        self.lock()
            .hosts
            .iter()
            .map(|h| h.ejection.is_none())
            .collect()
    }

    /// Whether `host` is currently ejected (false for out-of-range hosts).
    pub fn ejected(&self, host: usize) -> bool {
        self.lock()
            .hosts
            .get(host)
            .is_some_and(|h| h.ejection.is_some())
    }

    /// Number of hosts currently ejected.
    pub fn ejected_count(&self) -> usize {
        self.lock().ejected
    }

    /// Total ejections performed so far (for stats: outlier_detection.ejections_enforced_total).
    pub fn ejections_total(&self) -> u64 {
        self.lock().ejections_total
    }
}

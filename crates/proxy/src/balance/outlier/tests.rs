//! Unit tests for consecutive-error outlier detection.

use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::OutlierDetection;
use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

use super::*;

fn detector(config: OutlierConfig, hosts: usize) -> OutlierDetector {
    OutlierDetector::new(config, hosts)
}

fn fail(d: &OutlierDetector, host: usize, times: usize, now: Instant) -> bool {
    let mut ejected = false;
    for _ in 0..times {
        ejected |= d.record(host, Outcome::Response(500), 0, now);
    }
    ejected
}

#[test]
fn five_consecutive_5xx_eject() {
    let d = detector(OutlierConfig::default(), 10);
    let now = Instant::now();
    assert!(!fail(&d, 3, 4, now));
    assert!(!d.ejected(3));
    assert!(d.record(3, Outcome::Response(503), 0, now));
    assert!(d.ejected(3));
    assert_eq!(d.ejected_count(), 1);
    assert_eq!(d.ejections_total(), 1);
    let healthy = d.healthy();
    assert_eq!(healthy.iter().filter(|h| !**h).count(), 1);
    assert!(!healthy[3]);
    // Further failures on an ejected host change nothing.
    assert!(!fail(&d, 3, 10, now));
    assert_eq!(d.ejections_total(), 1);
}

#[test]
fn a_success_resets_the_count() {
    let d = detector(OutlierConfig::default(), 10);
    let now = Instant::now();
    fail(&d, 0, 4, now);
    d.record(0, Outcome::Response(200), 0, now);
    assert!(!fail(&d, 0, 4, now));
    assert!(!d.ejected(0));
    // 4xx is not a server error either.
    d.record(0, Outcome::Response(404), 0, now);
    assert!(!fail(&d, 0, 4, now));
    assert!(fail(&d, 0, 1, now));
}

#[test]
fn local_origin_failures_count_as_5xx_unless_split() {
    let d = detector(OutlierConfig::default(), 10);
    let now = Instant::now();
    for outcome in [
        Outcome::ConnectFailure,
        Outcome::Timeout,
        Outcome::Reset,
        Outcome::ConnectFailure,
    ] {
        assert!(!d.record(1, outcome, 0, now));
    }
    assert!(d.record(1, Outcome::Reset, 0, now));

    let split = OutlierConfig {
        split_external_local_origin_errors: true,
        consecutive_local_origin_failure: 3,
        ..OutlierConfig::default()
    };
    let d = detector(split, 10);
    // Local failures do not feed the 5xx counter, and a response resets them.
    fail(&d, 2, 3, now);
    d.record(2, Outcome::ConnectFailure, 0, now);
    d.record(2, Outcome::Timeout, 0, now);
    assert!(!d.record(2, Outcome::Response(200), 0, now));
    d.record(2, Outcome::ConnectFailure, 0, now);
    d.record(2, Outcome::ConnectFailure, 0, now);
    assert!(!d.ejected(2));
    assert!(d.record(2, Outcome::ConnectFailure, 0, now));
}

#[test]
fn enforcing_zero_never_ejects() {
    let config = OutlierConfig {
        enforcing_consecutive_5xx: 0,
        ..OutlierConfig::default()
    };
    let d = detector(config, 10);
    let now = Instant::now();
    assert!(!fail(&d, 0, 50, now));
    assert_eq!(d.ejections_total(), 0);
}

#[test]
fn gateway_failures_eject_only_when_enforced() {
    // 5xx detection out of the way; gateway detection at its default enforcing 0.
    let base = OutlierConfig {
        consecutive_5xx: 1000,
        consecutive_gateway_failure: 3,
        ..OutlierConfig::default()
    };
    let now = Instant::now();
    let d = detector(base.clone(), 10);
    for _ in 0..10 {
        assert!(!d.record(0, Outcome::Response(502), 0, now));
    }
    let d = detector(
        OutlierConfig {
            enforcing_consecutive_gateway_failure: 100,
            ..base
        },
        10,
    );
    d.record(0, Outcome::Response(502), 0, now);
    d.record(0, Outcome::Response(500), 0, now); // not a gateway error: resets that count
    d.record(0, Outcome::Response(503), 0, now);
    d.record(0, Outcome::Response(504), 0, now);
    assert!(!d.ejected(0));
    assert!(d.record(0, Outcome::Response(502), 0, now));
}

#[test]
fn enforcement_uses_the_random_value() {
    let config = OutlierConfig {
        enforcing_consecutive_5xx: 30,
        ..OutlierConfig::default()
    };
    let now = Instant::now();
    let d = detector(config.clone(), 10);
    for _ in 0..5 {
        d.record(0, Outcome::Response(500), 30, now);
    }
    assert!(!d.ejected(0), "roll 30 is not below 30%");
    for _ in 0..5 {
        d.record(0, Outcome::Response(500), 129, now);
    }
    assert!(d.ejected(0), "roll 129 % 100 = 29 is below 30%");
}

#[test]
fn ejection_time_grows_and_tick_returns_hosts() {
    let d = detector(OutlierConfig::default(), 10);
    let t0 = Instant::now();
    assert!(fail(&d, 0, 5, t0));
    assert!(!d.tick(t0 + Duration::from_secs(29)));
    assert!(d.ejected(0));
    assert!(d.tick(t0 + Duration::from_secs(30)));
    assert!(!d.ejected(0));
    assert_eq!(d.ejected_count(), 0);

    // Second ejection right away lasts twice as long.
    let t1 = t0 + Duration::from_secs(31);
    assert!(fail(&d, 0, 5, t1));
    assert!(!d.tick(t1 + Duration::from_secs(59)));
    assert!(d.tick(t1 + Duration::from_secs(60)));
    assert_eq!(d.ejections_total(), 2);
}

#[test]
fn ejection_time_is_capped() {
    let config = OutlierConfig {
        max_ejection_time: Duration::from_secs(60),
        ..OutlierConfig::default()
    };
    let d = detector(config, 10);
    let mut now = Instant::now();
    for expected in [30, 60, 60, 60] {
        assert!(fail(&d, 0, 5, now));
        assert!(!d.tick(now + Duration::from_secs(expected - 1)));
        now += Duration::from_secs(expected);
        assert!(d.tick(now), "ejection of {expected}s is over");
    }
}

#[test]
fn multiplier_decays_while_healthy() {
    let d = detector(OutlierConfig::default(), 10);
    let mut now = Instant::now();
    // Two back-to-back ejections: multiplier 2.
    assert!(fail(&d, 0, 5, now));
    now += Duration::from_secs(30);
    d.tick(now);
    assert!(fail(&d, 0, 5, now));
    now += Duration::from_secs(60);
    assert!(d.tick(now));
    // Healthy for several intervals: the multiplier decays back.
    for _ in 0..4 {
        now += Duration::from_secs(10);
        d.tick(now);
    }
    assert!(fail(&d, 0, 5, now));
    assert!(
        d.tick(now + Duration::from_secs(30)),
        "back to the base ejection time"
    );
}

#[test]
fn max_ejection_percent_caps_ejections() {
    let now = Instant::now();
    // 10% of 20 hosts: two ejections at most.
    let d = detector(OutlierConfig::default(), 20);
    assert!(fail(&d, 0, 5, now));
    assert!(fail(&d, 1, 5, now));
    assert!(!fail(&d, 2, 5, now));
    assert_eq!(d.ejected_count(), 2);
    assert!(!d.ejected(2));

    // 10% of 4 hosts allows none, unless always_eject_one_host (then exactly one).
    let d = detector(OutlierConfig::default(), 4);
    assert!(!fail(&d, 0, 5, now));
    let d = detector(
        OutlierConfig {
            always_eject_one_host: true,
            ..OutlierConfig::default()
        },
        4,
    );
    assert!(fail(&d, 0, 5, now));
    assert!(!fail(&d, 1, 5, now));
    assert_eq!(d.ejected_count(), 1);
}

#[test]
fn from_proto_applies_envoy_defaults() {
    assert_eq!(
        OutlierConfig::from_proto(&OutlierDetection::default()),
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
    );
}

#[test]
fn from_proto_reads_set_fields() {
    let p = OutlierDetection {
        consecutive_5xx: Some(UInt32Value { value: 7 }),
        interval: Some(PbDuration {
            seconds: 1,
            nanos: 500_000_000,
        }),
        base_ejection_time: Some(PbDuration {
            seconds: 400,
            nanos: 0,
        }),
        max_ejection_percent: Some(UInt32Value { value: 100 }),
        enforcing_consecutive_gateway_failure: Some(UInt32Value { value: 50 }),
        split_external_local_origin_errors: true,
        ..OutlierDetection::default()
    };
    let c = OutlierConfig::from_proto(&p);
    assert_eq!(c.consecutive_5xx, 7);
    assert_eq!(c.interval, Duration::from_millis(1500));
    assert_eq!(c.base_ejection_time, Duration::from_secs(400));
    assert_eq!(
        c.max_ejection_time,
        Duration::from_secs(400),
        "an unset maximum is at least the base"
    );
    assert_eq!(c.max_ejection_percent, 100);
    assert_eq!(c.enforcing_consecutive_gateway_failure, 50);
    assert!(c.split_external_local_origin_errors);
    assert_eq!(c.consecutive_gateway_failure, 5);
}

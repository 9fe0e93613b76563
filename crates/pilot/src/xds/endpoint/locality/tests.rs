use common::istio::networking::{LoadBalancerSettings, LocalityFailover, OutlierDetection};

use super::*;
use crate::xds::endpoint::load_assignment;
use crate::xds::route::fixture::endpoint;

/// An endpoint's `(ip, locality, weight, labels)`.
type Spec<'a> = (&'a str, &'a str, u32, &'a [(&'a str, &'a str)]);

fn endpoints(spec: &[Spec<'_>]) -> Vec<Endpoint> {
    spec.iter()
        .map(|(ip, locality, weight, labels)| {
            let mut e = endpoint(ip, 80, labels);
            e.locality = locality.to_string();
            e.weight = *weight;
            e
        })
        .collect()
}

fn policy(setting: Option<LocalityLoadBalancerSetting>, outlier: bool) -> TrafficPolicy {
    TrafficPolicy {
        load_balancer: setting.map(|s| LoadBalancerSettings {
            locality_lb_setting: Some(s),
            ..Default::default()
        }),
        outlier_detection: outlier.then(OutlierDetection::default),
        ..Default::default()
    }
}

/// (locality, priority, weight, endpoint count) of each group.
fn summary(cla: &ClusterLoadAssignment) -> Vec<(String, u32, u32, usize)> {
    cla.endpoints
        .iter()
        .map(|g| {
            let l = g.locality.clone().unwrap_or_default();
            (
                join(&l.region, &l.zone, &l.sub_zone),
                g.priority,
                g.load_balancing_weight.map_or(0, |w| w.value),
                g.lb_endpoints.len(),
            )
        })
        .collect()
}

fn priorities(cla: &ClusterLoadAssignment) -> Vec<u32> {
    cla.endpoints.iter().map(|g| g.priority).collect()
}

/// Applies `p` for a proxy at `proxy` to a fresh assignment of `eps`.
fn run(p: &TrafficPolicy, eps: &[Endpoint], proxy: &str) -> ClusterLoadAssignment {
    let mut cla = load_assignment("c", eps);
    let lb = LocalityLb::from_policy(Some(p)).expect("enabled");
    let mut groups: BTreeMap<&str, Vec<&Endpoint>> = BTreeMap::new();
    for e in eps {
        groups.entry(e.locality.as_str()).or_default().push(e);
    }
    let groups: Vec<Vec<&Endpoint>> = groups.into_values().collect();
    let loc = parse(proxy);
    let labels = proxy_labels(
        &[("version".to_string(), "v1".to_string())].into(),
        &loc,
        "Kubernetes",
    );
    lb.apply(&mut cla, Some(&groups), &loc, &labels);
    cla
}

fn five_localities() -> Vec<Endpoint> {
    endpoints(&[
        ("10.0.0.1", "r1/z1/s1", 1, &[]),
        ("10.0.0.2", "r1/z1/s2", 1, &[]),
        ("10.0.0.3", "r1/z2", 1, &[]),
        ("10.0.0.4", "r2/z1", 1, &[]),
        ("10.0.0.5", "", 1, &[]),
    ])
}

#[test]
fn failover_priorities_follow_the_proxy_locality() {
    let eps = five_localities();
    let p = policy(None, true);
    // Groups are in locality order: "", r1/z1/s1, r1/z1/s2, r1/z2, r2/z1.
    assert_eq!(priorities(&run(&p, &eps, "r1/z1/s1")), vec![3, 0, 1, 2, 3]);
    // r1/z2: same zone 0, same region 2 → 1, others 3 → 2 (no gaps).
    assert_eq!(priorities(&run(&p, &eps, "r1/z2")), vec![2, 1, 1, 0, 2]);
    assert_eq!(priorities(&run(&p, &eps, "r2/z1")), vec![1, 1, 1, 1, 0]);
    // A region nobody is in: every group is "other", one priority.
    assert_eq!(priorities(&run(&p, &eps, "r9/z9")), vec![0, 0, 0, 0, 0]);
    // A proxy without a locality matches only endpoints without one (Istio's
    // comparison of empty strings).
    assert_eq!(priorities(&run(&p, &eps, "")), vec![0, 1, 1, 1, 1]);
}

#[test]
fn failover_to_a_named_region() {
    let eps = endpoints(&[
        ("10.0.0.1", "r1/z1", 1, &[]),
        ("10.0.0.2", "r2/z1", 1, &[]),
        ("10.0.0.3", "r3/z1", 1, &[]),
    ]);
    let setting = LocalityLoadBalancerSetting {
        failover: vec![LocalityFailover {
            from: Some("r1".into()),
            to: Some("r3".into()),
        }],
        ..Default::default()
    };
    let p = policy(Some(setting), true);
    // r1/z2: r1 is the same region (2 → 0), r3 is the failover target (3 → 1),
    // r2 comes last (4 → 2).
    assert_eq!(priorities(&run(&p, &eps, "r1/z2")), vec![0, 2, 1]);
    // The entry is only for proxies in r1.
    assert_eq!(priorities(&run(&p, &eps, "r2/z1")), vec![1, 0, 1]);
    let lb = LocalityLb::from_policy(Some(&p)).unwrap();
    assert!(
        lb.weighted_config(),
        "explicit failover sets locality weights"
    );
}

#[test]
fn distribute_weights_per_source_locality() {
    let eps = endpoints(&[
        ("10.0.0.1", "r1/z1/s1", 1, &[]),
        ("10.0.0.2", "r1/z1/s2", 3, &[]),
        ("10.0.0.3", "r2/z1", 1, &[]),
        ("10.0.0.4", "r2/z2", 1, &[]),
        ("10.0.0.5", "r3/z1", 1, &[]),
    ]);
    let setting = LocalityLoadBalancerSetting {
        distribute: vec![LocalityDistribute {
            from: Some("r1/z1/*".into()),
            to: [("r1/z1/*".to_string(), 80), ("r2/*".to_string(), 20)].into(),
        }],
        ..Default::default()
    };
    // Distribute needs no outlier detection.
    let p = policy(Some(setting), false);
    let lb = LocalityLb::from_policy(Some(&p)).unwrap();
    assert!(lb.per_proxy() && lb.weighted_config() && !lb.uses_labels());
    // 80 split 1:3 over r1/z1's subzones (rounded up), 20 over r2's zones,
    // r3 matched by no entry loses its endpoints. All at priority 0.
    assert_eq!(
        summary(&run(&p, &eps, "r1/z1/s9")),
        vec![
            ("r1/z1/s1".into(), 0, 20, 1),
            ("r1/z1/s2".into(), 0, 60, 1),
            ("r2/z1".into(), 0, 10, 1),
            ("r2/z2".into(), 0, 10, 1),
            ("r3/z1".into(), 0, 1, 0),
        ]
    );
    // A proxy outside `from` keeps the registry's weights.
    assert_eq!(
        summary(&run(&p, &eps, "r2/z1")),
        summary(&load_assignment("c", &eps))
    );
}

#[test]
fn disabled_or_without_outlier_detection_leaves_assignments_shared() {
    let off = policy(
        Some(LocalityLoadBalancerSetting {
            enabled: Some(false),
            ..Default::default()
        }),
        true,
    );
    assert_eq!(LocalityLb::from_policy(Some(&off)), None);
    // The mesh default is on, but failover needs outlier detection.
    let plain = policy(None, false);
    let lb = LocalityLb::from_policy(Some(&plain)).unwrap();
    assert_eq!(lb.setting, &MESH_DEFAULT);
    assert!(!lb.per_proxy() && !lb.weighted_config());
    assert!(!LocalityLb::from_policy(None).unwrap().per_proxy());
    // Default failover (no explicit entries) needs no locality weights in CDS.
    let with_outliers = policy(None, true);
    let od = LocalityLb::from_policy(Some(&with_outliers)).unwrap();
    assert!(od.per_proxy() && !od.weighted_config());
    // `enabled: true` in the rule without entries is the default again.
    let on = policy(
        Some(LocalityLoadBalancerSetting {
            enabled: Some(true),
            ..Default::default()
        }),
        true,
    );
    let eps = five_localities();
    assert_eq!(priorities(&run(&on, &eps, "r1/z1/s1")), vec![3, 0, 1, 2, 3]);
}

#[test]
fn failover_priority_labels_split_localities() {
    let eps = endpoints(&[
        ("10.0.0.1", "r1/z1", 1, &[("version", "v1")]),
        ("10.0.0.2", "r1/z1", 2, &[("version", "v2")]),
        ("10.0.0.3", "r2/z1", 1, &[("version", "v1")]),
    ]);
    let setting = LocalityLoadBalancerSetting {
        failover_priority: vec![REGION_LABEL.into(), "version".into()],
        ..Default::default()
    };
    let p = policy(Some(setting.clone()), true);
    assert!(LocalityLb::from_policy(Some(&p)).unwrap().uses_labels());
    // Same region and version 0; same region only 1; other region 2.
    assert_eq!(
        summary(&run(&p, &eps, "r1/z9")),
        vec![
            ("r1/z1".into(), 0, 1, 1),
            ("r1/z1".into(), 1, 2, 1),
            ("r2/z1".into(), 2, 1, 1),
        ]
    );
    // `label=value` compares with the value, not the proxy's label.
    let pinned = policy(
        Some(LocalityLoadBalancerSetting {
            failover_priority: vec!["version=v2".into()],
            ..Default::default()
        }),
        true,
    );
    assert_eq!(priorities(&run(&pinned, &eps, "r1/z1")), vec![0, 1, 1]);
}

#[test]
fn localities_from_labels_and_strings() {
    let labels = |l: &[(&str, &str)]| -> BTreeMap<String, String> {
        l.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(from_labels(&labels(&[])), "");
    assert_eq!(from_labels(&labels(&[(REGION_LABEL, "r")])), "r");
    assert_eq!(
        from_labels(&labels(&[(ZONE_LABEL, "z"), (REGION_LABEL, "r")])),
        "r/z"
    );
    assert_eq!(from_labels(&labels(&[(LOCALITY_LABEL, "a.b.c")])), "a/b/c");
    assert_eq!(
        from_labels(&labels(&[(LEGACY_LOCALITY_LABEL, "a.b")])),
        "a/b"
    );
    assert!(matches(Some(&parse("r1/z1/s1")), "r1/z1/*"));
    assert!(matches(Some(&parse("r1/z1/s1")), "r1"));
    assert!(matches(Some(&parse("r1/z1/s1")), "*"));
    assert!(!matches(Some(&parse("r1/z1/s1")), "r1/z2"));
    assert!(!matches(None, "r1"));
}

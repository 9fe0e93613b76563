//! The xDS client against the real pilot, in-process over real gRPC (bookinfo
//! with its pods): delta and SotW reach the config pilot generates for the
//! sidecar with every type ACKed; a config change arrives without a reconnect;
//! a pilot restart on the same port is survived with the last good config kept.
//! The NACK path, subscription order and warming run against a small scripted
//! ADS server (`support/scripted.rs`) that sends what pilot never would.

#[path = "support/pilot.rs"]
mod pilot_support;
#[path = "support/scripted.rs"]
mod scripted;

// Wrapped so that `cargo test -p proxy xds` selects these tests by path.
mod xds {
    use super::pilot_support::*;
    use super::scripted::*;

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::listener::v3::Listener;
    use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryResponse, DiscoveryResponse, Resource,
    };
    use envoy_types::pb::google::protobuf::Any;
    use prost::{Message, Name};
    use proxy::xds::{
        Backoff, CLUSTER, ENDPOINT, Handlers, LISTENER, ROUTE, XdsConfig, XdsHandle, XdsStore,
    };

    /// A client of the pilot at `xds`, once it has synced its first full config.
    async fn synced_client(xds: SocketAddr, delta: bool) -> (XdsStore, XdsHandle) {
        let store = XdsStore::new();
        let client = proxy::xds::spawn(config(xds, delta), store.clone(), Handlers::default());
        let mut synced = store.synced();
        tokio::time::timeout(WAIT, synced.wait_for(|s| *s))
            .await
            .expect("initial sync within the wait")
            .expect("the client is running");
        (store, client)
    }

    async fn synced_like_pilot(delta: bool) {
        let dir = bookinfo_dir();
        let pilot = Pilot::start(dir.path(), None).await;
        let (store, client) = synced_client(pilot.xds, delta).await;
        let expected = pilot.expected();
        assert!(
            expected[0].len() > 5,
            "bookinfo yields clusters: {:?}",
            expected[0]
        );
        assert!(!expected[1].is_empty() && !expected[2].is_empty() && !expected[3].is_empty());
        eventually("the store to hold what pilot generates", || {
            held(&store) == expected
        })
        .await;
        eventually("pilot to see every type ACKed", || pilot.all_acked()).await;
        let state = store.load();
        assert!(state.warming_clusters.is_empty() && state.warming_listeners.is_empty());
        for t in [CLUSTER, ENDPOINT, LISTENER, ROUTE] {
            let ts = state.type_state(t);
            assert!(
                ts.acks > 0 && ts.nacks == 0 && ts.last_nack.is_none(),
                "{t}: {ts:?}"
            );
            if delta {
                assert!(
                    !ts.resource_versions.is_empty(),
                    "{t} has resource versions"
                );
            } else {
                assert!(!ts.version_info.is_empty(), "{t} has a version");
            }
        }
        let stats = store.stats();
        assert_eq!(stats.connects.load(Ordering::Relaxed), 1);
        assert_eq!(stats.updates_rejected.load(Ordering::Relaxed), 0);
        assert!(stats.connected.load(Ordering::Relaxed));
        client.shutdown().await;
        pilot.stop().await;
    }

    #[tokio::test]
    async fn delta_syncs_what_pilot_generates_and_acks_every_type() {
        synced_like_pilot(true).await;
    }

    #[tokio::test]
    async fn sotw_syncs_what_pilot_generates_and_acks_every_type() {
        synced_like_pilot(false).await;
    }

    const LEGACY: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: legacy
  namespace: default
spec:
  hosts: [legacy.default.internal]
  addresses: [240.240.0.1]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  endpoints:
  - address: 10.9.9.9
"#;

    async fn config_change_arrives(delta: bool) {
        let dir = bookinfo_dir();
        let pilot = Pilot::start(dir.path(), None).await;
        let (store, client) = synced_client(pilot.xds, delta).await;
        let before = store.generation();
        let tmp = dir.path().join(".legacy.yaml.tmp");
        std::fs::write(&tmp, LEGACY).unwrap();
        std::fs::rename(&tmp, dir.path().join("legacy.yaml")).unwrap();
        let cluster = "outbound|8080||legacy.default.internal";
        eventually("the new cluster in use", || {
            store.load().clusters.contains_key(cluster)
        })
        .await;
        assert!(store.generation() > before);
        eventually("the store to hold what pilot generates", || {
            held(&store) == pilot.expected()
        })
        .await;
        eventually("pilot to see every type ACKed", || pilot.all_acked()).await;
        assert_eq!(
            store.stats().connects.load(Ordering::Relaxed),
            1,
            "no reconnect"
        );
        client.shutdown().await;
        pilot.stop().await;
    }

    #[tokio::test]
    async fn delta_config_change_reaches_the_store_without_reconnect() {
        config_change_arrives(true).await;
    }

    #[tokio::test]
    async fn sotw_config_change_reaches_the_store_without_reconnect() {
        config_change_arrives(false).await;
    }

    async fn survives_restart(delta: bool) {
        let dir = bookinfo_dir();
        let pilot = Pilot::start(dir.path(), None).await;
        let addr = pilot.xds;
        let (store, client) = synced_client(addr, delta).await;
        eventually("pilot to see every type ACKed", || pilot.all_acked()).await;
        let good = held(&store);
        pilot.stop().await;
        let stats = store.stats();
        eventually("the client to notice pilot is gone", || {
            !stats.connected.load(Ordering::Relaxed)
        })
        .await;
        // Pilot is away for a few backoff rounds; the config stays.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert!(
            stats.connect_failures.load(Ordering::Relaxed) >= 1,
            "retried meanwhile"
        );
        assert!(stats.last_error().is_some());
        assert_eq!(
            held(&store),
            good,
            "last good config kept while pilot is away"
        );
        assert!(store.initial_sync_done());
        let pilot = Pilot::start(dir.path(), Some(addr)).await;
        eventually("a second stream", || {
            stats.connects.load(Ordering::Relaxed) >= 2
        })
        .await;
        eventually("pilot to see every type ACKed again", || pilot.all_acked()).await;
        assert_eq!(held(&store), pilot.expected());
        assert_eq!(stats.updates_rejected.load(Ordering::Relaxed), 0);
        if delta {
            // initial_resource_versions: the new pilot resends nothing unchanged.
            let c = pilot.connections.find(NODE_ID).expect("connected");
            for t in ["cds", "lds"] {
                assert_eq!(c.types[t].resources_sent, 0, "{t}: {:?}", c.types[t]);
            }
        }
        client.shutdown().await;
        pilot.stop().await;
    }

    #[tokio::test]
    async fn delta_reconnects_after_pilot_restarts_and_keeps_the_last_good_config() {
        survives_restart(true).await;
    }

    #[tokio::test]
    async fn sotw_reconnects_after_pilot_restarts_and_keeps_the_last_good_config() {
        survives_restart(false).await;
    }

    fn static_cluster(name: &str, timeout_s: i64) -> Cluster {
        Cluster {
            name: name.into(),
            connect_timeout: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: timeout_s,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn any<M: Message + Name>(m: &M) -> Any {
        Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        }
    }

    fn resource(name: &str, version: &str, any: Any) -> Resource {
        Resource {
            name: name.into(),
            version: version.into(),
            resource: Some(any),
            ..Default::default()
        }
    }

    /// Refuses clusters named `denied`.
    fn deny_by_name() -> Handlers {
        let deny = |name: &str, _: &Cluster| -> Result<(), String> {
            if name == "denied" {
                Err("denied by the test handler".into())
            } else {
                Ok(())
            }
        };
        Handlers {
            clusters: Arc::new(deny),
            ..Handlers::default()
        }
    }

    fn scripted_config(addr: SocketAddr, delta: bool) -> XdsConfig {
        XdsConfig {
            backoff: Backoff {
                base: Duration::from_secs(5),
                max: Duration::from_secs(5),
            },
            ..config(addr, delta)
        }
    }

    fn timeout_of(store: &XdsStore, name: &str) -> Option<i64> {
        store
            .load()
            .clusters
            .get(name)
            .and_then(|c| c.connect_timeout.map(|d| d.seconds))
    }

    async fn shutdown(client: XdsHandle) {
        tokio::time::timeout(Duration::from_secs(5), client.shutdown())
            .await
            .expect("client stops");
    }

    #[tokio::test]
    async fn delta_nack_names_every_rejected_resource_applies_the_rest_once() {
        let mut s = scripted().await;
        let store = XdsStore::new();
        let client =
            proxy::xds::spawn(scripted_config(s.addr, true), store.clone(), deny_by_name());
        let first = next(&mut s.delta_requests, "CDS subscription").await;
        assert_eq!(first.type_url, CLUSTER);
        assert_eq!(first.resource_names_subscribe, ["*"]);
        assert_eq!(first.node.as_ref().map(|n| n.id.as_str()), Some(NODE_ID));
        s.delta_responses
            .send(DeltaDiscoveryResponse {
                type_url: CLUSTER.into(),
                system_version_info: "1".into(),
                nonce: "n1".into(),
                resources: vec![
                    resource("good", "g1", any(&static_cluster("good", 1))),
                    resource("victim", "v1", any(&static_cluster("victim", 1))),
                ],
                ..Default::default()
            })
            .unwrap();
        let ack = next(&mut s.delta_requests, "ACK").await;
        assert_eq!(
            (ack.type_url.as_str(), ack.response_nonce.as_str()),
            (CLUSTER, "n1")
        );
        assert!(ack.error_detail.is_none() && ack.node.is_none());
        let mut garbage = any(&static_cluster("victim", 2));
        garbage.value = vec![0xff, 0xff, 0xff];
        let listener = Listener {
            name: "wrong-type".into(),
            ..Default::default()
        };
        s.delta_responses
            .send(DeltaDiscoveryResponse {
                type_url: CLUSTER.into(),
                system_version_info: "2".into(),
                nonce: "n2".into(),
                resources: vec![
                    resource("good", "g2", any(&static_cluster("good", 2))),
                    resource("victim", "v2", garbage),
                    resource("wrong-type", "w1", any(&listener)),
                    resource("denied", "d1", any(&static_cluster("denied", 1))),
                ],
                ..Default::default()
            })
            .unwrap();
        let cds = drain(&mut s.delta_requests, Duration::from_millis(700), |r| {
            r.type_url == CLUSTER
        })
        .await;
        assert_eq!(cds.len(), 1, "exactly one request answers n2: {cds:?}");
        let nack = &cds[0];
        assert_eq!(nack.response_nonce, "n2");
        let detail = nack.error_detail.as_ref().expect("a NACK");
        assert_eq!(detail.code, 3, "INVALID_ARGUMENT");
        for needle in [
            "victim: does not decode",
            "wrong-type: type type.googleapis.com/envoy.config.listener.v3.Listener",
            "denied: denied by the test handler",
        ] {
            assert!(
                detail.message.contains(needle),
                "{needle:?} in {:?}",
                detail.message
            );
        }
        assert!(!detail.message.contains("good"), "{:?}", detail.message);
        assert_eq!(
            timeout_of(&store, "good"),
            Some(2),
            "the accepted one is applied"
        );
        assert_eq!(
            timeout_of(&store, "victim"),
            Some(1),
            "the last good version stays"
        );
        let state = store.load();
        assert!(
            !state.clusters.contains_key("denied") && !state.clusters.contains_key("wrong-type")
        );
        let ts = state.type_state(CLUSTER);
        assert_eq!(
            ts.version_info, "1",
            "the accepted version does not move on a NACK"
        );
        assert_eq!(
            ts.resource_versions.get("good").map(String::as_str),
            Some("g2")
        );
        assert_eq!(
            ts.resource_versions.get("victim").map(String::as_str),
            Some("v1")
        );
        let last = ts.last_nack.expect("NACK recorded");
        assert_eq!((last.nonce.as_str(), last.rejected.len()), ("n2", 3));
        assert_eq!(store.stats().updates_rejected.load(Ordering::Relaxed), 1);
        assert_eq!(store.stats().resources_rejected.load(Ordering::Relaxed), 3);
        shutdown(client).await;
    }

    #[tokio::test]
    async fn sotw_nack_repeats_the_last_accepted_version_and_keeps_last_good() {
        let mut s = scripted().await;
        let store = XdsStore::new();
        let client = proxy::xds::spawn(
            scripted_config(s.addr, false),
            store.clone(),
            deny_by_name(),
        );
        let first = next(&mut s.sotw_requests, "CDS request").await;
        assert_eq!(first.type_url, CLUSTER);
        assert!(first.resource_names.is_empty() && first.response_nonce.is_empty());
        s.sotw_responses
            .send(DiscoveryResponse {
                type_url: CLUSTER.into(),
                version_info: "v1".into(),
                nonce: "n1".into(),
                resources: vec![
                    any(&static_cluster("good", 1)),
                    any(&static_cluster("victim", 1)),
                ],
                ..Default::default()
            })
            .unwrap();
        let ack = next(&mut s.sotw_requests, "ACK").await;
        assert_eq!(
            (
                ack.type_url.as_str(),
                ack.version_info.as_str(),
                ack.response_nonce.as_str()
            ),
            (CLUSTER, "v1", "n1")
        );
        assert!(ack.error_detail.is_none());
        let mut garbage = any(&static_cluster("victim", 2));
        garbage.value = vec![0xff, 0xff, 0xff];
        s.sotw_responses
            .send(DiscoveryResponse {
                type_url: CLUSTER.into(),
                version_info: "v2".into(),
                nonce: "n2".into(),
                resources: vec![
                    any(&static_cluster("good", 2)),
                    garbage,
                    any(&static_cluster("denied", 2)),
                ],
                ..Default::default()
            })
            .unwrap();
        let cds = drain(&mut s.sotw_requests, Duration::from_millis(700), |r| {
            r.type_url == CLUSTER
        })
        .await;
        assert_eq!(cds.len(), 1, "exactly one request answers n2: {cds:?}");
        let nack = &cds[0];
        assert_eq!(
            (nack.version_info.as_str(), nack.response_nonce.as_str()),
            ("v1", "n2")
        );
        let detail = nack.error_detail.as_ref().expect("a NACK");
        assert_eq!(detail.code, 3);
        assert!(
            detail.message.contains("resource #1: does not decode"),
            "{detail:?}"
        );
        assert!(
            detail
                .message
                .contains("denied: denied by the test handler"),
            "{detail:?}"
        );
        assert_eq!(
            timeout_of(&store, "good"),
            Some(2),
            "the accepted one is applied"
        );
        // The undecodable one cannot be named: the last good "victim" stays.
        assert_eq!(timeout_of(&store, "victim"), Some(1));
        assert!(!store.load().clusters.contains_key("denied"));
        // A later good response is ACKed with its version; "denied" is still absent
        // and "victim", missing from the set, is removed.
        s.sotw_responses
            .send(DiscoveryResponse {
                type_url: CLUSTER.into(),
                version_info: "v3".into(),
                nonce: "n3".into(),
                resources: vec![any(&static_cluster("good", 3))],
                ..Default::default()
            })
            .unwrap();
        let cds = drain(&mut s.sotw_requests, Duration::from_millis(700), |r| {
            r.type_url == CLUSTER
        })
        .await;
        assert_eq!(cds.len(), 1, "{cds:?}");
        assert_eq!(
            (cds[0].version_info.as_str(), cds[0].response_nonce.as_str()),
            ("v3", "n3")
        );
        assert!(cds[0].error_detail.is_none());
        let state = store.load();
        assert_eq!(state.clusters.keys().collect::<Vec<_>>(), ["good"]);
        assert!(
            state.type_state(CLUSTER).last_nack.is_some(),
            "history kept"
        );
        shutdown(client).await;
    }

    fn eds_cluster(name: &str, service: &str) -> Cluster {
        use envoy_types::pb::envoy::config::cluster::v3::cluster::{
            ClusterDiscoveryType, DiscoveryType, EdsClusterConfig,
        };
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            eds_cluster_config: Some(EdsClusterConfig {
                service_name: service.into(),
                eds_config: None,
            }),
            ..Default::default()
        }
    }

    fn rds_listener(name: &str, route: &str) -> Listener {
        use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
        use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain};
        use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
            HttpConnectionManager, Rds, http_connection_manager::RouteSpecifier,
        };
        let hcm = HttpConnectionManager {
            stat_prefix: name.into(),
            route_specifier: Some(RouteSpecifier::Rds(Rds {
                route_config_name: route.into(),
                config_source: None,
            })),
            ..Default::default()
        };
        Listener {
            name: name.into(),
            filter_chains: vec![FilterChain {
                filters: vec![Filter {
                    name: "envoy.filters.network.http_connection_manager".into(),
                    config_type: Some(ConfigType::TypedConfig(any(&hcm))),
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn delta_response(
        type_url: &str,
        nonce: &str,
        resources: Vec<Resource>,
    ) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: type_url.into(),
            system_version_info: nonce.into(),
            nonce: nonce.into(),
            resources,
            ..Default::default()
        }
    }

    async fn expect_ack(s: &mut Script, type_url: &str, nonce: &str) {
        let r = next(&mut s.delta_requests, "ACK").await;
        assert_eq!(
            (r.type_url.as_str(), r.response_nonce.as_str()),
            (type_url, nonce),
            "{r:?}"
        );
        assert!(r.error_detail.is_none(), "{r:?}");
    }

    async fn expect_subscription(
        s: &mut Script,
        type_url: &str,
        subscribe: &[&str],
        unsubscribe: &[&str],
    ) {
        let r = next(&mut s.delta_requests, "subscription").await;
        assert_eq!(r.type_url, type_url, "{r:?}");
        assert!(
            r.response_nonce.is_empty(),
            "subscription changes carry no nonce: {r:?}"
        );
        assert_eq!(r.resource_names_subscribe, subscribe, "{r:?}");
        assert_eq!(r.resource_names_unsubscribe, unsubscribe, "{r:?}");
    }

    #[tokio::test]
    async fn delta_subscribes_warms_and_unsubscribes_in_envoys_order() {
        use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
        use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
        let mut s = scripted().await;
        let store = XdsStore::new();
        let client = proxy::xds::spawn(
            scripted_config(s.addr, true),
            store.clone(),
            Handlers::default(),
        );
        expect_subscription(&mut s, CLUSTER, &["*"], &[]).await;
        let cds = vec![
            resource("a", "1", any(&eds_cluster("a", "svc-a"))),
            resource("b", "1", any(&eds_cluster("b", ""))),
        ];
        s.delta_responses
            .send(delta_response(CLUSTER, "c1", cds))
            .unwrap();
        expect_ack(&mut s, CLUSTER, "c1").await;
        expect_subscription(&mut s, ENDPOINT, &["b", "svc-a"], &[]).await;
        let state = store.load();
        assert_eq!(
            state.warming_clusters.len(),
            2,
            "clusters warm until their endpoints arrive"
        );
        assert!(state.clusters.is_empty());
        // LDS waits for the clusters.
        assert!(
            drain(&mut s.delta_requests, Duration::from_millis(200), |_| true)
                .await
                .is_empty()
        );
        let cla = |name: &str| ClusterLoadAssignment {
            cluster_name: name.into(),
            ..Default::default()
        };
        let eds = vec![
            resource("svc-a", "1", any(&cla("svc-a"))),
            resource("b", "1", any(&cla("b"))),
        ];
        s.delta_responses
            .send(delta_response(ENDPOINT, "e1", eds))
            .unwrap();
        expect_ack(&mut s, ENDPOINT, "e1").await;
        expect_subscription(&mut s, LISTENER, &["*"], &[]).await;
        let state = store.load();
        assert_eq!(state.clusters.len(), 2);
        assert!(state.warming_clusters.is_empty());
        assert!(!store.initial_sync_done(), "LDS has not answered yet");
        // A cluster goes: its endpoints are unsubscribed and dropped.
        let mut removal = delta_response(CLUSTER, "c2", vec![]);
        removal.removed_resources = vec!["a".into()];
        s.delta_responses.send(removal).unwrap();
        expect_ack(&mut s, CLUSTER, "c2").await;
        expect_subscription(&mut s, ENDPOINT, &[], &["svc-a"]).await;
        let state = store.load();
        assert_eq!(state.clusters.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(state.endpoints.keys().collect::<Vec<_>>(), ["b"]);
        // A listener warms until its route config arrives.
        let lds = vec![resource("l1", "1", any(&rds_listener("l1", "r1")))];
        s.delta_responses
            .send(delta_response(LISTENER, "l1", lds))
            .unwrap();
        expect_ack(&mut s, LISTENER, "l1").await;
        expect_subscription(&mut s, ROUTE, &["r1"], &[]).await;
        assert!(store.load().warming_listeners.contains_key("l1"));
        assert!(!store.initial_sync_done());
        let route = RouteConfiguration {
            name: "r1".into(),
            ..Default::default()
        };
        s.delta_responses
            .send(delta_response(
                ROUTE,
                "r1",
                vec![resource("r1", "1", any(&route))],
            ))
            .unwrap();
        expect_ack(&mut s, ROUTE, "r1").await;
        let mut synced = store.synced();
        tokio::time::timeout(WAIT, synced.wait_for(|s| *s))
            .await
            .unwrap()
            .unwrap();
        let state = store.load();
        assert!(state.listeners.contains_key("l1") && state.warming_listeners.is_empty());
        assert!(state.routes.contains_key("r1"));
        shutdown(client).await;
    }

    #[tokio::test]
    async fn a_cluster_whose_endpoints_never_come_is_used_after_the_initial_fetch_timeout() {
        let mut s = scripted().await;
        let store = XdsStore::new();
        let config = XdsConfig {
            initial_fetch_timeout: Duration::from_millis(300),
            ..scripted_config(s.addr, true)
        };
        let client = proxy::xds::spawn(config, store.clone(), Handlers::default());
        expect_subscription(&mut s, CLUSTER, &["*"], &[]).await;
        let cds = vec![resource("a", "1", any(&eds_cluster("a", "")))];
        let sent = std::time::Instant::now();
        s.delta_responses
            .send(delta_response(CLUSTER, "c1", cds))
            .unwrap();
        expect_ack(&mut s, CLUSTER, "c1").await;
        expect_subscription(&mut s, ENDPOINT, &["a"], &[]).await;
        // No endpoints: after the timeout the cluster is used and LDS starts.
        expect_subscription(&mut s, LISTENER, &["*"], &[]).await;
        assert!(
            sent.elapsed() >= Duration::from_millis(250),
            "LDS waited for the warming cluster: {:?}",
            sent.elapsed()
        );
        let state = store.load();
        assert!(state.clusters.contains_key("a") && state.warming_clusters.is_empty());
        shutdown(client).await;
    }
}

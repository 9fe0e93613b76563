//! Every container the chart starts is given flags its binary accepts: the
//! args of pilot, citadel, galley, injector and the gateways' `proxy sidecar`
//! parse with that component's own clap `Config`, for every profile and a
//! revision, with the downward-API environment a pod would have.

use clap::Parser;
use mizzen::manifest::{InstallOptions, plan, render};
use serde_json::Value;

/// The container `name` of Deployment `deployment`: its args.
fn args(objects: &[Value], deployment: &str) -> Vec<String> {
    let d = objects
        .iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == deployment)
        .unwrap_or_else(|| panic!("no Deployment {deployment}"));
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

fn argv(binary: &str, args: Vec<String>) -> Vec<String> {
    std::iter::once(binary.to_string()).chain(args).collect()
}

#[test]
fn every_control_plane_container_parses_its_flags() {
    for (sets, revision, suffix) in [
        (vec!["profile=default"], None, ""),
        (vec!["profile=demo"], None, ""),
        (vec!["profile=production"], None, ""),
        (vec!["profile=minimal"], Some("canary"), "-canary"),
    ] {
        let plan = plan(&InstallOptions {
            sets: sets.iter().map(|s| s.to_string()).collect(),
            revision: revision.map(str::to_string),
            ..Default::default()
        })
        .unwrap();
        let objects = render(&plan).unwrap();
        let name = |n: &str| format!("{n}{suffix}");

        let pilot =
            pilot::app::Config::try_parse_from(argv("pilot", args(&objects, &name("pilot"))))
                .unwrap_or_else(|e| panic!("pilot: {e}"));
        assert_eq!(pilot.xds_addr.port(), 15010);

        let citadel =
            citadel::app::Config::try_parse_from(argv("citadel", args(&objects, &name("citadel"))))
                .unwrap_or_else(|e| panic!("citadel: {e}"));
        assert_eq!(citadel.grpc_addr.port(), 15012);

        let galley =
            galley::app::Config::try_parse_from(argv("galley", args(&objects, &name("galley"))))
                .unwrap_or_else(|e| panic!("galley: {e}"));
        assert_eq!(galley.webhook_addr.port(), 15017);

        injector::app::Config::try_parse_from(argv("injector", args(&objects, &name("injector"))))
            .unwrap_or_else(|e| panic!("injector: {e}"));

        if revision.is_none() && sets[0] != "profile=minimal" {
            // The gateway's environment comes from the downward API; give it as flags.
            let mut gw = args(&objects, "istio-ingressgateway");
            gw.extend(
                [
                    "--pod-name=gw-1",
                    "--pod-namespace=istio-system",
                    "--pod-ip=10.244.0.9",
                    "--service-account=istio-ingressgateway-service-account",
                ]
                .map(str::to_string),
            );
            match proxy::config::Cli::try_parse_from(argv("proxy", gw)) {
                Ok(proxy::config::Cli::Sidecar(s)) => assert!(s.router, "the gateway is a router"),
                Ok(other) => panic!("the gateway runs {other:?}, not proxy sidecar"),
                Err(e) => panic!("gateway: {e}"),
            }
        }
    }
}

//! The injected containers' command lines are ones the `proxy` binary accepts:
//! `istio-init`'s arguments parse as `proxy init` (and its dry run prints the
//! rules), `istio-proxy`'s as `proxy sidecar` (with the downward-API
//! environment given as flags) and give the data plane the contract's ports,
//! and the postStart hook parses as `proxy wait`.

use clap::Parser;
use injector::Options;
use k8s_openapi::api::core::v1::{Container, Pod};
use proxy::config::Cli;
use serde_json::json;

fn pod(annotations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "labels": {"app": "p"}, "annotations": annotations},
        "spec": {"containers": [{"name": "app", "image": "app"}]},
    }))
    .unwrap()
}

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == name)
        .unwrap()
}

fn parse(c: &Container, extra: &[&str]) -> Cli {
    assert_eq!(
        c.command.as_deref(),
        Some(&["/usr/local/bin/proxy".to_string()][..])
    );
    let mut argv = vec!["proxy".to_string()];
    argv.extend(c.args.clone().unwrap());
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"))
}

#[test]
fn the_proxy_accepts_the_injected_command_lines() {
    let injected = injector::inject(
        &pod(json!({
            "traffic.sidecar.istio.io/excludeOutboundIPRanges": "169.254.169.254/32",
            "traffic.sidecar.istio.io/includeOutboundPorts": "5432",
            "traffic.sidecar.istio.io/excludeOutboundPorts": "3306",
            "status.sidecar.istio.io/port": "15999",
            "sidecar.istio.io/logLevel": "debug",
        })),
        &Options::default(),
    )
    .unwrap();
    match parse(container(&injected, "istio-init"), &["--dry-run"]) {
        Cli::Init(init) => {
            assert_eq!(init.exclude_outbound_ip_ranges, "169.254.169.254/32");
            assert_eq!(init.exclude_inbound_ports, "15090,15021,15999");
            let rules = proxy::init::run(&init)
                .expect("the dry run prints the rules")
                .to_string();
            assert!(rules.contains("--to-ports 15001"), "{rules}");
        }
        other => panic!("istio-init runs {other:?}"),
    }
    let downward = [
        "--pod-name",
        "p",
        "--pod-namespace",
        "default",
        "--pod-ip",
        "10.244.0.9",
        "--service-account",
        "default",
    ];
    match parse(container(&injected, "istio-proxy"), &downward) {
        Cli::Sidecar(sidecar) => {
            let run = sidecar.run_config();
            assert_eq!(
                run.ca_addr.as_deref(),
                Some("citadel.istio-system.svc:15012")
            );
            assert_eq!(run.status_addr.map(|a| a.port()), Some(15999));
            assert_eq!(run.health_addr.map(|a| a.port()), Some(15021));
            assert_eq!(run.prometheus_addr.map(|a| a.port()), Some(15090));
            assert_eq!(run.log_level, "debug");
            assert_eq!(run.concurrency, 2);
            assert_eq!(
                sidecar.discovery_address.to_string(),
                "pilot.istio-system.svc:15010"
            );
            assert_eq!(
                sidecar.interception_mode,
                proxy::agent::InterceptionMode::Redirect
            );
        }
        other => panic!("istio-proxy runs {other:?}"),
    }
    // The env the container gets is what `proxy sidecar` reads.
    let env: Vec<String> = container(&injected, "istio-proxy")
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    for (flag, var) in [
        ("pod_name", "POD_NAME"),
        ("pod_namespace", "POD_NAMESPACE"),
        ("pod_ip", "INSTANCE_IP"),
        ("service_account", "SERVICE_ACCOUNT"),
    ] {
        let cmd = <proxy::sidecar::Config as clap::CommandFactory>::command();
        let arg = cmd.get_arguments().find(|a| a.get_id() == flag).unwrap();
        assert_eq!(arg.get_env().and_then(|e| e.to_str()), Some(var));
        assert!(env.contains(&var.to_string()), "{var} is set: {env:?}");
    }

    // Classic: the postStart hook is `proxy wait`; NONE: the sidecar knows.
    let classic = Options {
        native_sidecars: false,
        ..Options::default()
    };
    let injected = injector::inject(
        &pod(json!({"sidecar.istio.io/interceptionMode": "NONE"})),
        &classic,
    )
    .unwrap();
    let proxy = container(&injected, "istio-proxy");
    let hook = proxy
        .lifecycle
        .as_ref()
        .unwrap()
        .post_start
        .as_ref()
        .unwrap();
    let argv = hook.exec.as_ref().unwrap().command.clone().unwrap();
    assert_eq!(argv[0], "/usr/local/bin/proxy");
    let mut wait = vec!["proxy".to_string()];
    wait.extend(argv[1..].iter().cloned());
    match Cli::try_parse_from(&wait).unwrap() {
        Cli::Wait(w) => assert_eq!(w.url, "http://127.0.0.1:15021/healthz/ready"),
        other => panic!("postStart runs {other:?}"),
    }
    match parse(proxy, &downward) {
        Cli::Sidecar(s) => {
            assert_eq!(s.interception_mode, proxy::agent::InterceptionMode::None);
        }
        other => panic!("istio-proxy runs {other:?}"),
    }
}

//! Pods without capture, for a machine where `mizzen` cannot have root: no
//! network namespace and no iptables; each pod gets a loopback address
//! (127.77.0.x) and its sidecar listens where Istio's `captureMode: NONE`
//! puts it, laid out by a Sidecar resource written for the pod alone:
//!
//! - inbound: the sidecar on `POD_IP:PORT` for each app port, forwarding to
//!   the app on `POD_IP:PORT+10000` (`defaultEndpoint: 0.0.0.0:PORT+10000`,
//!   the pod's own address);
//! - outbound: an egress listener on [`egress_addr`]`(POD_IP)` for every
//!   service port in the registry when the pod starts, where the app sends
//!   its calls with the service in `Host` (bookinfo's `--connect-to`);
//! - the sidecar's admin (15000), status (15020) and health (15021) ports on
//!   the pod's address, and the node's `INTERCEPTION_MODE: NONE`, so pilot
//!   serves no 15001/15006 listeners.
//!
//! The Sidecar selects the pod by the label [`POD_LABEL`] (its name), which
//! the pod carries for that.
//!
//! [`egress_addr`]: super::net::egress_addr

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::PodSpec;
use super::net::egress_addr;

/// The label a pod without capture carries (its name), which its Sidecar
/// selects.
pub const POD_LABEL: &str = "mizzen.io/pod";

/// How far above a port the app listens when its sidecar takes the port.
pub const APP_PORT_OFFSET: u16 = 10000;

/// The port the app listens on for the pod port `port`, when a sidecar takes
/// `port`; `None` when that is past 65535.
pub fn app_port(port: u16) -> Option<u16> {
    port.checked_add(APP_PORT_OFFSET)
}

/// The ports the app listens on for the pod's `ports` when its sidecar takes
/// them; `Err` says which port cannot be (below 1024 without `privileged`,
/// or past 65535).
pub fn app_ports(ports: &[u16], privileged: bool) -> Result<Vec<u16>, String> {
    ports
        .iter()
        .map(|p| {
            if u32::from(*p) < FIRST_UNPRIVILEGED_PORT && !privileged {
                return Err(format!(
                    "port {p}: without root the sidecar cannot listen below {FIRST_UNPRIVILEGED_PORT}; use a higher port, or run as root"
                ));
            }
            app_port(*p).ok_or_else(|| {
                format!(
                    "port {p}: without capture the app listens {APP_PORT_OFFSET} above each port, past 65535; pick a lower port"
                )
            })
        })
        .collect()
}

/// Ports below this need privilege to bind.
pub const FIRST_UNPRIVILEGED_PORT: u32 = 1024;

/// The Sidecar resource of the pod `spec` at `addr`: ingress listeners for
/// its ports, egress listeners for the registry's ports (`port → protocol`);
/// without `privileged`, none below 1024, which the sidecar could not bind
/// (Istio skips them for an unprivileged proxy too).
pub fn sidecar_yaml(
    spec: &PodSpec,
    addr: Ipv4Addr,
    registry: &BTreeMap<u32, String>,
    privileged: bool,
) -> String {
    let registry: BTreeMap<u32, String> = registry
        .iter()
        .filter(|(port, _)| privileged || **port >= FIRST_UNPRIVILEGED_PORT)
        .map(|(p, proto)| (*p, proto.clone()))
        .collect();
    let mut out = format!(
        "# Written by `mizzen run --no-capture` for pod {name}.{ns}; removed when it stops.\n\
         apiVersion: networking.istio.io/v1\n\
         kind: Sidecar\n\
         metadata:\n  name: mizzen-pod-{name}\n  namespace: {ns}\n\
         spec:\n  workloadSelector:\n    labels:\n      {POD_LABEL}: {name}\n",
        name = spec.name,
        ns = spec.namespace
    );
    let protocol = |port: u32| registry.get(&port).map_or("TCP", String::as_str);
    if !spec.ports.is_empty() {
        out.push_str("  ingress:\n");
        for port in &spec.ports {
            let app = app_port(*port).unwrap_or(*port);
            let _ = write!(
                out,
                "  - port:\n      number: {port}\n      protocol: {}\n      name: port-{port}\n    \
                 bind: {addr}\n    captureMode: NONE\n    defaultEndpoint: 0.0.0.0:{app}\n",
                protocol(u32::from(*port))
            );
        }
    }
    out.push_str("  egress:\n");
    if registry.is_empty() {
        // Nothing to reach yet; `~` hides everything rather than leaving the
        // catch-all listener on 127.0.0.1, which every pod would share.
        out.push_str("  - hosts:\n    - \"~/*\"\n");
    }
    for (port, protocol) in &registry {
        let _ = write!(
            out,
            "  - port:\n      number: {port}\n      protocol: {protocol}\n      name: port-{port}\n    \
             bind: {}\n    captureMode: NONE\n    hosts:\n    - \"*/*\"\n",
            egress_addr(addr)
        );
    }
    out
}

/// The environment a pod's app gets without capture: where it listens and
/// where it calls out.
pub fn app_env(spec: &PodSpec, addr: Ipv4Addr) -> Vec<(String, String)> {
    let mut env = vec![
        ("POD_IP".to_string(), addr.to_string()),
        ("INSTANCE_IP".to_string(), addr.to_string()),
        (
            "MIZZEN_EGRESS_IP".to_string(),
            egress_addr(addr).to_string(),
        ),
    ];
    for port in &spec.ports {
        if let Some(app) = app_port(*port) {
            env.push((format!("MIZZEN_APP_PORT_{port}"), app.to_string()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::SidecarKind;

    fn spec() -> PodSpec {
        PodSpec {
            name: "reviews-v1".into(),
            namespace: "default".into(),
            service_account: "bookinfo-reviews".into(),
            labels: BTreeMap::new(),
            ports: vec![9080],
            sidecar: SidecarKind::Proxy,
            command: vec!["true".into()],
            gateway: false,
            env: Vec::new(),
        }
    }

    #[test]
    fn the_sidecar_binds_the_pod_address_inbound_and_the_egress_address_outbound() {
        let registry = BTreeMap::from([(9080, "HTTP".to_string()), (3306, "TCP".to_string())]);
        let yaml = sidecar_yaml(&spec(), Ipv4Addr::new(127, 77, 0, 5), &registry, true);
        let outcome = galley::check_str(&yaml, "sidecar.yaml", &galley::CheckOptions::default());
        assert_eq!(outcome.resources, 1, "{yaml}");
        assert!(
            outcome.messages.is_empty(),
            "{:?}\n{yaml}",
            outcome.messages
        );
        assert!(
            yaml.contains(
                "bind: 127.77.0.5\n    captureMode: NONE\n    defaultEndpoint: 0.0.0.0:19080"
            ),
            "{yaml}"
        );
        assert!(yaml.contains("number: 3306\n      protocol: TCP"), "{yaml}");
        assert_eq!(yaml.matches("bind: 127.78.0.5").count(), 2, "{yaml}");
        assert!(yaml.contains("mizzen.io/pod: reviews-v1"), "{yaml}");
    }

    #[test]
    fn an_empty_registry_hides_everything() {
        let yaml = sidecar_yaml(
            &spec(),
            Ipv4Addr::new(127, 77, 0, 5),
            &BTreeMap::new(),
            true,
        );
        assert!(yaml.contains("\"~/*\""), "{yaml}");
        // Without privilege, port 80 is left out: nothing the sidecar can bind.
        let only_80 = BTreeMap::from([(80, "HTTP".to_string())]);
        let yaml = sidecar_yaml(&spec(), Ipv4Addr::new(127, 77, 0, 5), &only_80, false);
        assert!(!yaml.contains("number: 80\n"), "{yaml}");
        assert!(yaml.contains("\"~/*\""), "{yaml}");
    }

    #[test]
    fn the_app_learns_its_addresses_from_the_environment() {
        let env = app_env(&spec(), Ipv4Addr::new(127, 77, 0, 5));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("POD_IP"), Some("127.77.0.5"));
        assert_eq!(get("MIZZEN_EGRESS_IP"), Some("127.78.0.5"));
        assert_eq!(get("MIZZEN_APP_PORT_9080"), Some("19080"));
        assert_eq!(app_port(60000), None);
        assert_eq!(app_ports(&[9080, 8080], false), Ok(vec![19080, 18080]));
        assert!(app_ports(&[80], false).unwrap_err().contains("below 1024"));
        assert_eq!(app_ports(&[80], true), Ok(vec![10080]));
        assert!(
            app_ports(&[60000], true)
                .unwrap_err()
                .contains("past 65535")
        );
    }
}

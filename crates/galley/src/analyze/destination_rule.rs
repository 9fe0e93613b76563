//! DestinationRule checks: upstream TLS that does not verify the server
//! (IST0128, IST0129) and client TLS settings that contradict the mutual TLS mode
//! the destination's workloads accept (IST0113).

use std::collections::{BTreeMap, HashSet};

use common::istio::networking::{ClientTlsMode, ClientTlsSettings, PortSelector};
use common::istio::security::{MutualTlsMode, PeerAuthenticationSpec};
use common::path::Path;
use common::resource::Resource;

use super::service::{root_namespace, to_fqdn};
use super::virtual_service::host_key;
use super::{Analyzer, Report, Snapshot, selects};
use crate::message::codes;

pub(super) fn analyzers() -> Vec<Box<dyn Analyzer>> {
    vec![
        Box::new(CaCertificateAnalyzer),
        Box::new(MtlsConflictAnalyzer),
    ]
}

/// Istio's name of a client TLS mode.
fn client_mode_name(mode: ClientTlsMode) -> &'static str {
    match mode {
        ClientTlsMode::Disable => "DISABLE",
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        ClientTlsMode::IstioMutual => "ISTIO_MUTUAL",
    }
}

/// Whether TLS settings originate TLS without any way to verify the server: mode
/// SIMPLE or MUTUAL with no `caCertificates`. A `credentialName` brings its own CA
/// (the secret's `ca.crt`), and `insecureSkipVerify` says the user chose not to
/// verify, so neither is reported.
fn unverified(tls: &ClientTlsSettings) -> Option<ClientTlsMode> {
    let mode = tls.mode?;
    let originates = matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual);
    let has_ca = tls
        .ca_certificates
        .as_deref()
        .is_some_and(|c| !c.is_empty())
        || tls
            .credential_name
            .as_deref()
            .is_some_and(|c| !c.is_empty());
    (originates && !has_ca && tls.insecure_skip_verify != Some(true)).then_some(mode)
}

/// Go's protobuf text form of a port selector, as Istio prints it (`number:443`).
fn port_text(port: Option<&PortSelector>) -> String {
    match port.and_then(|p| p.number) {
        Some(n) => format!("number:{n}"),
        None => String::new(),
    }
}

/// IST0128 (whole destination) and IST0129 (one port): TLS origination that does
/// not verify the server certificate.
struct CaCertificateAnalyzer;

impl Analyzer for CaCertificateAnalyzer {
    fn name(&self) -> &'static str {
        "destinationrule.CaCertificateAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        for (r, dr) in snap.destination_rules() {
            let ns = snap.ns(r);
            let full = format!("{ns}/{}", r.name());
            let Some(policy) = &dr.traffic_policy else {
                continue;
            };
            let policy_path = Path::root("spec").field("trafficPolicy");
            if let Some(mode) = policy.tls.as_ref().and_then(unverified) {
                report.add(
                    codes::NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
                    r,
                    Some(policy_path.clone().field("tls").field("mode")),
                    format!(
                        "DestinationRule {full} in namespace {ns} has TLS mode set to {} but no caCertificates are set to validate server identity for host: {}",
                        client_mode_name(mode),
                        dr.host
                    ),
                );
            }
            for (i, p) in policy.port_level_settings.iter().enumerate() {
                let Some(mode) = p.tls.as_ref().and_then(unverified) else {
                    continue;
                };
                report.add(
                    codes::NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL,
                    r,
                    Some(
                        policy_path
                            .clone()
                            .field("portLevelSettings")
                            .index(i)
                            .field("tls")
                            .field("mode"),
                    ),
                    format!(
                        "DestinationRule {full} in namespace {ns} has TLS mode set to {} but no caCertificates are set to validate server identity for host: {} at port {}",
                        client_mode_name(mode),
                        dr.host,
                        port_text(p.port.as_ref())
                    ),
                );
            }
        }
    }
}

/// IST0113: a DestinationRule whose client TLS mode contradicts the
/// PeerAuthentication in force for the destination's workloads: `DISABLE` towards
/// workloads that require mutual TLS (`STRICT`), or `ISTIO_MUTUAL` towards workloads
/// that refuse it (`DISABLE`); either way every request fails.
///
/// The destination's workloads are those its Kubernetes Service selects among the
/// input's workloads, or, when none are given, a workload carrying exactly the
/// Service's selector labels. The policy in force for a workload is Istio's most
/// specific one: a workload policy (with a selector) in its namespace, then the
/// namespace policy, then the mesh policy in the root namespace; a policy whose
/// mode is `UNSET` defers to the next.
struct MtlsConflictAnalyzer;

impl Analyzer for MtlsConflictAnalyzer {
    fn name(&self) -> &'static str {
        "auth.MTLSAnalyzer"
    }

    fn analyze(&self, snap: &Snapshot<'_>, report: &mut Report<'_>) {
        let root = root_namespace(snap);
        let workloads = snap.workloads();
        let policies: Vec<(&Resource, &str, &PeerAuthenticationSpec)> = snap
            .peer_authentications()
            .map(|(r, pa)| (r, snap.ns(r), pa))
            .collect();
        if policies.is_empty() {
            return;
        }
        for (r, dr) in snap.destination_rules() {
            let Some(mode) = dr
                .traffic_policy
                .as_ref()
                .and_then(|p| p.tls.as_ref())
                .and_then(|t| t.mode)
            else {
                continue;
            };
            let wants_mtls = match mode {
                ClientTlsMode::Disable => false,
                ClientTlsMode::IstioMutual => true,
                _ => continue,
            };
            let dr_ns = snap.ns(r);
            let pattern = if dr.host.starts_with('*') {
                to_fqdn(&dr.host, dr_ns)
            } else {
                host_key(&dr.host, dr_ns)
            };
            let mut reported = HashSet::new();
            for svc in snap.services().overlapping(&pattern) {
                if !svc.is_kubernetes() {
                    continue;
                }
                let mut label_sets: Vec<&BTreeMap<String, String>> = workloads
                    .iter()
                    .filter(|w| {
                        w.namespace == svc.namespace
                            && !svc.selector.is_empty()
                            && selects(&svc.selector, &w.labels)
                    })
                    .map(|w| &w.labels)
                    .collect();
                if label_sets.is_empty() {
                    label_sets.push(&svc.selector);
                }
                for labels in label_sets {
                    let Some((pa, pa_mode)) =
                        effective_policy(&policies, &svc.namespace, &root, labels)
                    else {
                        continue;
                    };
                    let conflict = match pa_mode {
                        MutualTlsMode::Strict => !wants_mtls,
                        MutualTlsMode::Disable => wants_mtls,
                        _ => false,
                    };
                    if !conflict || !reported.insert((svc.host.clone(), pa.name(), snap.ns(pa))) {
                        continue;
                    }
                    report.add(
                        codes::MTLS_POLICY_CONFLICT,
                        r,
                        Some(Path::root("spec").field("trafficPolicy").field("tls").field("mode")),
                        format!(
                            "A DestinationRule and Policy are in conflict with regards to mTLS for host {}. The DestinationRule \"{dr_ns}/{}\" specifies that mTLS must be {wants_mtls} but the Policy object \"{}/{}\" specifies {}.",
                            svc.host,
                            r.name(),
                            snap.ns(pa),
                            pa.name(),
                            peer_mode_name(pa_mode)
                        ),
                    );
                }
            }
        }
    }
}

/// The PeerAuthentication in force for a workload with `labels` in `ns`, with its
/// mode, or `None` when no policy sets one.
fn effective_policy<'a>(
    policies: &[(&'a Resource, &str, &PeerAuthenticationSpec)],
    ns: &str,
    root: &str,
    labels: &BTreeMap<String, String>,
) -> Option<(&'a Resource, MutualTlsMode)> {
    let mode = |pa: &PeerAuthenticationSpec| {
        pa.mtls
            .as_ref()
            .and_then(|m| m.mode)
            .filter(|m| *m != MutualTlsMode::Unset)
    };
    let workload = policies.iter().find(|(_, pns, pa)| {
        *pns == ns && selector(pa).is_some_and(|s| selects(s, labels)) && mode(pa).is_some()
    });
    let namespace = || {
        policies
            .iter()
            .find(|(_, pns, pa)| *pns == ns && selector(pa).is_none() && mode(pa).is_some())
    };
    let mesh = || {
        policies
            .iter()
            .find(|(_, pns, pa)| *pns == root && selector(pa).is_none() && mode(pa).is_some())
    };
    workload
        .or_else(namespace)
        .or_else(mesh)
        .and_then(|(r, _, pa)| mode(pa).map(|m| (*r, m)))
}

/// A policy's non-empty `selector.matchLabels`.
fn selector(pa: &PeerAuthenticationSpec) -> Option<&BTreeMap<String, String>> {
    pa.selector
        .as_ref()
        .map(|s| &s.match_labels)
        .filter(|m| !m.is_empty())
}

fn peer_mode_name(mode: MutualTlsMode) -> &'static str {
    match mode {
        MutualTlsMode::Unset => "UNSET",
        MutualTlsMode::Disable => "DISABLE",
        MutualTlsMode::Permissive => "PERMISSIVE",
        MutualTlsMode::Strict => "STRICT",
    }
}

#[cfg(test)]
mod tests {
    use super::super::service::test_support::*;
    use super::*;

    const SIMPLE_TLS: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db-tls, namespace: default}
spec:
  host: mydbserver.prod.svc.cluster.local
  trafficPolicy:
    tls: {mode: SIMPLE}
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: MUTUAL, clientCertificate: /etc/certs/cert.pem, privateKey: /etc/certs/key.pem}
    - port: {number: 8443}
      tls: {mode: SIMPLE, caCertificates: /etc/certs/ca.pem}
"#;

    #[test]
    fn ist0128_destination_level_tls_without_ca() {
        let m = expect_one(
            SIMPLE_TLS,
            codes::NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
            "DestinationRule",
            "db-tls",
            Some("spec.trafficPolicy.tls.mode"),
            "DestinationRule default/db-tls in namespace default has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: mydbserver.prod.svc.cluster.local",
        );
        assert_eq!(m.origin.unwrap().line, 8);
    }

    #[test]
    fn ist0129_port_level_tls_without_ca() {
        expect_one(
            SIMPLE_TLS,
            codes::NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL,
            "DestinationRule",
            "db-tls",
            Some("spec.trafficPolicy.portLevelSettings[0].tls.mode"),
            "DestinationRule default/db-tls in namespace default has TLS mode set to MUTUAL but no caCertificates are set to validate server identity for host: mydbserver.prod.svc.cluster.local at port number:443",
        );
    }

    #[test]
    fn tls_with_ca_or_credential_is_verified() {
        let yaml = SIMPLE_TLS
            .replace(
                "tls: {mode: SIMPLE}",
                "tls: {mode: SIMPLE, credentialName: db-client}",
            )
            .replace(
                "privateKey: /etc/certs/key.pem",
                "privateKey: /etc/certs/key.pem, caCertificates: /ca.pem",
            );
        expect_none(
            &yaml,
            codes::NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL,
        );
        expect_none(&yaml, codes::NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL);
    }

    const RATINGS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 9080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: default}
spec:
  host: ratings
  trafficPolicy:
    tls: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
"#;

    #[test]
    fn ist0113_disable_towards_strict_workloads() {
        expect_one(
            RATINGS,
            codes::MTLS_POLICY_CONFLICT,
            "DestinationRule",
            "ratings",
            Some("spec.trafficPolicy.tls.mode"),
            "A DestinationRule and Policy are in conflict with regards to mTLS for host ratings.default.svc.cluster.local. The DestinationRule \"default/ratings\" specifies that mTLS must be false but the Policy object \"istio-system/default\" specifies STRICT.",
        );
    }

    #[test]
    fn ist0113_istio_mutual_towards_plaintext_workloads() {
        let yaml = format!(
            "{}---\n{}",
            RATINGS.replace("mode: DISABLE}", "mode: ISTIO_MUTUAL}"),
            r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ratings-plain, namespace: default}
spec:
  selector: {matchLabels: {app: ratings}}
  mtls: {mode: DISABLE}
"#
        );
        expect_one(
            &yaml,
            codes::MTLS_POLICY_CONFLICT,
            "DestinationRule",
            "ratings",
            Some("spec.trafficPolicy.tls.mode"),
            "A DestinationRule and Policy are in conflict with regards to mTLS for host ratings.default.svc.cluster.local. The DestinationRule \"default/ratings\" specifies that mTLS must be true but the Policy object \"default/ratings-plain\" specifies DISABLE.",
        );
    }

    #[test]
    fn ist0113_not_reported_when_modes_agree() {
        // A namespace policy overrides the mesh one.
        let permissive = format!(
            "{RATINGS}---\n{}",
            r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: PERMISSIVE}
"#
        );
        expect_none(&permissive, codes::MTLS_POLICY_CONFLICT);
        let mutual = RATINGS.replace("mode: DISABLE}", "mode: ISTIO_MUTUAL}");
        expect_none(&mutual, codes::MTLS_POLICY_CONFLICT);
    }
}

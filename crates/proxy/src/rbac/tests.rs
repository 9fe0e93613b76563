use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::CidrRange;
use envoy_types::pb::envoy::config::rbac::v3::{
    MetadataSource, Permission as P, Policy as PbPolicy, Principal as Id, Rbac as PbRbac,
    SourcedMetadata, permission, principal, rbac,
};
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, header_matcher};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    ListMatcher, MetadataMatcher, PathMatcher, StringMatcher, ValueMatcher, list_matcher,
    metadata_matcher, path_matcher, string_matcher::MatchPattern, value_matcher,
};
use envoy_types::pb::google::protobuf::UInt32Value;
use serde_json::json;

use super::*;
use crate::route::RequestView;

fn exact(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Exact(v.into())),
        ignore_case: false,
    }
}

fn prefix(v: &str) -> StringMatcher {
    StringMatcher {
        match_pattern: Some(MatchPattern::Prefix(v.into())),
        ignore_case: false,
    }
}

fn perm(r: permission::Rule) -> P {
    P { rule: Some(r) }
}

fn id(i: principal::Identifier) -> Id {
    Id {
        identifier: Some(i),
    }
}

fn any_perm() -> P {
    perm(permission::Rule::Any(true))
}

fn any_id() -> Id {
    id(principal::Identifier::Any(true))
}

fn path(m: StringMatcher) -> P {
    perm(permission::Rule::UrlPath(PathMatcher {
        rule: Some(path_matcher::Rule::Path(m)),
    }))
}

fn header(name: &str, v: &str) -> HeaderMatcher {
    HeaderMatcher {
        name: name.into(),
        header_match_specifier: Some(header_matcher::HeaderMatchSpecifier::StringMatch(exact(v))),
        ..Default::default()
    }
}

fn cidr(ip: &str, len: u32) -> CidrRange {
    CidrRange {
        address_prefix: ip.into(),
        prefix_len: Some(UInt32Value { value: len }),
    }
}

fn jwt_claim(path: &[&str], value: ValueMatcher) -> Id {
    id(principal::Identifier::SourcedMetadata(SourcedMetadata {
        metadata_matcher: Some(MetadataMatcher {
            filter: "envoy.filters.http.jwt_authn".into(),
            path: path
                .iter()
                .map(|k| metadata_matcher::PathSegment {
                    segment: Some(metadata_matcher::path_segment::Segment::Key(k.to_string())),
                })
                .collect(),
            value: Some(value),
            invert: false,
        }),
        metadata_source: MetadataSource::Dynamic as i32,
    }))
}

fn string_value(m: StringMatcher) -> ValueMatcher {
    ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::StringMatch(m)),
    }
}

fn rbac(action: rbac::Action, policies: Vec<(&str, Vec<P>, Vec<Id>)>) -> Rbac {
    let policies: HashMap<String, PbPolicy> = policies
        .into_iter()
        .map(|(n, permissions, principals)| {
            (
                n.to_string(),
                PbPolicy {
                    permissions,
                    principals,
                    ..Default::default()
                },
            )
        })
        .collect();
    compile::rules(
        "rules",
        &PbRbac {
            action: action as i32,
            policies,
            ..Default::default()
        },
    )
    .unwrap()
}

struct Req {
    method: &'static str,
    path: &'static str,
    headers: http::HeaderMap,
}

fn req(method: &'static str, path: &'static str) -> Req {
    Req {
        method,
        path,
        headers: http::HeaderMap::new(),
    }
}

fn view(r: &Req) -> RequestView<'_> {
    RequestView {
        authority: "example.com",
        method: r.method,
        path_and_query: r.path,
        scheme: "http",
        headers: &r.headers,
        random: 0,
    }
}

fn input<'a>(request: Option<&'a RequestView<'a>>) -> Input<'a> {
    Input {
        tls: false,
        peer_identity: None,
        direct_remote: "10.0.0.1".parse().unwrap(),
        remote: "192.168.1.5".parse().unwrap(),
        dst: SocketAddr::from(([10, 0, 0, 2], 9080)),
        sni: None,
        request,
        metadata: None,
    }
}

#[test]
fn allow_lets_through_only_what_a_policy_matches() {
    let method = perm(permission::Rule::Header(header(":method", "GET")));
    let r = rbac(
        rbac::Action::Allow,
        vec![(
            "get-foo",
            vec![perm(permission::Rule::AndRules(permission::Set {
                rules: vec![method, path(exact("/foo"))],
            }))],
            vec![any_id()],
        )],
    );
    let get = req("GET", "/foo?x=1");
    let post = req("POST", "/foo");
    let sub = req("GET", "/foo/sub");
    let d = r.evaluate(&input(Some(&view(&get))));
    assert_eq!(
        d,
        Decision {
            allowed: true,
            policy: Some("get-foo")
        }
    );
    assert!(!r.evaluate(&input(Some(&view(&post)))).allowed);
    assert!(!r.evaluate(&input(Some(&view(&sub)))).allowed);
    // Without a request (network filter) headers and paths never match.
    assert!(!r.evaluate(&input(None)).allowed);
}

#[test]
fn deny_and_log_actions() {
    let policies = || vec![("admin", vec![path(prefix("/admin"))], vec![any_id()])];
    let deny = rbac(rbac::Action::Deny, policies());
    let log = rbac(rbac::Action::Log, policies());
    let admin = req("GET", "/admin/x");
    let other = req("GET", "/x");
    assert!(!deny.evaluate(&input(Some(&view(&admin)))).allowed);
    assert!(deny.evaluate(&input(Some(&view(&other)))).allowed);
    let d = log.evaluate(&input(Some(&view(&admin))));
    assert!(d.allowed && d.policy == Some("admin"));
    assert!(log.evaluate(&input(Some(&view(&other)))).allowed);
}

#[test]
fn principals_match_the_peer_identity_and_addresses() {
    let authn = |m: Option<StringMatcher>| {
        id(principal::Identifier::Authenticated(
            principal::Authenticated { principal_name: m },
        ))
    };
    let r = |ids: Vec<Id>| rbac(rbac::Action::Allow, vec![("p", vec![any_perm()], ids)]);
    let sa = r(vec![authn(Some(exact(
        "spiffe://cluster.local/ns/default/sa/a",
    )))]);
    let mut i = input(None);
    assert!(!sa.evaluate(&i).allowed, "plain text has no principal");
    i.tls = true;
    i.peer_identity = Some("spiffe://cluster.local/ns/default/sa/a");
    assert!(sa.evaluate(&i).allowed);
    i.peer_identity = Some("spiffe://cluster.local/ns/default/sa/b");
    assert!(!sa.evaluate(&i).allowed);
    // `authenticated` without a name: any TLS connection.
    assert!(r(vec![authn(None)]).evaluate(&i).allowed);

    let direct = r(vec![id(principal::Identifier::DirectRemoteIp(cidr(
        "10.0.0.0", 24,
    )))]);
    let remote = r(vec![id(principal::Identifier::RemoteIp(cidr(
        "10.0.0.0", 24,
    )))]);
    assert!(direct.evaluate(&i).allowed);
    assert!(!remote.evaluate(&i).allowed);
    let not_remote = r(vec![id(principal::Identifier::NotId(Box::new(id(
        principal::Identifier::RemoteIp(cidr("10.0.0.0", 24)),
    ))))]);
    assert!(not_remote.evaluate(&i).allowed);
    let or = r(vec![id(principal::Identifier::OrIds(principal::Set {
        ids: vec![
            id(principal::Identifier::RemoteIp(cidr("10.0.0.0", 24))),
            id(principal::Identifier::RemoteIp(cidr("192.168.0.0", 16))),
        ],
    }))]);
    assert!(or.evaluate(&i).allowed);
}

#[test]
fn permissions_match_the_destination_and_sni() {
    let r = |p: P| rbac(rbac::Action::Allow, vec![("p", vec![p], vec![any_id()])]);
    let mut i = input(None);
    assert!(
        r(perm(permission::Rule::DestinationPort(9080)))
            .evaluate(&i)
            .allowed
    );
    assert!(
        !r(perm(permission::Rule::DestinationPort(8080)))
            .evaluate(&i)
            .allowed
    );
    assert!(
        r(perm(permission::Rule::DestinationIp(cidr("10.0.0.2", 32))))
            .evaluate(&i)
            .allowed
    );
    let sni = r(perm(permission::Rule::RequestedServerName(prefix("api."))));
    assert!(!sni.evaluate(&i).allowed);
    i.sni = Some("api.example.com");
    assert!(sni.evaluate(&i).allowed);
    let v6 = IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]);
    i.dst = SocketAddr::new(v6, 9080);
    assert!(
        r(perm(permission::Rule::DestinationIp(cidr("::1", 128))))
            .evaluate(&i)
            .allowed
    );
}

#[test]
fn metadata_principals_read_the_jwt_payload() {
    let list_dev = ValueMatcher {
        match_pattern: Some(value_matcher::MatchPattern::ListMatch(Box::new(
            ListMatcher {
                match_pattern: Some(list_matcher::MatchPattern::OneOf(Box::new(string_value(
                    exact("dev"),
                )))),
            },
        ))),
    };
    let r = rbac(
        rbac::Action::Allow,
        vec![
            (
                "user1",
                vec![any_perm()],
                vec![id(principal::Identifier::AndIds(principal::Set {
                    ids: vec![
                        jwt_claim(&["payload", "iss"], string_value(exact("https://issuer"))),
                        jwt_claim(&["payload", "sub"], string_value(exact("user-1"))),
                    ],
                }))],
            ),
            (
                "dev",
                vec![any_perm()],
                vec![jwt_claim(&["payload", "groups"], list_dev)],
            ),
        ],
    );
    let mut md = DynamicMetadata::default();
    let mut i = input(None);
    assert!(!r.evaluate(&i).allowed, "no metadata, no match");
    md.set(
        crate::jwt::JWT_FILTER,
        "payload",
        json!({"iss": "https://issuer", "sub": "user-1"}),
    );
    i.metadata = Some(&md);
    assert_eq!(r.evaluate(&i).policy, Some("user1"));
    let mut md2 = DynamicMetadata::default();
    md2.set(
        crate::jwt::JWT_FILTER,
        "payload",
        json!({"iss": "https://issuer", "sub": "user-2", "groups": ["ops", "dev"]}),
    );
    i.metadata = Some(&md2);
    assert_eq!(r.evaluate(&i).policy, Some("dev"));
}

#[test]
fn unsupported_fields_are_refused_by_path() {
    let bad = PbRbac {
        action: rbac::Action::Allow as i32,
        policies: HashMap::from([(
            "p".to_string(),
            PbPolicy {
                permissions: vec![perm(permission::Rule::UriTemplate(Default::default()))],
                principals: vec![id(principal::Identifier::FilterState(Default::default()))],
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    let errors = compile::rules("rules", &bad).unwrap_err();
    assert!(
        errors.contains(
            &r#"rules.policies["p"].permissions[0].uri_template: not supported"#.to_string()
        ),
        "{errors:?}"
    );
    assert!(
        errors.contains(
            &r#"rules.policies["p"].principals[0].filter_state: not supported"#.to_string()
        ),
        "{errors:?}"
    );
    let empty = PbRbac {
        policies: HashMap::from([("p".to_string(), PbPolicy::default())]),
        ..Default::default()
    };
    assert_eq!(compile::rules("rules", &empty).unwrap_err().len(), 2);
    let route_source = PbRbac {
        policies: HashMap::from([(
            "p".to_string(),
            PbPolicy {
                permissions: vec![any_perm()],
                principals: vec![id(principal::Identifier::SourcedMetadata(
                    SourcedMetadata {
                        metadata_matcher: None,
                        metadata_source: MetadataSource::Route as i32,
                    },
                ))],
                ..Default::default()
            },
        )]),
        ..Default::default()
    };
    let e = compile::rules("rules", &route_source).unwrap_err();
    assert!(e[0].contains("metadata_source"), "{e:?}");
}

#[test]
fn network_filter_requires_a_stat_prefix_and_first_byte_enforcement() {
    use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as Net;
    use prost::Message;
    let e = network_filter(
        &Net {
            enforcement_type: 1,
            ..Default::default()
        }
        .encode_to_vec(),
    )
    .unwrap_err();
    assert!(e.iter().any(|e| e.starts_with("stat_prefix")), "{e:?}");
    assert!(e.iter().any(|e| e.starts_with("enforcement_type")), "{e:?}");
    let ok = network_filter(
        &Net {
            stat_prefix: "tcp.".into(),
            ..Default::default()
        }
        .encode_to_vec(),
    )
    .unwrap();
    assert!(ok.rules.is_none());
}

#[tokio::test]
async fn network_gate_decides_on_the_first_bytes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deny_all = Arc::new(NetworkRbac {
        stat_prefix: "tcp.".into(),
        rules: Some(rbac(
            rbac::Action::Deny,
            vec![("all", vec![any_perm()], vec![any_id()])],
        )),
        shadow: None,
    });
    let stats = Arc::new(RbacStats::default());
    let (client, server) = tokio::io::duplex(64);
    let s = Arc::clone(&stats);
    let mut gated = network::gate(server, &[deny_all], &input(None), move |_| Arc::clone(&s));
    assert_eq!(
        stats.denied.load(Ordering::Relaxed),
        0,
        "nothing counted before data"
    );
    let mut client = client;
    client.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 8];
    let err = gated.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);
    assert_eq!(stats.denied.load(Ordering::Relaxed), 1);
}

#[test]
fn header_principals_match_request_headers() {
    let r = rbac(
        rbac::Action::Deny,
        vec![(
            "blocked",
            vec![perm(permission::Rule::AndRules(permission::Set {
                rules: vec![path(exact("/foo"))],
            }))],
            vec![id(principal::Identifier::AndIds(principal::Set {
                ids: vec![id(principal::Identifier::OrIds(principal::Set {
                    ids: vec![id(principal::Identifier::Header(header("x-block", "yes")))],
                }))],
            }))],
        )],
    );
    let mut blocked = req("GET", "/foo");
    blocked
        .headers
        .insert("x-block", http::HeaderValue::from_static("yes"));
    assert!(!r.evaluate(&input(Some(&view(&blocked)))).allowed);
    assert!(r.evaluate(&input(Some(&view(&req("GET", "/foo"))))).allowed);
}

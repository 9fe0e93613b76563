//! Route hash policies: each source, the combination order, `terminal`, and
//! the cookies a cookie policy with a `ttl` generates.

use std::net::IpAddr;

use envoy_types::pb::envoy::config::route::v3::route_action::{HashPolicy as PbHash, hash_policy};

use super::*;
use crate::balance::xxhash64;

fn table(policies: Vec<PbHash>) -> RouteTable {
    let mut action = to("c");
    action.hash_policy = policies;
    compiled(&config(vec![vhost(
        "h",
        &["*"],
        vec![route_with("", prefix("/"), action)],
    )]))
}

fn policy(spec: hash_policy::PolicySpecifier, terminal: bool) -> PbHash {
    PbHash {
        policy_specifier: Some(spec),
        terminal,
    }
}

fn by_header(name: &str) -> hash_policy::PolicySpecifier {
    hash_policy::PolicySpecifier::Header(hash_policy::Header {
        header_name: name.into(),
        regex_rewrite: None,
    })
}

fn by_query(name: &str) -> hash_policy::PolicySpecifier {
    hash_policy::PolicySpecifier::QueryParameter(hash_policy::QueryParameter { name: name.into() })
}

fn by_source_ip() -> hash_policy::PolicySpecifier {
    hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
        source_ip: true,
    })
}

fn by_cookie(name: &str, ttl: Option<i64>) -> hash_policy::PolicySpecifier {
    hash_policy::PolicySpecifier::Cookie(hash_policy::Cookie {
        name: name.into(),
        ttl: ttl.map(secs),
        path: "/".into(),
        attributes: vec![],
    })
}

fn hash_of(t: &RouteTable, r: &Req, ip: Option<IpAddr>) -> Option<u64> {
    t.select(&r.view(0)).unwrap().hash(&r.view(0), ip)
}

fn h(s: &str) -> u64 {
    xxhash64(s.as_bytes(), 0)
}

const IP: Option<IpAddr> = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7)));

#[test]
fn hash_header_values() {
    let t = table(vec![policy(by_header("X-User"), false)]);
    let r = req("h", "/").header("x-user", "alice");
    assert_eq!(hash_of(&t, &r, None), Some(h("alice")));
    // Same input, same hash; different input, different hash.
    assert_eq!(
        hash_of(&t, &req("h", "/").header("x-user", "alice"), None),
        Some(h("alice"))
    );
    assert_ne!(
        hash_of(&t, &req("h", "/").header("x-user", "bob"), None),
        Some(h("alice"))
    );
    // Absent header: no hash.
    assert_eq!(hash_of(&t, &req("h", "/"), IP), None);
    // Repeated header: all values, sorted, chained through the seed (the
    // order of the values does not matter, as in Envoy).
    let both = xxhash64(b"b", xxhash64(b"a", 0));
    let r = req("h", "/").header("x-user", "b").header("x-user", "a");
    assert_eq!(hash_of(&t, &r, None), Some(both));
    let r = req("h", "/").header("x-user", "a").header("x-user", "b");
    assert_eq!(hash_of(&t, &r, None), Some(both));
    // Pseudo-headers are the request's.
    let t = table(vec![policy(by_header(":authority"), false)]);
    assert_eq!(hash_of(&t, &req("h", "/"), None), Some(h("h")));
    // The route without policies has no hash.
    let t = table(vec![]);
    assert_eq!(hash_of(&t, &req("h", "/").header("x-user", "a"), IP), None);
}

#[test]
fn hash_header_regex_rewrite() {
    let t = table(vec![policy(
        hash_policy::PolicySpecifier::Header(hash_policy::Header {
            header_name: "x-session".into(),
            regex_rewrite: Some(RegexMatchAndSubstitute {
                pattern: Some(regex_match("^([a-z]+)-.*$")),
                substitution: "\\1".into(),
            }),
        }),
        false,
    )]);
    let a = hash_of(&t, &req("h", "/").header("x-session", "eu-1234"), None);
    let b = hash_of(&t, &req("h", "/").header("x-session", "eu-9999"), None);
    assert_eq!(a, Some(h("eu")));
    assert_eq!(a, b);
}

#[test]
fn hash_query_source_ip_and_cookie() {
    let t = table(vec![policy(by_query("user"), false)]);
    assert_eq!(
        hash_of(&t, &req("h", "/p?x=1&user=u%201&user=v"), None),
        Some(h("u%201"))
    );
    assert_eq!(hash_of(&t, &req("h", "/p?user"), None), Some(h("")));
    assert_eq!(hash_of(&t, &req("h", "/p?username=x"), None), None);
    assert_eq!(hash_of(&t, &req("h", "/p"), None), None);

    let t = table(vec![policy(by_source_ip(), false)]);
    assert_eq!(hash_of(&t, &req("h", "/"), IP), Some(h("10.0.0.7")));
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(
        hash_of(&t, &req("h", "/"), Some(v6)),
        Some(h("2001:db8::1"))
    );
    assert_eq!(hash_of(&t, &req("h", "/"), None), None);

    let t = table(vec![policy(by_cookie("session", None), false)]);
    let r = req("h", "/").header("cookie", "a=1; session=\"s1\"; b=2");
    assert_eq!(hash_of(&t, &r, IP), Some(h("s1")));
    let r = req("h", "/")
        .header("cookie", "a=1")
        .header("cookie", "session=s2");
    assert_eq!(hash_of(&t, &r, IP), Some(h("s2")));
    // No cookie and no ttl: no hash, no cookie to set.
    let r = req("h", "/").header("cookie", "sessionx=1; session=");
    assert_eq!(hash_of(&t, &r, IP), None);
    let s = t.select(&r.view(0)).unwrap();
    assert!(s.cookies_to_set(&r.view(0), IP).is_empty());
}

#[test]
fn hash_cookie_generated_with_ttl() {
    let mut cookie = by_cookie("sticky", Some(3600));
    if let hash_policy::PolicySpecifier::Cookie(c) = &mut cookie {
        c.attributes = vec![
            hash_policy::CookieAttribute {
                name: "SameSite".into(),
                value: "Strict".into(),
            },
            hash_policy::CookieAttribute {
                name: "Secure".into(),
                value: String::new(),
            },
        ];
    }
    let t = table(vec![policy(cookie, false)]);
    let r = req("h", "/");
    let s = t.select(&r.view(0)).unwrap();
    let set = s.cookies_to_set(&r.view(0), IP);
    assert_eq!(set.len(), 1);
    let c = &set[0];
    assert_eq!(c.name, "sticky");
    assert_eq!(c.value, format!("{:016x}", h("10.0.0.7")));
    assert_eq!(c.max_age, Some(Duration::from_secs(3600)));
    assert_eq!(c.path, "/");
    assert_eq!(
        c.header_value(),
        format!(
            "sticky=\"{}\"; Max-Age=3600; Path=/; SameSite=Strict; Secure; HttpOnly",
            c.value
        )
    );
    // The hash is the generated value's, the one the next request (carrying
    // the cookie) gets.
    let hash = s.hash(&r.view(0), IP);
    assert_eq!(hash, Some(h(&c.value)));
    let next = req("h", "/").header("cookie", &format!("sticky={}", c.value));
    assert_eq!(hash_of(&t, &next, IP), hash);
    let ns = t.select(&next.view(0)).unwrap();
    assert!(ns.cookies_to_set(&next.view(0), IP).is_empty());
    // Stable per client IP.
    assert_eq!(s.cookies_to_set(&r.view(0), IP), set);

    // A ttl of zero: a session cookie (no Max-Age).
    let t = table(vec![policy(by_cookie("sticky", Some(0)), false)]);
    let s = t.select(&r.view(0)).unwrap();
    let set = s.cookies_to_set(&r.view(0), IP);
    assert_eq!(set[0].max_age, None);
    assert!(!set[0].header_value().contains("Max-Age"));
}

#[test]
fn hash_combination_order_and_terminal() {
    let r = req("h", "/?q=v").header("x-a", "a").header("x-b", "b");
    let t = table(vec![
        policy(by_header("x-a"), false),
        policy(by_header("x-b"), false),
    ]);
    assert_eq!(hash_of(&t, &r, None), Some(h("a").rotate_left(1) ^ h("b")));
    // The order matters.
    let t2 = table(vec![
        policy(by_header("x-b"), false),
        policy(by_header("x-a"), false),
    ]);
    assert_ne!(hash_of(&t2, &r, None), hash_of(&t, &r, None));
    // A policy without a value is skipped.
    let t = table(vec![
        policy(by_header("x-missing"), false),
        policy(by_header("x-a"), false),
        policy(by_query("q"), false),
    ]);
    assert_eq!(hash_of(&t, &r, None), Some(h("a").rotate_left(1) ^ h("v")));
    // Terminal: stops once a hash exists.
    let t = table(vec![
        policy(by_header("x-a"), true),
        policy(by_header("x-b"), false),
    ]);
    assert_eq!(hash_of(&t, &r, None), Some(h("a")));
    // A terminal policy without a value falls through to the next ones.
    let t = table(vec![
        policy(by_header("x-missing"), true),
        policy(by_header("x-b"), false),
    ]);
    assert_eq!(hash_of(&t, &r, None), Some(h("b")));
    // Envoy stops after a terminal policy when an earlier one gave a hash,
    // even if the terminal one gave none.
    let t = table(vec![
        policy(by_header("x-a"), false),
        policy(by_header("x-missing"), true),
        policy(by_header("x-b"), false),
    ]);
    assert_eq!(hash_of(&t, &r, None), Some(h("a")));
    // A cookie policy after a terminal stop generates no cookie.
    let t = table(vec![
        policy(by_header("x-a"), true),
        policy(by_cookie("sticky", Some(60)), false),
    ]);
    let s = t.select(&r.view(0)).unwrap();
    assert!(s.cookies_to_set(&r.view(0), IP).is_empty());
    // `source_ip: false` adds no policy.
    let t = table(vec![policy(
        hash_policy::PolicySpecifier::ConnectionProperties(hash_policy::ConnectionProperties {
            source_ip: false,
        }),
        false,
    )]);
    assert_eq!(hash_of(&t, &r, IP), None);
}

#[test]
fn hash_policy_refusals_name_fields() {
    let mut action = to("c");
    action.hash_policy = vec![
        policy(
            hash_policy::PolicySpecifier::FilterState(hash_policy::FilterState { key: "k".into() }),
            false,
        ),
        policy(by_header(""), false),
        policy(
            hash_policy::PolicySpecifier::Header(hash_policy::Header {
                header_name: "x".into(),
                regex_rewrite: Some(RegexMatchAndSubstitute {
                    pattern: Some(regex_match("(")),
                    substitution: String::new(),
                }),
            }),
            false,
        ),
        policy(by_cookie("", None), false),
        PbHash {
            policy_specifier: None,
            terminal: false,
        },
    ];
    let e = errors(&config(vec![vhost(
        "h",
        &["*"],
        vec![route_with("", prefix("/"), action)],
    )]));
    let at = "virtual_hosts[0].routes[0].route.hash_policy";
    assert_eq!(e.len(), 5, "{e:#?}");
    assert!(
        e[0].starts_with(&format!("{at}[0].filter_state: ")),
        "{e:#?}"
    );
    assert_eq!(e[1], format!("{at}[1].header.header_name: empty"));
    assert!(
        e[2].starts_with(&format!(
            "{at}[2].header.regex_rewrite.pattern: invalid regex"
        )),
        "{e:#?}"
    );
    assert_eq!(e[3], format!("{at}[3].cookie.name: empty"));
    assert_eq!(e[4], format!("{at}[4]: no policy specifier"));
}

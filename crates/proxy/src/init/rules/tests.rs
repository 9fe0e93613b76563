use super::*;

/// istio-init's sidecar defaults, as `proxy init` with no flags parses them.
fn defaults() -> Capture {
    crate::init::Config::for_tests(&[])
        .capture()
        .expect("defaults are valid")
}

fn with(flags: &[&str]) -> Capture {
    crate::init::Config::for_tests(flags)
        .capture()
        .expect("flags are valid")
}

const DEFAULT_V4: &str = "\
*nat
:ISTIO_INBOUND - [0:0]
:ISTIO_REDIRECT - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";

#[test]
fn default_v4_rules_are_istio_inits() {
    assert_eq!(
        install_script(&defaults(), Family::V4, &Installed::default()),
        DEFAULT_V4
    );
}

#[test]
fn default_v6_rules_use_v6_loopback_and_passthrough_addresses() {
    let v6 = install_script(&defaults(), Family::V6, &Installed::default());
    let expected = DEFAULT_V4
        .replace("127.0.0.6/32", "::6/128")
        .replace("127.0.0.1/32", "::1/128");
    assert_eq!(v6, expected);
}

#[test]
fn ports_and_owners_follow_their_flags() {
    let rules = capture_rules(
        &with(&[
            "-p", "16001", "-z", "16006", "-e", "16008", "-u", "7,8", "-g", "9",
        ]),
        Family::V4,
    )
    .join("\n");
    assert!(rules.contains("-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 16001"));
    assert!(rules.contains("-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006"));
    assert!(rules.contains("-A ISTIO_INBOUND -p tcp --dport 16008 -j RETURN"));
    for uid in ["7", "8"] {
        assert!(rules.contains(&format!("-m owner --uid-owner {uid} -j RETURN")));
        assert!(rules.contains(&format!(
            "! --dport 16008 -m owner --uid-owner {uid} -j ISTIO_IN_REDIRECT"
        )));
    }
    assert!(rules.contains("-m owner --gid-owner 9 -j RETURN"));
    assert!(!rules.contains("1337"));
}

#[test]
fn proxy_gid_defaults_to_the_uid() {
    let capture = with(&["-u", "4242"]);
    assert_eq!(capture.proxy_gids, vec![4242]);
}

#[test]
fn explicit_inbound_ports_are_captured_alone() {
    let rules = capture_rules(&with(&["-b", "8080,9090"]), Family::V4);
    let inbound: Vec<&str> = rules
        .iter()
        .map(String::as_str)
        .filter(|r| r.starts_with("-A ISTIO_INBOUND") || r.starts_with("-A PREROUTING"))
        .collect();
    assert_eq!(
        inbound,
        [
            "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A ISTIO_INBOUND -p tcp --dport 8080 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_INBOUND -p tcp --dport 9090 -j ISTIO_IN_REDIRECT",
        ]
    );
}

#[test]
fn empty_inbound_ports_capture_no_inbound() {
    let rules = capture_rules(&with(&["-b", ""]), Family::V4);
    let inbound: Vec<&str> = rules
        .iter()
        .map(String::as_str)
        .filter(|r| r.contains("PREROUTING") || r.starts_with("-A ISTIO_INBOUND"))
        .collect();
    assert_eq!(inbound, ["-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN"]);
}

#[test]
fn excluded_inbound_ports_return_before_the_redirect() {
    let rules = capture_rules(&with(&["-d", "22"]), Family::V4);
    let at = |rule: &str| rules.iter().position(|r| r == rule).expect(rule);
    assert!(
        at("-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN")
            < at("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT")
    );
    assert!(!rules.iter().any(|r| r.contains("--dport 15090")));
}

#[test]
fn outbound_ranges_are_split_by_family() {
    let capture = with(&["-i", "10.0.0.0/8,fd00::/8", "-x", "10.1.0.0/16,fd00:1::/32"]);
    let v4 = capture_rules(&capture, Family::V4).join("\n");
    let v6 = capture_rules(&capture, Family::V6).join("\n");
    assert!(v4.contains("-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN"));
    assert!(v4.ends_with("-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT"));
    assert!(!v4.contains("fd00"));
    assert!(v6.contains("-A ISTIO_OUTPUT -d fd00:1::/32 -j RETURN"));
    assert!(v6.ends_with("-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT"));
    assert!(!v6.contains("10.0.0.0"));
    assert!(!v4.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"));
}

#[test]
fn empty_outbound_ranges_capture_only_the_listed_ports() {
    let rules = capture_rules(&with(&["-i", "", "-q", "80,443"]), Family::V4);
    let tail: Vec<&str> = rules.iter().rev().take(2).map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "-A ISTIO_OUTPUT -p tcp --dport 443 -j ISTIO_REDIRECT",
            "-A ISTIO_OUTPUT -p tcp --dport 80 -j ISTIO_REDIRECT",
        ]
    );
}

#[test]
fn excluded_outbound_ports_return_first_for_tcp_and_udp() {
    let rules = capture_rules(&with(&["-o", "3306"]), Family::V4);
    let first_output = rules
        .iter()
        .position(|r| r.starts_with("-A ISTIO_OUTPUT"))
        .expect("output rules");
    assert_eq!(
        rules[first_output..first_output + 2],
        [
            "-A ISTIO_OUTPUT -p tcp --dport 3306 -j RETURN",
            "-A ISTIO_OUTPUT -p udp --dport 3306 -j RETURN",
        ]
    );
}

#[test]
fn a_captured_loopback_range_keeps_loopback_traffic_captured() {
    let rules = capture_rules(&with(&["-i", "127.0.0.0/8"]), Family::V4).join("\n");
    assert!(!rules.contains("-o lo -m owner ! --uid-owner"));
    assert!(rules.contains("-A ISTIO_OUTPUT -d 127.0.0.0/8 -j ISTIO_REDIRECT"));
}

const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*mangle
:PREROUTING ACCEPT [0:0]
:ISTIO_DIVERT - [0:0]
-A PREROUTING -p tcp -j ISTIO_DIVERT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_OUTPUT_DNS - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A OUTPUT -d 192.0.2.1/32 -j RETURN
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -j ISTIO_OUTPUT_DNS
-A ISTIO_INBOUND -p tcp -m tcp --dport 15008 -j RETURN
COMMIT
";

#[test]
fn installed_rules_are_read_from_the_nat_table_only() {
    let installed = Installed::parse(SAVED);
    assert_eq!(
        installed.chains,
        ["ISTIO_INBOUND", "ISTIO_OUTPUT", "ISTIO_OUTPUT_DNS"]
    );
    assert_eq!(
        installed.jumps,
        [
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A OUTPUT -j ISTIO_OUTPUT"
        ]
    );
    assert!(Installed::parse("*nat\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n").is_empty());
}

#[test]
fn removal_deletes_jumps_then_flushes_then_deletes_chains() {
    let script = remove_script(&Installed::parse(SAVED)).expect("something to remove");
    assert_eq!(
        script,
        "\
*nat
-D PREROUTING -p tcp -j ISTIO_INBOUND
-D OUTPUT -j ISTIO_OUTPUT
-F ISTIO_INBOUND
-F ISTIO_OUTPUT
-F ISTIO_OUTPUT_DNS
-X ISTIO_INBOUND
-X ISTIO_OUTPUT
-X ISTIO_OUTPUT_DNS
COMMIT
"
    );
    assert_eq!(remove_script(&Installed::default()), None);
}

#[test]
fn reinstalling_replaces_the_old_rules() {
    let script = install_script(&defaults(), Family::V4, &Installed::parse(SAVED));
    let lines: Vec<&str> = script.lines().collect();
    // Declarations (which flush), then the old jumps out, the stale chain gone,
    // then the new rules.
    assert_eq!(
        lines[..10],
        [
            "*nat",
            ":ISTIO_INBOUND - [0:0]",
            ":ISTIO_REDIRECT - [0:0]",
            ":ISTIO_IN_REDIRECT - [0:0]",
            ":ISTIO_OUTPUT - [0:0]",
            "-D PREROUTING -p tcp -j ISTIO_INBOUND",
            "-D OUTPUT -j ISTIO_OUTPUT",
            "-F ISTIO_OUTPUT_DNS",
            "-X ISTIO_OUTPUT_DNS",
            "-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN",
        ]
    );
    assert_eq!(
        script.matches("-A OUTPUT -j ISTIO_OUTPUT").count(),
        1,
        "{script}"
    );
}

#[test]
fn cidrs_parse_strictly() {
    assert_eq!(
        "10.0.0.0/8".parse::<Cidr>().expect("valid").to_string(),
        "10.0.0.0/8"
    );
    assert_eq!(
        "fd00::/8".parse::<Cidr>().expect("valid").to_string(),
        "fd00::/8"
    );
    for bad in [
        "10.0.0.0",
        "10.0.0.0/33",
        "fd00::/129",
        "ten/8",
        "10.0.0.0/x",
    ] {
        assert!(bad.parse::<Cidr>().is_err(), "{bad}");
    }
}

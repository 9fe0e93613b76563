//! The capture rules as text, with no side effects: [`Capture`] (validated flags)
//! → [`capture_rules`] (the `nat` rules of one address family, in istio-iptables'
//! order) → [`install_script`] / [`remove_script`] (the `iptables-restore
//! --noflush` input that replaces or deletes whatever `ISTIO_*` rules the current
//! `iptables-save -t nat` output shows). Running the programs is
//! [`super::exec`]'s job.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Prefix of every chain `proxy init` owns (and removes).
pub const CHAIN_PREFIX: &str = "ISTIO_";
/// Inbound traffic (from `PREROUTING`) is sorted here.
pub const ISTIO_INBOUND: &str = "ISTIO_INBOUND";
/// Outbound traffic (from `OUTPUT`) is sorted here.
pub const ISTIO_OUTPUT: &str = "ISTIO_OUTPUT";
/// Redirects to the outbound listener (`--envoy-port`).
pub const ISTIO_REDIRECT: &str = "ISTIO_REDIRECT";
/// Redirects to the inbound listener (`--inbound-capture-port`).
pub const ISTIO_IN_REDIRECT: &str = "ISTIO_IN_REDIRECT";

/// The chains `proxy init` creates, in the order istio-iptables declares them.
pub const CHAINS: [&str; 4] = [
    ISTIO_INBOUND,
    ISTIO_REDIRECT,
    ISTIO_IN_REDIRECT,
    ISTIO_OUTPUT,
];

/// Address family of a rule set: `iptables` (IPv4) or `ip6tables` (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4, applied with `iptables-restore`.
    V4,
    /// IPv6, applied with `ip6tables-restore`.
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    /// The program that applies a rule set of this family.
    pub fn restore_program(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }

    /// The program that prints the current rules of this family.
    pub fn save_program(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    /// `IPv4` or `IPv6`, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    /// The source address the proxy's inbound passthrough binds to, so its
    /// connections to the application are not captured again.
    fn passthrough_source(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        }
    }

    /// The loopback host address traffic to which is never captured.
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    fn contains(self, addr: IpAddr) -> bool {
        matches!(
            (self, addr),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// A list flag that also accepts `*` (everything).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    /// `*`: every port or address.
    All,
    /// Exactly these; empty selects nothing.
    Only(Vec<T>),
}

/// An IP range in CIDR form (`10.0.0.0/8`, `fd00::/8`), as given (host bits are
/// kept; iptables masks them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The address part.
    pub addr: IpAddr,
    /// The prefix length: at most 32 for IPv4, 128 for IPv6.
    pub prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| {
            format!("`{s}` is not in CIDR form (ADDRESS/PREFIX, e.g. 10.0.0.0/8)")
        })?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}`: `{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("`{s}`: the prefix length must be a number from 0 to {max}"))?;
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The validated settings the rules are generated from (see
/// [`super::Config::capture`] for the flags each field comes from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// Outbound traffic is redirected to this port (`--envoy-port`).
    pub envoy_port: u16,
    /// Inbound traffic is redirected to this port (`--inbound-capture-port`).
    pub inbound_capture_port: u16,
    /// The HBONE tunnel port, never captured inbound (`--inbound-tunnel-port`).
    pub inbound_tunnel_port: u16,
    /// Traffic of these users is not captured (`--proxy-uid`).
    pub proxy_uids: Vec<u32>,
    /// Traffic of these groups is not captured (`--proxy-gid`).
    pub proxy_gids: Vec<u32>,
    /// Inbound ports captured (`--inbound-ports`).
    pub inbound_ports: Selection<u16>,
    /// Inbound ports left alone when every port is captured
    /// (`--exclude-inbound-ports`).
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound destinations captured (`--outbound-ip-ranges`).
    pub outbound_ranges: Selection<Cidr>,
    /// Outbound destinations left alone (`--exclude-outbound-ip-ranges`).
    pub exclude_outbound_ranges: Vec<Cidr>,
    /// Outbound ports captured whatever the destination (`--outbound-ports`).
    pub outbound_ports: Vec<u16>,
    /// Outbound ports left alone (`--exclude-outbound-ports`).
    pub exclude_outbound_ports: Vec<u16>,
}

/// The `nat` table rules of `family`, as `iptables-restore` lines without the
/// table header (`-A CHAIN ...`), in the order istio-iptables appends them: the
/// redirect chains, the inbound jump and its exclusions, then `ISTIO_OUTPUT`
/// (excluded ports, the proxy's own traffic, loopback, excluded ranges, and last
/// what is captured).
pub fn capture_rules(capture: &Capture, family: Family) -> Vec<String> {
    let mut rules = Vec::new();
    let mut add = |chain: &str, args: String| rules.push(format!("-A {chain} {args}"));
    let tunnel = capture.inbound_tunnel_port;

    add(ISTIO_INBOUND, format!("-p tcp --dport {tunnel} -j RETURN"));
    add(
        ISTIO_REDIRECT,
        format!("-p tcp -j REDIRECT --to-ports {}", capture.envoy_port),
    );
    add(
        ISTIO_IN_REDIRECT,
        format!(
            "-p tcp -j REDIRECT --to-ports {}",
            capture.inbound_capture_port
        ),
    );

    // Inbound: PREROUTING only sees packets that arrive on an interface.
    match &capture.inbound_ports {
        Selection::Only(ports) if ports.is_empty() => {}
        Selection::All => {
            add("PREROUTING", format!("-p tcp -j {ISTIO_INBOUND}"));
            for port in &capture.exclude_inbound_ports {
                add(ISTIO_INBOUND, format!("-p tcp --dport {port} -j RETURN"));
            }
            add(ISTIO_INBOUND, format!("-p tcp -j {ISTIO_IN_REDIRECT}"));
        }
        Selection::Only(ports) => {
            add("PREROUTING", format!("-p tcp -j {ISTIO_INBOUND}"));
            for port in ports {
                add(
                    ISTIO_INBOUND,
                    format!("-p tcp --dport {port} -j {ISTIO_IN_REDIRECT}"),
                );
            }
        }
    }

    // Outbound: everything locally generated.
    add("OUTPUT", format!("-j {ISTIO_OUTPUT}"));
    for port in &capture.exclude_outbound_ports {
        add(ISTIO_OUTPUT, format!("-p tcp --dport {port} -j RETURN"));
        add(ISTIO_OUTPUT, format!("-p udp --dport {port} -j RETURN"));
    }
    // The inbound passthrough's connections to the application.
    add(
        ISTIO_OUTPUT,
        format!("-o lo -s {} -j RETURN", family.passthrough_source()),
    );
    // An application calling its own service through the proxy: app → outbound
    // listener (as the proxy user) → back over lo to the pod address → inbound
    // listener. Other loopback traffic of other users stays local unless loopback
    // ranges are captured explicitly.
    let loopback_captured = match &capture.outbound_ranges {
        Selection::All => false,
        Selection::Only(ranges) => ranges.iter().any(|r| r.addr.is_loopback()),
    };
    let lo = family.loopback();
    let owners = capture
        .proxy_uids
        .iter()
        .map(|uid| ("--uid-owner", *uid))
        .chain(capture.proxy_gids.iter().map(|gid| ("--gid-owner", *gid)));
    for (owner, id) in owners {
        add(
            ISTIO_OUTPUT,
            format!(
                "-o lo ! -d {lo} -p tcp ! --dport {tunnel} -m owner {owner} {id} -j {ISTIO_IN_REDIRECT}"
            ),
        );
        if !loopback_captured {
            add(
                ISTIO_OUTPUT,
                format!("-o lo -m owner ! {owner} {id} -j RETURN"),
            );
        }
        // The proxy's own traffic is never captured (no loops).
        add(ISTIO_OUTPUT, format!("-m owner {owner} {id} -j RETURN"));
    }
    add(ISTIO_OUTPUT, format!("-d {lo} -j RETURN"));
    for cidr in &capture.exclude_outbound_ranges {
        if family.contains(cidr.addr) {
            add(ISTIO_OUTPUT, format!("-d {cidr} -j RETURN"));
        }
    }
    for port in &capture.outbound_ports {
        add(
            ISTIO_OUTPUT,
            format!("-p tcp --dport {port} -j {ISTIO_REDIRECT}"),
        );
    }
    match &capture.outbound_ranges {
        Selection::All => add(ISTIO_OUTPUT, format!("-j {ISTIO_REDIRECT}")),
        Selection::Only(ranges) => {
            for cidr in ranges.iter().filter(|c| family.contains(c.addr)) {
                add(ISTIO_OUTPUT, format!("-d {cidr} -j {ISTIO_REDIRECT}"));
            }
        }
    }
    rules
}

/// What of ours an `iptables-save` output holds in its `nat` table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    /// Chains named `ISTIO_*`, in the order listed.
    pub chains: Vec<String>,
    /// Rules of other chains (`PREROUTING`, `OUTPUT`, ...) that jump to an
    /// `ISTIO_*` chain, as printed (`-A OUTPUT -j ISTIO_OUTPUT`).
    pub jumps: Vec<String>,
}

impl Installed {
    /// Reads the `*nat` section of `iptables-save` output (other tables are
    /// ignored: `proxy init` only writes `nat`).
    pub fn parse(save: &str) -> Installed {
        let mut installed = Installed::default();
        let mut in_nat = false;
        for line in save.lines().map(str::trim) {
            if let Some(table) = line.strip_prefix('*') {
                in_nat = table.trim() == "nat";
            } else if !in_nat {
                continue;
            } else if let Some(chain) = line.strip_prefix(':') {
                let name = chain.split_whitespace().next().unwrap_or_default();
                if name.starts_with(CHAIN_PREFIX) {
                    installed.chains.push(name.to_owned());
                }
            } else if let Some(rule) = line.strip_prefix("-A ") {
                let mut words = rule.split_whitespace();
                let chain = words.next().unwrap_or_default();
                if chain.starts_with(CHAIN_PREFIX) {
                    continue;
                }
                let words: Vec<&str> = words.collect();
                let jumps_to_ours = words.windows(2).any(|pair| {
                    matches!(pair[0], "-j" | "--jump" | "-g" | "--goto")
                        && pair[1].starts_with(CHAIN_PREFIX)
                });
                if jumps_to_ours {
                    installed.jumps.push(line.to_owned());
                }
            }
        }
        installed
    }

    /// True when nothing of ours is installed.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }
}

/// The `iptables-restore --noflush` input that installs `capture` for `family`
/// in one transaction, replacing what `installed` shows: the chains are declared
/// (created, or flushed when they exist), the old jumps into them deleted, stale
/// `ISTIO_*` chains flushed and deleted, and the rules of [`capture_rules`]
/// appended. Applied twice it leaves the same rules, never duplicates.
pub fn install_script(capture: &Capture, family: Family, installed: &Installed) -> String {
    let mut out = String::from("*nat\n");
    for chain in CHAINS {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    push_removal(&mut out, installed, |chain| !CHAINS.contains(&chain));
    for rule in capture_rules(capture, family) {
        out.push_str(&rule);
        out.push('\n');
    }
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` input that deletes every jump into an
/// `ISTIO_*` chain and then those chains, or `None` when `installed` is empty
/// (nothing to do: removal is idempotent).
pub fn remove_script(installed: &Installed) -> Option<String> {
    if installed.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    push_removal(&mut out, installed, |_| true);
    out.push_str("COMMIT\n");
    Some(out)
}

/// Deletes the jumps, then flushes every chain `delete` selects and deletes it
/// (all flushes first: the chains may jump to each other).
fn push_removal(out: &mut String, installed: &Installed, delete: impl Fn(&str) -> bool) {
    for jump in &installed.jumps {
        // `-A CHAIN spec` → `-D CHAIN spec`: iptables-save prints specs that
        // iptables-restore reads back.
        out.push_str("-D");
        out.push_str(jump.strip_prefix("-A").unwrap_or(jump));
        out.push('\n');
    }
    let chains: Vec<&str> = installed
        .chains
        .iter()
        .map(String::as_str)
        .filter(|chain| delete(chain))
        .collect();
    for chain in &chains {
        out.push_str(&format!("-F {chain}\n"));
    }
    for chain in &chains {
        out.push_str(&format!("-X {chain}\n"));
    }
}

#[cfg(test)]
mod tests;

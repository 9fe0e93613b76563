//! `proxy init`: installs (or with `--remove` deletes) the iptables `nat` rules
//! that capture a pod's traffic for its sidecar, the rules Istio's istio-init
//! container installs with `istio-iptables`, under the same chain names
//! (`ISTIO_INBOUND`, `ISTIO_OUTPUT`, `ISTIO_REDIRECT`, `ISTIO_IN_REDIRECT`) and with
//! the same flags, so an injector template that runs istio-init can run this.
//!
//! It owns the flags ([`Config`]), their validation into a [`rules::Capture`], and
//! applying the rules; it does not read the bootstrap or start the proxy, and it
//! does not accept the redirected connections (the listeners do, asking
//! [`crate::net::original_dst`] where they were going).
//!
//! The path of one run, per address family (IPv4, then IPv6 where it applies):
//! `iptables-save -t nat` (what is installed now) → [`rules::install_script`] or
//! [`rules::remove_script`] (pure text) → `iptables-restore --noflush` with that
//! text on stdin ([`exec`]), one transaction, so the rules change all at once or
//! not at all. Installing over an earlier install replaces its rules; removing
//! when nothing is installed does nothing and succeeds.

mod exec;
pub mod rules;

use std::path::Path;

use rules::{Capture, Cidr, Family, Installed, Selection};

/// Flags of `proxy init` (named as istio-iptables' flags, with the same short
/// letters and Istio's long names as aliases).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "init",
    about = "Install the iptables rules that capture this pod's traffic for the sidecar, as \
             istio-init does (or remove them with --remove), then exit.",
    long_about = "Install the iptables rules that capture this pod's traffic for the sidecar, as \
                  istio-init (istio-iptables) does, then exit.\n\n\
                  Outbound TCP from any user but --proxy-uid/--proxy-gid is redirected to \
                  --envoy-port; inbound TCP arriving on the pod's interfaces to --inbound-ports is \
                  redirected to --inbound-capture-port. The rules live in the nat table, in the \
                  chains ISTIO_INBOUND, ISTIO_OUTPUT, ISTIO_REDIRECT and ISTIO_IN_REDIRECT, jumped \
                  to from PREROUTING and OUTPUT. They are applied in one transaction with \
                  `iptables-restore --noflush` (and `ip6tables-restore` for IPv6, with ::6 and \
                  ::1/128 in place of 127.0.0.6 and 127.0.0.1/32); running init again replaces \
                  them rather than adding duplicates. Needs root or CAP_NET_ADMIN and CAP_NET_RAW \
                  in the pod's network namespace, and the iptables package."
)]
pub struct Config {
    /// Port of the proxy's outbound listener, to which outbound TCP is redirected.
    #[arg(
        short = 'p',
        long,
        env = "ENVOY_PORT",
        default_value_t = 15001,
        value_name = "PORT"
    )]
    pub envoy_port: u16,
    /// Port of the proxy's inbound listener, to which inbound TCP is redirected.
    #[arg(
        short = 'z',
        long,
        env = "INBOUND_CAPTURE_PORT",
        default_value_t = 15006,
        value_name = "PORT"
    )]
    pub inbound_capture_port: u16,
    /// The HBONE tunnel port: inbound traffic to it is never captured, and the
    /// proxy's own loopback connections to it are not sent back to the inbound
    /// listener.
    #[arg(
        short = 'e',
        long,
        env = "INBOUND_TUNNEL_PORT",
        default_value_t = 15008,
        value_name = "PORT"
    )]
    pub inbound_tunnel_port: u16,
    /// Comma-separated user ids whose traffic is not captured: the proxy's own
    /// (istio-proxy is 1337).
    #[arg(
        short = 'u',
        long,
        env = "PROXY_UID",
        default_value = "1337",
        value_name = "UIDS"
    )]
    pub proxy_uid: String,
    /// Comma-separated group ids whose traffic is not captured; defaults to the
    /// --proxy-uid values.
    #[arg(short = 'g', long, env = "PROXY_GID", value_name = "GIDS")]
    pub proxy_gid: Option<String>,
    /// How inbound connections are redirected: only REDIRECT (nat) is supported;
    /// TPROXY is refused.
    #[arg(
        short = 'm',
        long,
        alias = "istio-inbound-interception-mode",
        env = "ISTIO_INBOUND_INTERCEPTION_MODE",
        default_value = "REDIRECT",
        value_name = "MODE"
    )]
    pub inbound_interception_mode: String,
    /// Comma-separated inbound ports to capture, `*` for all; empty captures no
    /// inbound traffic.
    #[arg(
        short = 'b',
        long,
        alias = "istio-inbound-ports",
        env = "ISTIO_INBOUND_PORTS",
        default_value = "*",
        value_name = "PORTS"
    )]
    pub inbound_ports: String,
    /// Comma-separated inbound ports not to capture (the proxy's admin/health
    /// ports by default; the tunnel port is always excluded). Only applies when
    /// --inbound-ports is `*`, as in Istio.
    #[arg(
        short = 'd',
        long,
        alias = "istio-local-exclude-ports",
        env = "ISTIO_LOCAL_EXCLUDE_PORTS",
        default_value = "15090,15021,15020",
        value_name = "PORTS"
    )]
    pub exclude_inbound_ports: String,
    /// Comma-separated destination ranges (CIDR, IPv4 and IPv6 mixed) whose
    /// outbound traffic is captured, `*` for all; empty captures only
    /// --outbound-ports.
    #[arg(
        short = 'i',
        long,
        alias = "istio-service-cidr",
        env = "ISTIO_SERVICE_CIDR",
        default_value = "*",
        value_name = "CIDRS"
    )]
    pub outbound_ip_ranges: String,
    /// Comma-separated destination ranges (CIDR) whose outbound traffic is never
    /// captured.
    #[arg(
        short = 'x',
        long,
        alias = "istio-service-exclude-cidr",
        env = "ISTIO_SERVICE_EXCLUDE_CIDR",
        default_value = "",
        value_name = "CIDRS"
    )]
    pub exclude_outbound_ip_ranges: String,
    /// Comma-separated destination ports whose outbound TCP is captured whatever
    /// --outbound-ip-ranges says.
    #[arg(
        short = 'q',
        long,
        env = "ISTIO_OUTBOUND_PORTS",
        default_value = "",
        value_name = "PORTS"
    )]
    pub outbound_ports: String,
    /// Comma-separated destination ports whose outbound traffic (TCP and UDP) is
    /// never captured.
    #[arg(
        short = 'o',
        long,
        alias = "istio-local-outbound-ports-exclude",
        env = "ISTIO_LOCAL_OUTBOUND_PORTS_EXCLUDE",
        default_value = "",
        value_name = "PORTS"
    )]
    pub exclude_outbound_ports: String,
    /// Whether to apply the IPv6 rules too: `auto` does where ip6tables-restore
    /// is installed, the kernel has IPv6 and ip6tables can read its nat table;
    /// `always` fails when it cannot; `never` leaves IPv6 alone.
    #[arg(long, value_enum, default_value_t = Ipv6::Auto, value_name = "WHEN")]
    pub ipv6: Ipv6,
    /// Print the iptables-restore input for IPv4 and IPv6 and change nothing. The
    /// current rules are read (iptables-save) when possible, so the text is what
    /// would be applied; otherwise it is shown for a table without ISTIO_ chains.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Remove instead of install: delete the jumps into ISTIO_* chains from
    /// PREROUTING and OUTPUT (and any other nat chain) and flush and delete the
    /// ISTIO_* chains of the nat table. Succeeds when nothing is installed.
    /// (istio-iptables spells this `clean`.)
    #[arg(long, visible_alias = "clean")]
    pub remove: bool,
}

/// When `proxy init` touches the IPv6 (ip6tables) rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6 {
    /// Where ip6tables is installed and the kernel has IPv6; skipped otherwise.
    Auto,
    /// Always; an error when ip6tables or the kernel's IPv6 nat table is missing.
    Always,
    /// Never: only IPv4 rules are installed or removed.
    Never,
}

/// Why `proxy init` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag's value cannot be used.
    #[error("--{flag}: {message}")]
    InvalidFlag {
        /// The flag's long name.
        flag: &'static str,
        /// What is wrong and what is accepted.
        message: String,
    },
    /// A program `proxy init` runs is not installed.
    #[error(
        "{program} not found on PATH or in /usr/sbin, /sbin: install the iptables package \
         (Debian/Ubuntu: apt-get install -y iptables)"
    )]
    ProgramNotFound {
        /// The program looked for.
        program: &'static str,
    },
    /// A program could not be started or its output not read.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A program did not finish in time (and was killed).
    #[error(
        "{program} did not finish within {seconds} s and was stopped; another process may hold \
         the xtables lock"
    )]
    Timeout {
        /// The program.
        program: String,
        /// How long it was given.
        seconds: u64,
    },
    /// A program exited with a failure.
    #[error("{program} failed ({status}): {stderr}{hint}")]
    Failed {
        /// The program and its arguments.
        program: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
        /// What to do about it, when known.
        hint: String,
    },
    /// `--ipv6 always` was given where IPv6 rules cannot be applied.
    #[error("--ipv6 always: {reason}")]
    Ipv6Unavailable {
        /// Why not.
        reason: String,
    },
}

/// Results of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Config {
    /// The flags validated into the settings the rules are generated from. Every
    /// flag either takes effect or is refused here, with what is accepted.
    pub fn capture(&self) -> Result<Capture> {
        match self.inbound_interception_mode.to_ascii_uppercase().as_str() {
            "REDIRECT" => {}
            "TPROXY" => {
                return Err(Error::InvalidFlag {
                    flag: "inbound-interception-mode",
                    message: "TPROXY is not supported by proxy init (the proxy does not bind \
                              transparent sockets); use REDIRECT, the default"
                        .to_owned(),
                });
            }
            other => {
                return Err(Error::InvalidFlag {
                    flag: "inbound-interception-mode",
                    message: format!("`{other}` is not a mode; use REDIRECT"),
                });
            }
        }
        let proxy_uids = ids("proxy-uid", &self.proxy_uid)?;
        if proxy_uids.is_empty() {
            return Err(Error::InvalidFlag {
                flag: "proxy-uid",
                message: "at least one user id is needed, or the proxy's own traffic would be \
                          captured in a loop"
                    .to_owned(),
            });
        }
        let proxy_gids = match &self.proxy_gid {
            Some(gids) => ids("proxy-gid", gids)?,
            None => proxy_uids.clone(),
        };
        let outbound_ranges = if self.outbound_ip_ranges.trim() == "*" {
            Selection::All
        } else {
            Selection::Only(cidrs("outbound-ip-ranges", &self.outbound_ip_ranges)?)
        };
        Ok(Capture {
            envoy_port: nonzero("envoy-port", self.envoy_port)?,
            inbound_capture_port: nonzero("inbound-capture-port", self.inbound_capture_port)?,
            inbound_tunnel_port: nonzero("inbound-tunnel-port", self.inbound_tunnel_port)?,
            proxy_uids,
            proxy_gids,
            inbound_ports: if self.inbound_ports.trim() == "*" {
                Selection::All
            } else {
                Selection::Only(ports("inbound-ports", &self.inbound_ports)?)
            },
            exclude_inbound_ports: ports("exclude-inbound-ports", &self.exclude_inbound_ports)?,
            outbound_ranges,
            exclude_outbound_ranges: cidrs(
                "exclude-outbound-ip-ranges",
                &self.exclude_outbound_ip_ranges,
            )?,
            outbound_ports: ports("outbound-ports", &self.outbound_ports)?,
            exclude_outbound_ports: ports("exclude-outbound-ports", &self.exclude_outbound_ports)?,
        })
    }

    /// Parses `proxy init FLAGS` (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(flags: &[&str]) -> Config {
        use clap::Parser;
        Config::try_parse_from(std::iter::once("init").chain(flags.iter().copied()))
            .expect("flags parse")
    }

    /// The families this run touches, with the reason any is skipped.
    fn families(&self) -> Result<Vec<(Family, Option<String>)>> {
        let v6 = match self.ipv6 {
            Ipv6::Never => Some("skipped (--ipv6 never)".to_owned()),
            Ipv6::Auto | Ipv6::Always => {
                let missing = if !Path::new("/proc/net/if_inet6").exists() {
                    Some("the kernel has no IPv6 (/proc/net/if_inet6 is missing)".to_owned())
                } else if exec::find(Family::V6.restore_program()).is_none() && !self.dry_run {
                    Some(format!("{} is not installed", Family::V6.restore_program()))
                } else {
                    None
                };
                match (missing, self.ipv6) {
                    (Some(reason), Ipv6::Always) => return Err(Error::Ipv6Unavailable { reason }),
                    (Some(reason), _) => Some(format!("skipped: {reason}")),
                    (None, _) => None,
                }
            }
        };
        Ok(vec![(Family::V4, None), (Family::V6, v6)])
    }
}

/// Runs `proxy init` as `config` asks and returns what it did, one line per
/// family (with `--dry-run`, the iptables-restore input instead).
pub fn run(config: &Config) -> Result<String> {
    // Validate even when removing, so a mistyped flag is never silently ignored.
    let capture = config.capture()?;
    let mut report = String::new();
    for (family, skipped) in config.families()? {
        if let Some(reason) = skipped {
            report.push_str(&format!("{}: {reason}\n", family.name()));
            continue;
        }
        if config.dry_run {
            report.push_str(&dry_run(config, &capture, family)?);
            continue;
        }
        let installed = match exec::save(family) {
            Ok(save) => Installed::parse(&save),
            Err(err) if family == Family::V6 && config.ipv6 == Ipv6::Auto => {
                report.push_str(&format!(
                    "IPv6: skipped: cannot read its nat table: {err}\n"
                ));
                continue;
            }
            Err(err) => return Err(err),
        };
        report.push_str(&apply(config, &capture, family, installed)?);
    }
    Ok(report)
}

/// Installs or removes the rules of one family, retrying when the rules changed
/// between reading and applying them (the transaction then fails as a whole).
fn apply(
    config: &Config,
    capture: &Capture,
    family: Family,
    mut installed: Installed,
) -> Result<String> {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let (script, done) = if config.remove {
            match rules::remove_script(&installed) {
                Some(script) => (
                    script,
                    format!(
                        "{}: removed {} ISTIO_ chains and {} jumps into them",
                        family.name(),
                        installed.chains.len(),
                        installed.jumps.len()
                    ),
                ),
                None => return Ok(format!("{}: no ISTIO_ rules to remove\n", family.name())),
            }
        } else {
            let rules = rules::capture_rules(capture, family).len();
            (
                rules::install_script(capture, family, &installed),
                format!(
                    "{}: installed {} ISTIO_ chains and {rules} rules{}",
                    family.name(),
                    rules::CHAINS.len(),
                    if installed.is_empty() {
                        String::new()
                    } else {
                        " (replacing the earlier ones)".to_owned()
                    }
                ),
            )
        };
        match exec::restore(family, &script) {
            Ok(()) => return Ok(format!("{done}\n")),
            Err(err) if attempt < ATTEMPTS => {
                tracing::debug!(%err, attempt, "iptables-restore failed; reading the rules again");
                installed = Installed::parse(&exec::save(family)?);
            }
            Err(err) => return Err(err),
        }
    }
    unreachable!("the last attempt returns")
}

/// The text `--dry-run` prints for one family.
fn dry_run(config: &Config, capture: &Capture, family: Family) -> Result<String> {
    let mut out = format!(
        "# {}: input for `{} --noflush`\n",
        family.name(),
        family.restore_program()
    );
    let installed = match exec::save(family) {
        Ok(save) => Installed::parse(&save),
        Err(err) => {
            out.push_str(&format!(
                "# the current rules could not be read ({}); shown for a nat table without \
                 ISTIO_ chains\n",
                err.to_string().replace('\n', " ")
            ));
            Installed::default()
        }
    };
    if config.remove {
        match rules::remove_script(&installed) {
            Some(script) => out.push_str(&script),
            None => out.push_str("# nothing to remove\n"),
        }
    } else {
        out.push_str(&rules::install_script(capture, family, &installed));
    }
    Ok(out)
}

/// A comma-separated list, blanks dropped (Istio's `split`: "" is empty).
fn items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn ports(flag: &'static str, value: &str) -> Result<Vec<u16>> {
    items(value)
        .map(|item| {
            item.parse::<u16>()
                .ok()
                .filter(|port| *port != 0)
                .ok_or_else(|| Error::InvalidFlag {
                    flag,
                    message: format!(
                        "`{item}` is not a port: give comma-separated numbers from 1 to 65535{}",
                        if item == "*" && flag.starts_with("exclude") {
                            " (`*` is not accepted in an exclusion)"
                        } else {
                            ""
                        }
                    ),
                })
        })
        .collect()
}

fn ids(flag: &'static str, value: &str) -> Result<Vec<u32>> {
    items(value)
        .map(|item| {
            item.parse::<u32>().map_err(|_| Error::InvalidFlag {
                flag,
                message: format!("`{item}` is not a numeric id: give comma-separated numbers"),
            })
        })
        .collect()
}

fn cidrs(flag: &'static str, value: &str) -> Result<Vec<Cidr>> {
    items(value)
        .map(|item| {
            item.parse::<Cidr>()
                .map_err(|message| Error::InvalidFlag { flag, message })
        })
        .collect()
}

fn nonzero(flag: &'static str, port: u16) -> Result<u16> {
    if port == 0 {
        return Err(Error::InvalidFlag {
            flag,
            message: "0 is not a port: give a number from 1 to 65535".to_owned(),
        });
    }
    Ok(port)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn refused(flags: &[&str]) -> String {
        let config = Config::try_parse_from(std::iter::once("init").chain(flags.iter().copied()))
            .expect("flags parse");
        config.capture().expect_err("refused").to_string()
    }

    #[test]
    fn defaults_are_istio_inits() {
        let capture = Config::for_tests(&[]).capture().expect("valid");
        assert_eq!(capture.envoy_port, 15001);
        assert_eq!(capture.inbound_capture_port, 15006);
        assert_eq!(capture.inbound_tunnel_port, 15008);
        assert_eq!(capture.proxy_uids, [1337]);
        assert_eq!(capture.proxy_gids, [1337]);
        assert_eq!(capture.inbound_ports, Selection::All);
        assert_eq!(capture.exclude_inbound_ports, [15090, 15021, 15020]);
        assert_eq!(capture.outbound_ranges, Selection::All);
        assert!(capture.exclude_outbound_ranges.is_empty());
        assert!(capture.outbound_ports.is_empty());
        assert!(capture.exclude_outbound_ports.is_empty());
    }

    #[test]
    fn istio_long_names_are_accepted() {
        let config = Config::for_tests(&[
            "--istio-inbound-ports",
            "80",
            "--istio-local-exclude-ports",
            "22",
            "--istio-service-cidr",
            "10.0.0.0/8",
            "--istio-service-exclude-cidr",
            "10.1.0.0/16",
            "--istio-local-outbound-ports-exclude",
            "3306",
            "--istio-inbound-interception-mode",
            "REDIRECT",
            "--clean",
        ]);
        let capture = config.capture().expect("valid");
        assert_eq!(capture.inbound_ports, Selection::Only(vec![80]));
        assert_eq!(capture.exclude_outbound_ports, [3306]);
        assert!(config.remove);
    }

    #[test]
    fn unusable_values_are_refused_with_what_is_accepted() {
        assert!(refused(&["-m", "TPROXY"]).contains("TPROXY is not supported"));
        assert!(refused(&["-m", "bogus"]).contains("use REDIRECT"));
        assert!(refused(&["-b", "80,http"]).contains("`http` is not a port"));
        assert!(refused(&["-d", "*"]).contains("not accepted in an exclusion"));
        assert!(refused(&["-x", "*"]).contains("CIDR"));
        assert!(refused(&["-i", "10.0.0.1"]).contains("CIDR form"));
        assert!(refused(&["-u", ""]).contains("at least one user id"));
        assert!(refused(&["-g", "wheel"]).contains("numeric id"));
        assert!(refused(&["-p", "0"]).starts_with("--envoy-port"));
    }

    #[test]
    fn help_documents_every_flag() {
        use clap::CommandFactory;
        let mut command = Config::command();
        command.build();
        for arg in command.get_arguments() {
            assert!(
                arg.get_help().is_some() || arg.get_id() == "help",
                "--{} has no help",
                arg.get_id()
            );
        }
        command.debug_assert();
    }
}

//! A pod's injection settings: the mesh-wide [`Values`] overridden by Istio's
//! pod annotations, each checked (a bad value refuses the injection, naming
//! the annotation), and a warning for every Istio annotation the injector does
//! not honour, so none silently has no effect.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::Value;

use crate::Error;
use crate::options::{Options, Resources, string_map};

/// The Istio annotations [`Settings::from_pod`] reads (besides the selection's
/// `sidecar.istio.io/inject` and the `sidecar.istio.io/status` it writes).
pub const SUPPORTED: &[&str] = &[
    "sidecar.istio.io/inject",
    "sidecar.istio.io/status",
    "traffic.sidecar.istio.io/includeOutboundIPRanges",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges",
    "traffic.sidecar.istio.io/includeInboundPorts",
    "traffic.sidecar.istio.io/excludeInboundPorts",
    "traffic.sidecar.istio.io/includeOutboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundPorts",
    "sidecar.istio.io/interceptionMode",
    "sidecar.istio.io/proxyCPU",
    "sidecar.istio.io/proxyMemory",
    "sidecar.istio.io/proxyCPULimit",
    "sidecar.istio.io/proxyMemoryLimit",
    "sidecar.istio.io/logLevel",
    "sidecar.istio.io/proxyImage",
    "sidecar.istio.io/nativeSidecar",
    "status.sidecar.istio.io/port",
    "readiness.status.sidecar.istio.io/initialDelaySeconds",
    "readiness.status.sidecar.istio.io/periodSeconds",
    "readiness.status.sidecar.istio.io/failureThreshold",
    "proxy.istio.io/config",
];

/// Annotation domains whose keys shape injection in Istio; an unknown key in
/// one of them gets a warning.
const ISTIO_DOMAINS: &[&str] = &[
    "sidecar.istio.io",
    "traffic.sidecar.istio.io",
    "status.sidecar.istio.io",
    "readiness.status.sidecar.istio.io",
    "proxy.istio.io",
    "inject.istio.io",
    "prometheus.istio.io",
];

/// `proxy.istio.io/config` (ProxyConfig) fields honoured.
const PROXY_CONFIG_FIELDS: &[&str] = &[
    "holdApplicationUntilProxyStarts",
    "concurrency",
    "proxyMetadata",
];

/// How the pod's traffic reaches the sidecar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interception {
    /// iptables REDIRECT (`proxy init`).
    Redirect,
    /// No capture: no `istio-init`, the app talks to the sidecar explicitly.
    None,
}

/// One pod's resolved settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `-i` of `proxy init`.
    pub include_outbound_ip_ranges: String,
    /// `-x`.
    pub exclude_outbound_ip_ranges: String,
    /// `-b`.
    pub include_inbound_ports: String,
    /// Extra ports for `-d` (after the sidecar's own).
    pub exclude_inbound_ports: String,
    /// `-q`.
    pub include_outbound_ports: String,
    /// `-o`.
    pub exclude_outbound_ports: String,
    /// Capture mode.
    pub interception: Interception,
    /// The sidecar's requests and limits.
    pub resources: Resources,
    /// The sidecar's log level.
    pub log_level: String,
    /// The image of `istio-init` and `istio-proxy`.
    pub proxy_image: String,
    /// istio-agent's status port (0: none).
    pub status_port: u16,
    /// Readiness probe's initial delay.
    pub readiness_initial_delay: i32,
    /// Readiness probe's period.
    pub readiness_period: i32,
    /// Readiness probe's failure threshold.
    pub readiness_failure_threshold: i32,
    /// Apps start only once the sidecar is ready.
    pub hold: bool,
    /// The sidecar's worker threads.
    pub concurrency: u32,
    /// The sidecar's extra environment (ProxyConfig `proxyMetadata`).
    pub proxy_metadata: BTreeMap<String, String>,
    /// Native sidecar.
    pub native: bool,
}

static QUANTITY: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[KMGTPE]i|[numkMGTPE])?$")
        .unwrap_or_else(|e| unreachable!("the quantity pattern compiles: {e}"))
});

impl Settings {
    /// The settings of a pod with `annotations`, and a warning per Istio
    /// annotation (or ProxyConfig field) without effect here.
    pub fn from_pod(
        annotations: &BTreeMap<String, String>,
        opts: &Options,
    ) -> Result<(Settings, Vec<String>), Error> {
        let v = &opts.values;
        let get = |k: &str| annotations.get(k).map(|s| s.trim().to_owned());
        let bad = |k: &str, reason: &str| Error::Annotation {
            name: k.into(),
            value: annotations.get(k).cloned().unwrap_or_default(),
            reason: reason.into(),
        };
        let ranges = |k: &str, default: &str| -> Result<String, Error> {
            let s = get(k).unwrap_or_else(|| default.into());
            check_ranges(&s).map_err(|r| bad(k, &r))?;
            Ok(s)
        };
        let ports = |k: &str, default: &str, star: bool| -> Result<String, Error> {
            let s = get(k).unwrap_or_else(|| default.into());
            check_ports(&s, star).map_err(|r| bad(k, &r))?;
            Ok(s)
        };
        let quantity = |k: &str, default: &Option<String>| -> Result<Option<String>, Error> {
            match get(k) {
                None => Ok(default.clone()),
                Some(q) if QUANTITY.is_match(&q) => Ok(Some(q)),
                Some(_) => Err(bad(k, "is not a Kubernetes quantity (e.g. 100m, 2, 128Mi)")),
            }
        };
        let int = |k: &str, default: i32| -> Result<i32, Error> {
            match get(k) {
                None => Ok(default),
                Some(s) => s
                    .parse::<i32>()
                    .ok()
                    .filter(|n| *n >= 0)
                    .ok_or_else(|| bad(k, "must be a whole number of 0 or more")),
            }
        };
        let mut resources = v.resources.clone();
        resources.requests.cpu = quantity("sidecar.istio.io/proxyCPU", &resources.requests.cpu)?;
        resources.requests.memory =
            quantity("sidecar.istio.io/proxyMemory", &resources.requests.memory)?;
        resources.limits.cpu = quantity("sidecar.istio.io/proxyCPULimit", &resources.limits.cpu)?;
        resources.limits.memory = quantity(
            "sidecar.istio.io/proxyMemoryLimit",
            &resources.limits.memory,
        )?;
        let interception = match get("sidecar.istio.io/interceptionMode").as_deref() {
            None | Some("REDIRECT") => Interception::Redirect,
            Some("NONE") => Interception::None,
            Some("TPROXY") => {
                return Err(bad(
                    "sidecar.istio.io/interceptionMode",
                    "TPROXY is not supported by Mizzen's proxy init; use REDIRECT (the default) or NONE",
                ));
            }
            Some(_) => {
                return Err(bad(
                    "sidecar.istio.io/interceptionMode",
                    "must be REDIRECT, TPROXY or NONE",
                ));
            }
        };
        let log_level = match get("sidecar.istio.io/logLevel") {
            None => v.log_level.clone(),
            Some(l) => match l.as_str() {
                "trace" | "debug" | "info" | "warning" | "warn" | "error" | "critical" | "off" => l,
                _ => {
                    return Err(bad(
                        "sidecar.istio.io/logLevel",
                        "must be trace, debug, info, warning, error, critical or off",
                    ));
                }
            },
        };
        let status_port = match get("status.sidecar.istio.io/port") {
            None => v.status_port,
            Some(p) => p.parse::<u16>().map_err(|_| {
                bad(
                    "status.sidecar.istio.io/port",
                    "must be a port number (0 turns it off)",
                )
            })?,
        };
        let native = match get("sidecar.istio.io/nativeSidecar").as_deref() {
            None => opts.native_sidecars,
            Some("true") => true,
            Some("false") => false,
            Some(_) => {
                return Err(bad(
                    "sidecar.istio.io/nativeSidecar",
                    "must be true or false",
                ));
            }
        };
        let mut warnings = Vec::new();
        let mut hold = v.hold_application_until_proxy_starts;
        let mut concurrency = v.concurrency;
        let mut proxy_metadata = v.proxy_metadata.clone();
        if let Some(text) = annotations.get("proxy.istio.io/config") {
            let k = "proxy.istio.io/config";
            let config: Value = serde_saphyr::from_str(text)
                .map_err(|e| bad(k, &format!("is not a YAML ProxyConfig: {e}")))?;
            let Some(map) = config.as_object() else {
                return Err(bad(k, "must be a ProxyConfig mapping"));
            };
            for (field, value) in map {
                match field.as_str() {
                    "holdApplicationUntilProxyStarts" => {
                        hold = value
                            .as_bool()
                            .ok_or_else(|| bad(k, "holdApplicationUntilProxyStarts must be true or false"))?;
                    }
                    "concurrency" => {
                        concurrency = value
                            .as_u64()
                            .and_then(|c| u32::try_from(c).ok())
                            .ok_or_else(|| bad(k, "concurrency must be a whole number"))?;
                    }
                    "proxyMetadata" => {
                        let extra = string_map(value)
                            .map_err(|r| bad(k, &format!("proxyMetadata {r}")))?;
                        proxy_metadata.extend(extra);
                    }
                    other => warnings.push(format!(
                        "annotation {k}: field `{other}` is not honoured by Mizzen's injector and has \
                         no effect (it reads {})",
                        PROXY_CONFIG_FIELDS.join(", ")
                    )),
                }
            }
        }
        for key in annotations.keys() {
            let domain = key.split_once('/').map(|(d, _)| d);
            if domain.is_some_and(|d| ISTIO_DOMAINS.contains(&d))
                && !SUPPORTED.contains(&key.as_str())
            {
                warnings.push(format!(
                    "annotation {key} is not supported by Mizzen's injector and has no effect"
                ));
            }
        }
        let settings = Settings {
            include_outbound_ip_ranges: ranges(
                "traffic.sidecar.istio.io/includeOutboundIPRanges",
                &v.include_ip_ranges,
            )?,
            exclude_outbound_ip_ranges: ranges(
                "traffic.sidecar.istio.io/excludeOutboundIPRanges",
                &v.exclude_ip_ranges,
            )?,
            include_inbound_ports: ports(
                "traffic.sidecar.istio.io/includeInboundPorts",
                &v.include_inbound_ports,
                true,
            )?,
            exclude_inbound_ports: ports(
                "traffic.sidecar.istio.io/excludeInboundPorts",
                &v.exclude_inbound_ports,
                false,
            )?,
            include_outbound_ports: ports(
                "traffic.sidecar.istio.io/includeOutboundPorts",
                "",
                false,
            )?,
            exclude_outbound_ports: ports(
                "traffic.sidecar.istio.io/excludeOutboundPorts",
                &v.exclude_outbound_ports,
                false,
            )?,
            interception,
            resources,
            log_level,
            proxy_image: get("sidecar.istio.io/proxyImage")
                .unwrap_or_else(|| opts.proxy_image.clone()),
            status_port,
            readiness_initial_delay: int(
                "readiness.status.sidecar.istio.io/initialDelaySeconds",
                0,
            )?,
            readiness_period: int("readiness.status.sidecar.istio.io/periodSeconds", 15)?,
            readiness_failure_threshold: int(
                "readiness.status.sidecar.istio.io/failureThreshold",
                4,
            )?,
            hold,
            concurrency,
            proxy_metadata,
            native,
        };
        Ok((settings, warnings))
    }
}

/// `*`, empty, or comma-separated CIDRs (IPv4 and IPv6).
fn check_ranges(s: &str) -> Result<(), String> {
    if s == "*" {
        return Ok(());
    }
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.parse::<ipnet::IpNet>().is_err() {
            return Err(format!(
                "`{part}` is not a CIDR (e.g. 10.0.0.0/8); write `*` or CIDRs separated by commas"
            ));
        }
    }
    Ok(())
}

/// Empty, comma-separated ports, or `*` where `star` allows it.
fn check_ports(s: &str, star: bool) -> Result<(), String> {
    if star && s == "*" {
        return Ok(());
    }
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.parse::<u16>().ok().filter(|p| *p > 0).is_none() {
            return Err(format!(
                "`{part}` is not a port (1-65535); write {}ports separated by commas",
                if star { "`*` or " } else { "" }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "annotations/tests.rs"]
mod tests;

//! Scalar types shared by Istio's APIs: durations as Istio writes them, and
//! percentages. Each one checks its own form while it is decoded, so a bad value
//! is reported at its field path before any semantic validation runs.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written the way Istio accepts it in YAML: Go's `time.ParseDuration`
/// form (`5s`, `1.5s`, `300ms`, `1h30m`, `10us`, `100ns`), which includes the
/// protobuf JSON form (`5s`, `0.5s`). Negative durations are refused while decoding.
///
/// The original spelling is kept so messages and round trips show what the user wrote.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Duration {
    nanos: u128,
    text: String,
}

impl Duration {
    /// The duration as a [`std::time::Duration`] (saturating past `u64::MAX` seconds).
    pub fn as_std(&self) -> std::time::Duration {
        let secs = (self.nanos / 1_000_000_000).min(u64::MAX as u128) as u64;
        std::time::Duration::new(secs, (self.nanos % 1_000_000_000) as u32)
    }

    /// Whole nanoseconds.
    pub fn as_nanos(&self) -> u128 {
        self.nanos
    }

    /// The text as written in the source.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// A duration from a [`std::time::Duration`], written in seconds (`1.5s`).
    pub fn from_std(d: std::time::Duration) -> Self {
        let nanos = d.as_nanos();
        let text = if d.subsec_nanos() == 0 {
            format!("{}s", d.as_secs())
        } else {
            format!("{}s", d.as_secs_f64())
        };
        Duration { nanos, text }
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({})", self.text)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (write it like 5s, 1.5s, 300ms or 1h30m)")]
pub struct DurationError {
    /// The text that was refused.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for Duration {
    type Err = DurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_go_duration(s).map(|nanos| Duration {
            nanos,
            text: s.to_string(),
        })
    }
}

/// Parses Go's duration syntax into nanoseconds: a sequence of decimal numbers, each
/// with an optional fraction and a unit suffix (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`).
/// `0` alone is allowed. A sign is refused: Istio durations are never negative.
pub fn parse_go_duration(s: &str) -> Result<u128, DurationError> {
    let err = |reason| DurationError {
        text: s.to_string(),
        reason,
    };
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if s.starts_with('-') {
        return Err(err("it is negative"));
    }
    let body = s.strip_prefix('+').unwrap_or(s);
    if body == "0" {
        return Ok(0);
    }
    let bytes = body.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        let whole = &body[start..i];
        let mut frac = "";
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let fs = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            frac = &body[fs..i];
        }
        if whole.is_empty() && frac.is_empty() {
            return Err(err("a number is expected before each unit"));
        }
        let us = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() && bytes[i] != b'.' {
            i += 1;
        }
        let unit: u128 = match &body[us..i] {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(err("a unit is missing (one of ns, us, ms, s, m, h)")),
            _ => return Err(err("unknown unit (use one of ns, us, ms, s, m, h)")),
        };
        let w: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| err("the number is too large"))?
        };
        let mut part = w.checked_mul(unit).ok_or_else(|| err("it is too large"))?;
        if !frac.is_empty() {
            // Scale the fraction by the unit without floating point.
            let digits = &frac[..frac.len().min(30)];
            let f: u128 = digits
                .parse()
                .map_err(|_| err("the fraction is too long"))?;
            let scale = 10u128.pow(digits.len() as u32);
            part += f * unit / scale;
        }
        total = total
            .checked_add(part)
            .ok_or_else(|| err("it is too large"))?;
    }
    Ok(total)
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration such as 5s, 1.5s, 300ms or 1h30m."
        })
    }
}

/// Istio's `Percent`: `{ value: 10.5 }`, a share in [0, 100].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    /// The percentage, 0 to 100.
    #[serde(default)]
    pub value: f64,
}

/// `workloadSelector` / `selector` as used across Istio's APIs: `matchLabels` only.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Labels a workload must carry to be selected.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub match_labels: std::collections::BTreeMap<String, String>,
}

/// `targetRef` / `targetRefs` entries of the security, telemetry and extension APIs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    /// API group of the target (`gateway.networking.k8s.io`, or `""` for core).
    #[serde(default)]
    pub group: String,
    /// Kind of the target (`Gateway`, `Service`, `ServiceEntry`, `GatewayClass`).
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Namespace of the target; must be the policy's own if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_go_durations() {
        let ns = |s: &str| parse_go_duration(s).unwrap();
        assert_eq!(ns("5s"), 5_000_000_000);
        assert_eq!(ns("1.5s"), 1_500_000_000);
        assert_eq!(ns("300ms"), 300_000_000);
        assert_eq!(ns("1h30m"), 5_400_000_000_000);
        assert_eq!(ns("10us"), 10_000);
        assert_eq!(ns(".5s"), 500_000_000);
        assert_eq!(ns("0"), 0);
        assert_eq!(ns("0.001s"), 1_000_000);
    }

    #[test]
    fn refuses_bad_durations() {
        for bad in ["", "5", "-1s", "5x", "s", "1..5s", "1.5.5s", "abc", "5 s"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    proptest! {
        #[test]
        fn whole_units_round_trip(n in 0u64..1_000_000, unit in prop::sample::select(vec![("ns", 1u128), ("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)])) {
            let text = format!("{n}{}", unit.0);
            prop_assert_eq!(parse_go_duration(&text).unwrap(), n as u128 * unit.1);
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = parse_go_duration(&s);
        }

        #[test]
        fn sums_of_parts(h in 0u64..100, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s{ms}ms");
            let want = ((h * 3600 + m * 60 + s) as u128) * 1_000_000_000 + ms as u128 * 1_000_000;
            prop_assert_eq!(parse_go_duration(&text).unwrap(), want);
        }
    }
}

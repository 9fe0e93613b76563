//! Istio's default JSON access log (`meshConfig.accessLogEncoding: JSON` with no
//! `accessLogFormat`): the same fields, in the same order, as the format istiod
//! writes into the Envoy file access logger. Numbers are JSON numbers
//! (`response_code`, `bytes_*`, `duration`), header-derived values are strings,
//! and a value Envoy would print as `-` in TEXT is `null` here; `response_flags`
//! keeps Envoy's `"-"` when no flag is set.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Everything one access log line says about a request. Borrowed so that
/// building it costs nothing; `None` (or an empty string) prints `null`.
#[derive(Clone, Debug)]
pub struct AccessLogEntry<'a> {
    /// `%START_TIME%`: when the first request byte arrived.
    pub start_time: SystemTime,
    /// `%ROUTE_NAME%`.
    pub route_name: Option<&'a str>,
    /// `%REQ(:METHOD)%`.
    pub method: Option<&'a str>,
    /// `%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%`: the original path before rewrites.
    pub path: Option<&'a str>,
    /// `%PROTOCOL%`: `HTTP/1.1`, `HTTP/2`, …
    pub protocol: Option<&'a str>,
    /// `%RESPONSE_CODE%`: 0 when no response was sent.
    pub response_code: u16,
    /// `%RESPONSE_FLAGS%`: Envoy's short flags; empty prints `"-"`.
    pub response_flags: &'a str,
    /// `%RESPONSE_CODE_DETAILS%`, e.g. `via_upstream`, `route_not_found`.
    pub response_code_details: Option<&'a str>,
    /// `%CONNECTION_TERMINATION_DETAILS%`.
    pub connection_termination_details: Option<&'a str>,
    /// `%UPSTREAM_TRANSPORT_FAILURE_REASON%`.
    pub upstream_transport_failure_reason: Option<&'a str>,
    /// `%BYTES_RECEIVED%`: request body bytes.
    pub bytes_received: u64,
    /// `%BYTES_SENT%`: response body bytes.
    pub bytes_sent: u64,
    /// `%DURATION%`: start to last response byte, printed in milliseconds.
    pub duration: Duration,
    /// `%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%`: printed as the header would be,
    /// a string of milliseconds.
    pub upstream_service_time: Option<Duration>,
    /// `%REQ(X-FORWARDED-FOR)%`.
    pub x_forwarded_for: Option<&'a str>,
    /// `%REQ(USER-AGENT)%`.
    pub user_agent: Option<&'a str>,
    /// `%REQ(X-REQUEST-ID)%`.
    pub request_id: Option<&'a str>,
    /// `%REQ(:AUTHORITY)%`.
    pub authority: Option<&'a str>,
    /// `%UPSTREAM_HOST%`.
    pub upstream_host: Option<SocketAddr>,
    /// `%UPSTREAM_CLUSTER%`, e.g. `outbound|9080||details.default.svc.cluster.local`.
    pub upstream_cluster: Option<&'a str>,
    /// `%UPSTREAM_LOCAL_ADDRESS%`.
    pub upstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_LOCAL_ADDRESS%`.
    pub downstream_local_address: Option<SocketAddr>,
    /// `%DOWNSTREAM_REMOTE_ADDRESS%`.
    pub downstream_remote_address: Option<SocketAddr>,
    /// `%REQUESTED_SERVER_NAME%`: the TLS SNI.
    pub requested_server_name: Option<&'a str>,
}

impl AccessLogEntry<'_> {
    /// An entry that knows only its start time: every other field unknown.
    pub fn new(start_time: SystemTime) -> Self {
        AccessLogEntry {
            start_time,
            route_name: None,
            method: None,
            path: None,
            protocol: None,
            response_code: 0,
            response_flags: "",
            response_code_details: None,
            connection_termination_details: None,
            upstream_transport_failure_reason: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
            upstream_service_time: None,
            x_forwarded_for: None,
            user_agent: None,
            request_id: None,
            authority: None,
            upstream_host: None,
            upstream_cluster: None,
            upstream_local_address: None,
            downstream_local_address: None,
            downstream_remote_address: None,
            requested_server_name: None,
        }
    }
}

/// The entry as one line of Istio's default JSON access log, without the
/// trailing newline.
pub fn access_log_json(entry: &AccessLogEntry<'_>) -> String {
    let mut out = String::with_capacity(768);
    write_access_log_json(entry, &mut out);
    out
}

/// Appends the entry as one JSON object (no newline) to `out`, so a caller can
/// reuse one buffer across lines.
pub fn write_access_log_json(e: &AccessLogEntry<'_>, out: &mut String) {
    let mut w = Obj { out, first: true };
    w.string("start_time", Some(&format_time(e.start_time)));
    w.string("route_name", e.route_name);
    w.string("method", e.method);
    w.string("path", e.path);
    w.string("protocol", e.protocol);
    w.number("response_code", u64::from(e.response_code));
    let flags = if e.response_flags.is_empty() {
        "-"
    } else {
        e.response_flags
    };
    w.string("response_flags", Some(flags));
    w.string("response_code_details", e.response_code_details);
    w.string(
        "connection_termination_details",
        e.connection_termination_details,
    );
    w.string(
        "upstream_transport_failure_reason",
        e.upstream_transport_failure_reason,
    );
    w.number("bytes_received", e.bytes_received);
    w.number("bytes_sent", e.bytes_sent);
    w.number("duration", e.duration.as_millis() as u64);
    let ust = e.upstream_service_time.map(|d| d.as_millis().to_string());
    w.string("upstream_service_time", ust.as_deref());
    w.string("x_forwarded_for", e.x_forwarded_for);
    w.string("user_agent", e.user_agent);
    w.string("request_id", e.request_id);
    w.string("authority", e.authority);
    w.addr("upstream_host", e.upstream_host);
    w.string("upstream_cluster", e.upstream_cluster);
    w.addr("upstream_local_address", e.upstream_local_address);
    w.addr("downstream_local_address", e.downstream_local_address);
    w.addr("downstream_remote_address", e.downstream_remote_address);
    w.string("requested_server_name", e.requested_server_name);
    w.out.push('}');
}

struct Obj<'o> {
    out: &'o mut String,
    first: bool,
}

impl Obj<'_> {
    fn key(&mut self, key: &str) {
        self.out.push(if self.first { '{' } else { ',' });
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    fn string(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value.filter(|v| !v.is_empty()) {
            Some(v) => escape_json(self.out, v),
            None => self.out.push_str("null"),
        }
    }

    fn number(&mut self, key: &str, value: u64) {
        self.key(key);
        let _ = write!(self.out, "{value}");
    }

    fn addr(&mut self, key: &str, value: Option<SocketAddr>) {
        self.key(key);
        match value {
            Some(a) => {
                let _ = write!(self.out, "\"{a}\"");
            }
            None => self.out.push_str("null"),
        }
    }
}

/// Appends `s` as a JSON string literal.
fn escape_json(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Envoy's default `%START_TIME%`: RFC 3339 in UTC with milliseconds.
use common::time::rfc3339_millis as format_time;

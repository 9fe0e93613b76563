//! Trace context propagation in both header families Istio meshes use: W3C
//! `traceparent` and Zipkin B3 (`x-b3-*`, and the single `b3` header when the
//! request carries one).
//!
//! The incoming context is read from a valid `traceparent` first, then from B3
//! (multi-header, then single). The proxy becomes a child span: a new span id,
//! the old one as parent, the trace id kept. Both families are then rewritten
//! from that one context, so they always agree; a malformed or disagreeing
//! header is replaced. `tracestate`, `x-request-id` and `x-b3-flags` are left
//! as they are. An absent B3 sampling decision is taken as "sampled".
//!
//! When the connection manager reports spans (Envoy's OpenTelemetry tracer,
//! [`super::span`]), propagation is W3C only, as in Envoy: [`parse_w3c`]
//! reads the parent from `traceparent` (B3 headers are neither read nor
//! rewritten) and [`write_w3c`] writes the proxy's span as `traceparent`
//! and `tracestate`.

use http::{HeaderMap, HeaderName, HeaderValue};

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
const B3_SINGLE: HeaderName = HeaderName::from_static("b3");

/// The trace context a request leaves the proxy with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 128-bit trace id (a 64-bit B3 id is its low half).
    pub trace_id: u128,
    /// This proxy's span id.
    pub span_id: u64,
    /// The caller's span id, when the trace was continued.
    pub parent_span_id: Option<u64>,
    /// The sampling decision.
    pub sampled: bool,
}

/// Incoming context, before the child span is made.
struct Incoming {
    trace_id: u128,
    span_id: u64,
    sampled: bool,
    /// W3C trace-flags to keep (bits other than "sampled").
    flags: u8,
    /// The B3 trace id was 64-bit: keep writing it that way.
    b3_64: bool,
}

/// Starts or continues the trace of a request. With a valid incoming context
/// (W3C or B3), makes a child span; without one, starts a new sampled trace if
/// `generate`, and otherwise leaves the headers untouched and returns `None`.
/// `random` supplies the ids (tests pass a deterministic source).
pub fn propagate_trace(
    headers: &mut HeaderMap,
    generate: bool,
    mut random: impl FnMut() -> u64,
) -> Option<TraceContext> {
    let mut nonzero = || nonzero(&mut random);
    let incoming = parse_traceparent(headers)
        .or_else(|| parse_b3_multi(headers))
        .or_else(|| parse_b3_single(headers));
    let (ctx, flags, b3_64) = match incoming {
        Some(inc) => {
            let mut span_id = nonzero();
            if span_id == inc.span_id {
                span_id = nonzero();
            }
            let ctx = TraceContext {
                trace_id: inc.trace_id,
                span_id,
                parent_span_id: Some(inc.span_id),
                sampled: inc.sampled,
            };
            (ctx, inc.flags, inc.b3_64)
        }
        None if generate => {
            let hi = nonzero();
            let lo = nonzero();
            let ctx = TraceContext {
                trace_id: (u128::from(hi) << 64) | u128::from(lo),
                span_id: nonzero(),
                parent_span_id: None,
                sampled: true,
            };
            (ctx, 0, false)
        }
        None => return None,
    };
    write(headers, &ctx, flags, b3_64);
    Some(ctx)
}

/// A caller's W3C trace context, as Envoy's OpenTelemetry tracer reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct W3cParent {
    /// The caller's trace id.
    pub trace_id: u128,
    /// The caller's span id: the parent of the proxy's span.
    pub span_id: u64,
    /// The caller's sampling flag.
    pub sampled: bool,
    /// `tracestate`, passed on as it came.
    pub tracestate: Option<String>,
}

/// The caller's context from `traceparent`: `Ok(None)` when there is no
/// such header, `Err(())` when there is one and it is malformed (Envoy then
/// neither reports a span nor propagates).
#[allow(clippy::result_unit_err)]
pub fn parse_w3c(headers: &HeaderMap) -> Result<Option<W3cParent>, ()> {
    if !headers.contains_key(TRACEPARENT) {
        return Ok(None);
    }
    let inc = parse_traceparent(headers).ok_or(())?;
    Ok(Some(W3cParent {
        trace_id: inc.trace_id,
        span_id: inc.span_id,
        sampled: inc.sampled,
        tracestate: header(headers, TRACESTATE).map(str::to_string),
    }))
}

/// A new span id for a child of `parent` (a new trace id too without one),
/// drawn from `random`; never zero, never the parent's span id.
pub fn child_context(
    parent: Option<&W3cParent>,
    sampled: bool,
    mut random: impl FnMut() -> u64,
) -> TraceContext {
    let mut nonzero = || nonzero(&mut random);
    match parent {
        Some(p) => {
            let mut span_id = nonzero();
            if span_id == p.span_id {
                span_id = nonzero();
            }
            TraceContext {
                trace_id: p.trace_id,
                span_id,
                parent_span_id: Some(p.span_id),
                sampled,
            }
        }
        None => {
            let (hi, lo) = (nonzero(), nonzero());
            TraceContext {
                trace_id: (u128::from(hi) << 64) | u128::from(lo),
                span_id: nonzero(),
                parent_span_id: None,
                sampled,
            }
        }
    }
}

/// Writes `ctx` as `traceparent` (flags: only "sampled") and `tracestate`
/// (the caller's, or empty, as Envoy's OpenTelemetry tracer writes it).
pub fn write_w3c(headers: &mut HeaderMap, ctx: &TraceContext, tracestate: Option<&str>) {
    let tp = format!(
        "00-{:032x}-{:016x}-{:02x}",
        ctx.trace_id,
        ctx.span_id,
        u8::from(ctx.sampled)
    );
    if let Ok(v) = HeaderValue::try_from(tp) {
        headers.insert(TRACEPARENT, v);
    }
    let ts =
        HeaderValue::try_from(tracestate.unwrap_or("")).unwrap_or(HeaderValue::from_static(""));
    headers.insert(TRACESTATE, ts);
}

/// The next non-zero value of `random` (W3C and B3 forbid all-zero ids).
fn nonzero(random: &mut impl FnMut() -> u64) -> u64 {
    loop {
        let v = random();
        if v != 0 {
            return v;
        }
    }
}

fn write(headers: &mut HeaderMap, ctx: &TraceContext, flags: u8, b3_64: bool) {
    let flags = (flags & !1) | u8::from(ctx.sampled);
    let trace_hex = if b3_64 {
        format!("{:016x}", ctx.trace_id as u64)
    } else {
        format!("{:032x}", ctx.trace_id)
    };
    let span_hex = format!("{:016x}", ctx.span_id);
    let sampled = if ctx.sampled { "1" } else { "0" };
    let set = |h: &mut HeaderMap, name: HeaderName, v: String| {
        if let Ok(v) = HeaderValue::try_from(v) {
            h.insert(name, v);
        }
    };
    set(
        headers,
        TRACEPARENT,
        format!("00-{:032x}-{span_hex}-{flags:02x}", ctx.trace_id),
    );
    set(headers, B3_TRACE_ID, trace_hex.clone());
    set(headers, B3_SPAN_ID, span_hex.clone());
    match ctx.parent_span_id {
        Some(p) => set(headers, B3_PARENT_SPAN_ID, format!("{p:016x}")),
        None => {
            headers.remove(B3_PARENT_SPAN_ID);
        }
    }
    headers.insert(B3_SAMPLED, HeaderValue::from_static(sampled));
    if headers.contains_key(B3_SINGLE) {
        let mut v = format!("{trace_hex}-{span_hex}-{sampled}");
        if let Some(p) = ctx.parent_span_id {
            v.push_str(&format!("-{p:016x}"));
        }
        set(headers, B3_SINGLE, v);
    }
}

fn header(headers: &HeaderMap, name: HeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A W3C `traceparent`: `version-traceid-parentid-flags`, lowercase hex,
/// version not `ff`, ids not all zero; version 00 has exactly four fields and
/// later versions may append more.
fn parse_traceparent(headers: &HeaderMap) -> Option<Incoming> {
    let v = header(headers, TRACEPARENT)?;
    let mut parts = v.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let ok_shape = version.len() == 2
        && trace.len() == 32
        && span.len() == 16
        && flags.len() == 2
        && [version, trace, span, flags]
            .iter()
            .all(|p| is_lower_hex(p));
    if !ok_shape || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Incoming {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
        flags,
        b3_64: false,
    })
}

/// A B3 trace id: 16 or 32 hex digits, not zero. Returns it and whether it
/// was 64-bit.
fn parse_b3_trace_id(s: &str) -> Option<(u128, bool)> {
    if !(s.len() == 16 || s.len() == 32) || !is_hex(s) {
        return None;
    }
    let id = u128::from_str_radix(s, 16).ok().filter(|t| *t != 0)?;
    Some((id, s.len() == 16))
}

fn parse_b3_span_id(s: &str) -> Option<u64> {
    if s.len() != 16 || !is_hex(s) {
        return None;
    }
    u64::from_str_radix(s, 16).ok().filter(|s| *s != 0)
}

/// `1`/`true`/`d` (debug) sample, `0`/`false` do not; anything else or absent
/// means sampled.
fn parse_b3_sampled(s: Option<&str>) -> bool {
    !matches!(s, Some("0") | Some("false"))
}

fn parse_b3_multi(headers: &HeaderMap) -> Option<Incoming> {
    let (trace_id, b3_64) = parse_b3_trace_id(header(headers, B3_TRACE_ID)?)?;
    let span_id = parse_b3_span_id(header(headers, B3_SPAN_ID)?)?;
    let debug = header(headers, B3_FLAGS) == Some("1");
    let sampled = debug || parse_b3_sampled(header(headers, B3_SAMPLED));
    Some(Incoming {
        trace_id,
        span_id,
        sampled,
        flags: 0,
        b3_64,
    })
}

/// Single-header B3: `traceid-spanid[-sampled[-parentspanid]]`.
fn parse_b3_single(headers: &HeaderMap) -> Option<Incoming> {
    let v = header(headers, B3_SINGLE)?;
    let mut parts = v.split('-');
    let (trace_id, b3_64) = parse_b3_trace_id(parts.next()?)?;
    let span_id = parse_b3_span_id(parts.next()?)?;
    let sampled = parse_b3_sampled(parts.next());
    Some(Incoming {
        trace_id,
        span_id,
        sampled,
        flags: 0,
        b3_64,
    })
}

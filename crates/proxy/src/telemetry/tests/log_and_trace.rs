//! The access log's fields and the B3/W3C trace header propagation.

use super::*;

// -------------------------------------------------------------- access log

const ACCESS_LOG_FIELDS: [&str; 24] = [
    "start_time",
    "route_name",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "response_code_details",
    "connection_termination_details",
    "upstream_transport_failure_reason",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "upstream_host",
    "upstream_cluster",
    "upstream_local_address",
    "downstream_local_address",
    "downstream_remote_address",
    "requested_server_name",
];

#[test]
fn access_log_has_istio_default_fields() {
    let start = UNIX_EPOCH + Duration::from_millis(1_714_566_896_789);
    let mut e = AccessLogEntry::new(start);
    e.route_name = Some("default");
    e.method = Some("GET");
    e.path = Some("/reviews/0?q=\"x\"");
    e.protocol = Some("HTTP/1.1");
    e.response_code = 200;
    e.response_code_details = Some("via_upstream");
    e.bytes_received = 0;
    e.bytes_sent = 295;
    e.duration = Duration::from_micros(3900);
    e.upstream_service_time = Some(Duration::from_millis(2));
    e.user_agent = Some("curl/8.5.0");
    e.request_id = Some("4d28d003-690a-9111-8dfe-4674a728b71c");
    e.authority = Some("reviews:9080");
    e.upstream_host = Some("10.244.0.12:9080".parse().expect("addr"));
    e.upstream_cluster = Some("inbound|9080||");
    e.upstream_local_address = Some("127.0.0.6:43567".parse().expect("addr"));
    e.downstream_local_address = Some("10.244.0.12:9080".parse().expect("addr"));
    e.downstream_remote_address = Some("[fd00::7]:51234".parse().expect("addr"));
    e.requested_server_name = Some("outbound_.9080_._.reviews.bookinfo.svc.cluster.local");
    let line = access_log_json(&e);
    assert!(!line.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&line).expect("valid JSON");
    let obj = v.as_object().expect("object");
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, ACCESS_LOG_FIELDS, "every field, in Istio's order");
    assert_eq!(v["start_time"], "2024-05-01T12:34:56.789Z");
    assert_eq!(v["path"], "/reviews/0?q=\"x\"");
    assert_eq!(v["response_code"], 200);
    assert_eq!(v["response_flags"], "-");
    assert_eq!(v["bytes_sent"], 295);
    assert_eq!(v["duration"], 3);
    assert_eq!(v["upstream_service_time"], "2");
    assert_eq!(v["downstream_remote_address"], "[fd00::7]:51234");
    assert!(v["x_forwarded_for"].is_null());
    assert!(v["connection_termination_details"].is_null());
    assert!(v["upstream_transport_failure_reason"].is_null());

    // A request that never reached an upstream.
    let mut e = AccessLogEntry::new(UNIX_EPOCH + Duration::from_secs(951_868_799));
    e.response_code = 404;
    e.response_flags = "NR";
    e.response_code_details = Some("route_not_found");
    e.user_agent = Some("");
    let v: serde_json::Value = serde_json::from_str(&access_log_json(&e)).expect("valid JSON");
    assert_eq!(
        v.as_object().expect("object").len(),
        ACCESS_LOG_FIELDS.len()
    );
    assert_eq!(v["start_time"], "2000-02-29T23:59:59.000Z");
    assert_eq!(v["response_flags"], "NR");
    for k in [
        "upstream_host",
        "upstream_cluster",
        "method",
        "user_agent",
        "route_name",
    ] {
        assert!(v[k].is_null(), "{k}");
    }
}

#[test]
fn access_log_escapes_control_characters() {
    let mut e = AccessLogEntry::new(SystemTime::UNIX_EPOCH);
    e.user_agent = Some("a\u{1}b\tc\\");
    let v: serde_json::Value = serde_json::from_str(&access_log_json(&e)).expect("valid JSON");
    assert_eq!(v["user_agent"], "a\u{1}b\tc\\");
    assert_eq!(v["start_time"], "1970-01-01T00:00:00.000Z");
}

// ------------------------------------------------------------------ tracing

/// A deterministic id source: 1, 2, 3, … times a large odd constant.
fn counter() -> impl FnMut() -> u64 {
    let mut n = 0u64;
    move || {
        n += 1;
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
}

fn get<'h>(h: &'h HeaderMap, name: &str) -> &'h str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name}"))
        .to_str()
        .expect("ascii")
}

/// Both families describe the same trace and span.
fn assert_consistent(h: &HeaderMap, ctx: &TraceContext) {
    let tp: Vec<&str> = get(h, "traceparent").split('-').collect();
    assert_eq!(tp.len(), 4);
    assert_eq!(tp[0], "00");
    assert_eq!(tp[1], format!("{:032x}", ctx.trace_id));
    assert_eq!(tp[2], format!("{:016x}", ctx.span_id));
    assert_eq!(tp[3].len(), 2);
    let b3_trace = get(h, "x-b3-traceid");
    assert_eq!(
        u128::from_str_radix(b3_trace, 16).expect("hex"),
        ctx.trace_id
    );
    assert_eq!(get(h, "x-b3-spanid"), tp[2]);
    let sampled = u8::from_str_radix(tp[3], 16).expect("flags") & 1 == 1;
    assert_eq!(get(h, "x-b3-sampled"), if sampled { "1" } else { "0" });
    assert_eq!(sampled, ctx.sampled);
    match ctx.parent_span_id {
        Some(p) => assert_eq!(get(h, "x-b3-parentspanid"), format!("{p:016x}")),
        None => assert!(h.get("x-b3-parentspanid").is_none()),
    }
}

#[test]
fn starts_a_new_trace_in_both_formats() {
    let mut h = HeaderMap::new();
    h.insert("x-request-id", HeaderValue::from_static("abc-123"));
    let ctx = propagate_trace(&mut h, true, counter()).expect("generated");
    assert!(ctx.sampled);
    assert_eq!(ctx.parent_span_id, None);
    assert_ne!(ctx.trace_id, 0);
    assert_ne!(ctx.span_id, 0);
    assert_consistent(&h, &ctx);
    assert!(get(&h, "traceparent").ends_with("-01"));
    assert_eq!(get(&h, "x-b3-traceid").len(), 32);
    assert_eq!(get(&h, "x-request-id"), "abc-123", "x-request-id untouched");

    // Deterministic for a deterministic source.
    let mut h2 = HeaderMap::new();
    assert_eq!(propagate_trace(&mut h2, true, counter()), Some(ctx));
}

#[test]
fn no_context_and_no_generation_leaves_headers_alone() {
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static("garbage"));
    assert_eq!(propagate_trace(&mut h, false, counter()), None);
    assert_eq!(get(&h, "traceparent"), "garbage");
    assert!(h.get("x-b3-traceid").is_none());
}

#[test]
fn child_span_keeps_the_w3c_trace() {
    let mut h = HeaderMap::new();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    h.insert("traceparent", HeaderValue::from_static(parent));
    h.insert("tracestate", HeaderValue::from_static("congo=t61rcWkgMzE"));
    h.insert("x-request-id", HeaderValue::from_static("rid"));
    let ctx = propagate_trace(&mut h, true, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(ctx.parent_span_id, Some(0x00f067aa0ba902b7));
    assert_ne!(ctx.span_id, 0x00f067aa0ba902b7);
    assert!(ctx.sampled);
    assert_consistent(&h, &ctx);
    assert!(get(&h, "traceparent").starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert_eq!(get(&h, "tracestate"), "congo=t61rcWkgMzE");
    assert_eq!(get(&h, "x-request-id"), "rid");

    // A second hop chains again: the parent is the previous child.
    let ctx2 = propagate_trace(&mut h, true, counter()).expect("continued");
    assert_eq!(ctx2.trace_id, ctx.trace_id);
    assert_eq!(ctx2.parent_span_id, Some(ctx.span_id));
    assert_consistent(&h, &ctx2);

    // Not sampled stays not sampled, in both families.
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
    );
    let ctx = propagate_trace(&mut h, true, counter()).expect("continued");
    assert!(!ctx.sampled);
    assert_consistent(&h, &ctx);
    assert!(get(&h, "traceparent").ends_with("-00"));
}

#[test]
fn child_span_from_b3_only() {
    let mut h = HeaderMap::new();
    h.insert("x-b3-traceid", HeaderValue::from_static("80f198ee56343ba8"));
    h.insert("x-b3-spanid", HeaderValue::from_static("e457b5a2e4d86bd1"));
    h.insert(
        "x-b3-parentspanid",
        HeaderValue::from_static("05e3ac9a4f6e3b90"),
    );
    h.insert("x-b3-sampled", HeaderValue::from_static("1"));
    let ctx = propagate_trace(&mut h, false, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x80f198ee56343ba8);
    assert_eq!(ctx.parent_span_id, Some(0xe457b5a2e4d86bd1));
    assert_consistent(&h, &ctx);
    // A 64-bit B3 trace id stays 64-bit in B3 and is zero-padded in W3C.
    assert_eq!(get(&h, "x-b3-traceid"), "80f198ee56343ba8");
    assert!(get(&h, "traceparent").starts_with("00-000000000000000080f198ee56343ba8-"));

    // Single-header b3 is read, and rewritten consistently.
    let mut h = HeaderMap::new();
    h.insert(
        "b3",
        HeaderValue::from_static("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
    );
    let ctx = propagate_trace(&mut h, true, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x80f198ee56343ba864fe8b2a57d3eff7);
    assert!(!ctx.sampled);
    assert_consistent(&h, &ctx);
    assert_eq!(
        get(&h, "b3"),
        format!(
            "80f198ee56343ba864fe8b2a57d3eff7-{:016x}-0-e457b5a2e4d86bd1",
            ctx.span_id
        )
    );
}

#[test]
fn malformed_traceparent_is_replaced() {
    for bad in [
        "garbage",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // version ff
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", // extra field in v00
        "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  // short trace id
    ] {
        let mut h = HeaderMap::new();
        h.insert("traceparent", HeaderValue::from_static(bad));
        let ctx = propagate_trace(&mut h, true, counter()).expect("new trace");
        assert_eq!(ctx.parent_span_id, None, "{bad}");
        assert_ne!(get(&h, "traceparent"), bad);
        assert_consistent(&h, &ctx);
    }

    // Malformed traceparent beside valid B3: B3 is continued, traceparent fixed.
    let mut h = HeaderMap::new();
    h.insert("traceparent", HeaderValue::from_static("nonsense"));
    h.insert(
        "x-b3-traceid",
        HeaderValue::from_static("463ac35c9f6413ad48485a3953bb6124"),
    );
    h.insert("x-b3-spanid", HeaderValue::from_static("a2fb4a1d1a96d312"));
    let ctx = propagate_trace(&mut h, false, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x463ac35c9f6413ad48485a3953bb6124);
    assert_eq!(ctx.parent_span_id, Some(0xa2fb4a1d1a96d312));
    assert!(ctx.sampled, "absent x-b3-sampled means sampled");
    assert_consistent(&h, &ctx);

    // A later W3C version with extra fields is accepted and rewritten as 00.
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"),
    );
    let ctx = propagate_trace(&mut h, false, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_consistent(&h, &ctx);
}

#[test]
fn w3c_wins_over_disagreeing_b3() {
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    h.insert("x-b3-traceid", HeaderValue::from_static("1111111111111111"));
    h.insert("x-b3-spanid", HeaderValue::from_static("2222222222222222"));
    let ctx = propagate_trace(&mut h, true, counter()).expect("continued");
    assert_eq!(ctx.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_consistent(&h, &ctx);
    assert_eq!(get(&h, "x-b3-traceid"), "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[test]
fn zero_ids_from_the_random_source_are_skipped() {
    let mut vals = [0u64, 0, 5, 0, 6, 7].into_iter();
    let mut h = HeaderMap::new();
    let ctx = propagate_trace(&mut h, true, move || vals.next().unwrap_or(9)).expect("new");
    assert_eq!(ctx.trace_id, (5u128 << 64) | 6);
    assert_eq!(ctx.span_id, 7);
    assert_consistent(&h, &ctx);
}

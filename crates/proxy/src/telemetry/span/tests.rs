//! Unit tests of the tracing decision, span starting and span building.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{GrpcService, grpc_service};
use envoy_types::pb::envoy::config::trace::v3::{OpenTelemetryConfig, tracing::Http, tracing::http};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::Tracing;
use envoy_types::pb::envoy::r#type::v3::Percent;
use envoy_types::pb::google::protobuf::{Any, BoolValue, UInt32Value};
use ::http::{HeaderMap, HeaderValue};
use prost::Message;

use super::*;

const RID: &str = "0000abcd-1111-4222-8333-444455556666";

fn provider(c: OpenTelemetryConfig) -> Option<Http> {
    Some(Http {
        name: "envoy.tracers.opentelemetry".into(),
        config_type: Some(http::ConfigType::TypedConfig(Any {
            type_url: OTEL_TYPE.into(),
            value: c.encode_to_vec(),
        })),
    })
}

fn otel() -> OpenTelemetryConfig {
    OpenTelemetryConfig {
        grpc_service: Some(GrpcService {
            target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
                grpc_service::EnvoyGrpc {
                    cluster_name: "otel".into(),
                    ..Default::default()
                },
            )),
            ..Default::default()
        }),
        service_name: "svc".into(),
        ..Default::default()
    }
}

fn tracing(random: f64) -> Tracing {
    Tracing {
        random_sampling: Some(Percent { value: random }),
        provider: provider(otel()),
        ..Default::default()
    }
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (n, v) in pairs {
        h.insert(*n, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn rid(h: &HeaderMap) -> &str {
    h["x-request-id"].to_str().unwrap()
}

#[test]
fn trace_decision_follows_envoy_sampling_and_request_id() {
    let all = compile(&tracing(100.0), 2).unwrap();
    let none = compile(&tracing(0.0), 2).unwrap();
    // Not a UUID: never traced, left alone.
    let mut h = headers(&[("x-request-id", "abc")]);
    assert_eq!(all.decide(&mut h, false, 0), Reason::NotTraceable);
    assert_eq!(rid(&h), "abc");
    // Sampled: stamped `9` in the 15th character.
    let mut h = headers(&[("x-request-id", RID)]);
    assert_eq!(all.decide(&mut h, false, 0), Reason::Sampling);
    assert_eq!(rid(&h), "0000abcd-1111-9222-8333-444455556666");
    // An id already stamped keeps its decision, even at 0%.
    assert_eq!(none.decide(&mut h, false, 0), Reason::Sampling);
    // 0%: not traced, the id unchanged (`4` already).
    let mut h = headers(&[("x-request-id", RID)]);
    assert_eq!(none.decide(&mut h, false, 0), Reason::NotTraceable);
    assert_eq!(rid(&h), RID);
    // x-client-trace-id forces (client_sampling default 100%).
    let mut h = headers(&[("x-request-id", RID), ("x-client-trace-id", "c")]);
    assert_eq!(none.decide(&mut h, false, 0), Reason::ClientForced);
    assert_eq!(&rid(&h)[14..15], "b");
    // x-envoy-force-trace only from an internal address.
    let mut h = headers(&[("x-request-id", RID), ("x-envoy-force-trace", "1")]);
    assert_eq!(none.decide(&mut h, false, 0), Reason::NotTraceable);
    assert_eq!(none.decide(&mut h, true, 0), Reason::ServiceForced);
    assert_eq!(&rid(&h)[14..15], "a");
    // overall_sampling caps everything, and re-stamps `4`.
    let mut t = tracing(100.0);
    t.overall_sampling = Some(Percent { value: 0.0 });
    let capped = compile(&t, 2).unwrap();
    let mut h = headers(&[("x-request-id", "0000abcd-1111-9222-8333-444455556666")]);
    assert_eq!(capped.decide(&mut h, false, 0), Reason::NotTraceable);
    assert_eq!(rid(&h), RID);
    // Random sampling uses the id's first 32 bits modulo 10000.
    let half = compile(&tracing(50.0), 2).unwrap();
    let low = "00001387-1111-4222-8333-444455556666"; // 4999
    let high = "00001388-1111-4222-8333-444455556666"; // 5000
    assert_eq!(
        half.decide(&mut headers(&[("x-request-id", low)]), false, 0),
        Reason::Sampling
    );
    assert_eq!(
        half.decide(&mut headers(&[("x-request-id", high)]), false, 0),
        Reason::NotTraceable
    );
}

fn parts(pairs: &[(&'static str, &str)]) -> ::http::request::Parts {
    let mut req = ::http::Request::get("/p?q=1").body(()).unwrap();
    *req.headers_mut() = headers(pairs);
    req.headers_mut()
        .insert("host", HeaderValue::from_static("reviews:9080"));
    req.into_parts().0
}

fn info(stats: &Arc<OtlpStats>) -> StartInfo<'_> {
    StartInfo {
        peer: "10.0.0.9".parse().unwrap(),
        internal: false,
        generate_request_id: true,
        node_id: "node-1",
        zone: "z1",
        stats,
    }
}

fn no_cluster() -> Resolve {
    Arc::new(|_: &str| Err("none".to_string()))
}

const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test]
async fn trace_start_continues_w3c_only() {
    let stats = Arc::default();
    let t = compile(&tracing(100.0), 2).unwrap();
    let mut p = parts(&[("traceparent", TP), ("x-b3-spanid", "b7ad6b7169203331")]);
    let span = t.start(&mut p, &info(&stats), no_cluster).expect("sampled");
    assert_eq!(span.ctx.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
    assert_eq!(span.ctx.parent_span_id, Some(0xb7ad6b7169203331));
    let tp = format!(
        "00-0af7651916cd43dd8448eb211c80319c-{:016x}-01",
        span.ctx.span_id
    );
    assert_eq!(p.headers["traceparent"], tp.as_str());
    assert_eq!(p.headers["tracestate"], "");
    assert_eq!(p.headers["x-b3-spanid"], "b7ad6b7169203331", "B3 untouched");
    assert_eq!(
        &rid(&p.headers)[14..15],
        "9",
        "a request id is made and stamped"
    );

    // An unsampled parent: propagated unsampled, no span.
    let mut p = parts(&[("traceparent", &TP.replace("-01", "-00"))]);
    assert!(t.start(&mut p, &info(&stats), no_cluster).is_none());
    assert!(p.headers["traceparent"].to_str().unwrap().ends_with("-00"));
    // A malformed traceparent: no span, nothing written.
    let mut p = parts(&[("traceparent", "00-zz-1-01")]);
    assert!(t.start(&mut p, &info(&stats), no_cluster).is_none());
    assert_eq!(p.headers["traceparent"], "00-zz-1-01");
    // No grpc_service: propagated, not reported.
    let mut c = otel();
    c.grpc_service = None;
    let t = compile(
        &Tracing {
            provider: provider(c),
            ..tracing(100.0)
        },
        2,
    )
    .unwrap();
    let mut p = parts(&[]);
    assert!(t.start(&mut p, &info(&stats), no_cluster).is_none());
    assert!(p.headers["traceparent"].to_str().unwrap().ends_with("-01"));
    // no_context_propagation: reported, not propagated.
    let t = compile(
        &Tracing {
            no_context_propagation: true,
            ..tracing(100.0)
        },
        1,
    )
    .unwrap();
    let mut p = parts(&[]);
    assert!(t.start(&mut p, &info(&stats), no_cluster).is_some());
    assert!(!p.headers.contains_key("traceparent"));
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a str> {
    s.attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(v) => {
                Some(v.as_str())
            }
            _ => None,
        }
    })
}

#[tokio::test]
async fn trace_span_attributes_kind_and_status() {
    let stats = Arc::default();
    let mut tr = tracing(100.0);
    tr.max_path_tag_length = Some(UInt32Value { value: 3 });
    tr.custom_tags = vec![envoy_types::pb::envoy::r#type::tracing::v3::CustomTag {
        tag: "user".into(),
        r#type: Some(custom_tag::Type::RequestHeader(
            envoy_types::pb::envoy::r#type::tracing::v3::custom_tag::Header {
                name: "x-user".into(),
                default_value: "nobody".into(),
            },
        )),
    }];
    let egress = compile(&tr, 2).unwrap();
    let ingress = compile(&tr, 1).unwrap();
    let mut p = parts(&[("traceparent", TP)]);
    let mut span = egress.start(&mut p, &info(&stats), no_cluster).unwrap();
    span.set_cluster(Some("up".into()));
    let s = span.build(404, "-", 7, 9, SystemTime::now());
    assert_eq!(s.name, "egress reviews:9080");
    assert_eq!(s.kind, span::SpanKind::Client as i32);
    assert_eq!(s.parent_span_id, 0xb7ad6b7169203331u64.to_be_bytes());
    assert_eq!(
        s.status.as_ref().map(|s| s.code),
        Some(status::StatusCode::Error as i32)
    );
    assert_eq!(attr(&s, "error"), None);
    assert_eq!(attr(&s, "http.url"), Some("http://reviews:9080/p?"));
    assert_eq!(attr(&s, "http.status_code"), Some("404"));
    assert_eq!(attr(&s, "upstream_cluster"), Some("up"));
    assert_eq!(attr(&s, "request_size"), Some("7"));
    assert_eq!(attr(&s, "response_size"), Some("9"));
    assert_eq!(attr(&s, "peer.address"), Some("10.0.0.9"));
    assert_eq!(attr(&s, "node_id"), Some("node-1"));
    assert_eq!(attr(&s, "user"), Some("nobody"));
    assert_eq!(attr(&s, "component"), Some("proxy"));

    let mut p = parts(&[("x-user", "jason")]);
    let span = ingress.start(&mut p, &info(&stats), no_cluster).unwrap();
    let ok = span.build(404, "-", 0, 0, SystemTime::now());
    assert_eq!(
        (ok.name.as_str(), ok.kind),
        ("ingress", span::SpanKind::Server as i32)
    );
    assert!(ok.status.is_none(), "4xx is not an error on a SERVER span");
    assert!(ok.parent_span_id.is_empty());
    assert_eq!(attr(&ok, "user"), Some("jason"));
    let failed = span.build(503, "UF", 0, 0, SystemTime::now());
    assert!(failed.status.is_some());
    assert_eq!(attr(&failed, "error"), Some("true"));
    assert_eq!(attr(&failed, "response_flags"), Some("UF"));
}

#[test]
fn otlp_config_refusals_name_their_fields() {
    let refused = |t: Tracing| compile(&t, 0).unwrap_err().join("; ");
    let e = refused(Tracing {
        spawn_upstream_span: Some(BoolValue { value: true }),
        ..tracing(1.0)
    });
    assert!(e.starts_with("spawn_upstream_span:"), "{e}");
    let mut c = otel();
    c.sampler = Some(Default::default());
    c.resource_detectors = vec![Default::default()];
    let e = refused(Tracing {
        provider: provider(c),
        ..tracing(1.0)
    });
    assert!(e.contains("provider.typed_config.sampler:"), "{e}");
    assert!(
        e.contains("provider.typed_config.resource_detectors:"),
        "{e}"
    );
    let mut c = otel();
    c.grpc_service = Some(GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::GoogleGrpc(Default::default())),
        ..Default::default()
    });
    let e = refused(Tracing {
        provider: provider(c),
        ..tracing(1.0)
    });
    assert!(
        e.contains("provider.typed_config.grpc_service.google_grpc:"),
        "{e}"
    );
    let zipkin = Http {
        name: "envoy.tracers.zipkin".into(),
        config_type: Some(http::ConfigType::TypedConfig(Any {
            type_url: "type.googleapis.com/envoy.config.trace.v3.ZipkinConfig".into(),
            value: vec![],
        })),
    };
    let e = refused(Tracing {
        provider: Some(zipkin),
        ..tracing(1.0)
    });
    assert!(e.contains("only envoy.tracers.opentelemetry"), "{e}");
    // Defaults: 100% sampling, path tags of 256, service name, cache 1024.
    let t = compile(
        &Tracing {
            provider: provider(OpenTelemetryConfig {
                service_name: String::new(),
                ..otel()
            }),
            ..Default::default()
        },
        0,
    )
    .unwrap();
    assert_eq!(
        (t.client_sampling, t.random_sampling, t.overall_sampling),
        (10_000, 10_000, 10_000)
    );
    assert_eq!(t.max_path_tag_length, 256);
    assert!(!t.egress);
    let e = t.exporter.unwrap();
    assert_eq!(
        (e.service_name.as_str(), e.max_cache_size),
        ("unknown_service:envoy", 1024)
    );
}

#[test]
fn otlp_request_carries_service_name_and_scope() {
    let mut c = compile(&tracing(1.0), 0).unwrap().exporter.unwrap();
    let r = super::super::otlp::request(&c, vec![Span::default()]);
    let res = r.resource_spans[0].resource.as_ref().unwrap();
    let keys: Vec<&str> = res.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert!(keys.contains(&"service.name") && keys.contains(&"telemetry.sdk.name"));
    assert_eq!(
        r.resource_spans[0].scope_spans[0]
            .scope
            .as_ref()
            .unwrap()
            .name,
        "envoy"
    );
    c.sdk_attributes = false;
    c.scope = false;
    let r = super::super::otlp::request(&c, vec![]);
    assert_eq!(
        r.resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .len(),
        1
    );
    assert!(r.resource_spans[0].scope_spans[0].scope.is_none());
}

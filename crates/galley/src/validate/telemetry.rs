//! Rules for `telemetry.istio.io` `Telemetry`, after istio/istio
//! `pkg/config/validation/validation.go` (`ValidateTelemetry`).
//!
//! Differences from Istio: the access-log `filter.expression` is checked for CEL
//! syntax that is obviously broken (empty, unbalanced brackets or quotes) rather than
//! parsed by a CEL parser; tag override names that Prometheus cannot use as label
//! names are warned about.

use common::istio::telemetry::{
    AccessLogging, CustomTag, Metrics, ProviderRef, TagOperation, TelemetrySpec, Tracing,
};

use super::checks;
use super::field::{Field, ResourceCtx};
use super::security::policy_scope;

/// `Telemetry` rules; `f` is at `spec`.
pub fn telemetry(spec: &TelemetrySpec, _r: &ResourceCtx<'_>, f: &mut Field<'_>) {
    policy_scope(
        f,
        spec.selector.as_ref(),
        spec.target_ref.as_ref(),
        &spec.target_refs,
    );
    if spec.tracing.len() > 1 {
        f.at("tracing").warn(
            "multiple tracing entries are not currently supported; only the first one is used, so merge them",
        );
    }
    for (i, t) in spec.tracing.iter().enumerate() {
        tracing(&mut f.at("tracing").index(i), t);
    }
    for (i, m) in spec.metrics.iter().enumerate() {
        metrics(&mut f.at("metrics").index(i), m);
    }
    for (i, l) in spec.access_logging.iter().enumerate() {
        access_logging(&mut f.at("accessLogging").index(i), l);
    }
}

fn providers(f: &mut Field<'_>, list: &[ProviderRef]) {
    for (i, p) in list.iter().enumerate() {
        if p.name.trim().is_empty() {
            f.index(i).at("name").error(
                "providers.name may not be empty; name a provider from meshConfig.extensionProviders",
            );
        }
    }
}

fn tracing(f: &mut Field<'_>, t: &Tracing) {
    if t.providers.len() > 1 {
        f.at("providers")
            .warn("multiple providers is not currently supported; only the first provider is used");
    }
    providers(&mut f.at("providers"), &t.providers);
    if let Some(p) = t.random_sampling_percentage
        && (!(0.0..=100.0).contains(&p) || p.is_nan())
    {
        f.at("randomSamplingPercentage").error(format!(
            "randomSamplingPercentage must be in range [0.0, 100.0]; got {p}"
        ));
    }
    for (name, tag) in &t.custom_tags {
        let mut tags = f.at("customTags");
        let mut tf = tags.key(name);
        if name.is_empty() {
            tf.error("tag name may not be empty");
        }
        custom_tag(&mut tf, tag);
    }
}

fn custom_tag(f: &mut Field<'_>, tag: &CustomTag) {
    let ok = checks::exactly_one(
        f,
        &[
            ("literal", tag.literal.is_some()),
            ("environment", tag.environment.is_some()),
            ("header", tag.header.is_some()),
            ("formatter", tag.formatter.is_some()),
        ],
    );
    if !ok {
        return;
    }
    if let Some(l) = &tag.literal
        && l.value.is_empty()
    {
        f.at("literal")
            .at("value")
            .error("literal tag value may not be empty");
    }
    if let Some(e) = &tag.environment
        && e.name.is_empty()
    {
        f.at("environment")
            .at("name")
            .error("environment tag name may not be empty");
    }
    if let Some(h) = &tag.header {
        if h.name.is_empty() {
            f.at("header")
                .at("name")
                .error("header tag name may not be empty");
        } else {
            checks::header_name(&mut f.at("header").at("name"), &h.name, false);
        }
    }
    if let Some(fm) = &tag.formatter
        && fm.value.is_empty()
    {
        f.at("formatter")
            .at("value")
            .error("formatter tag value may not be empty");
    }
}

/// Whether `name` can be a Prometheus label name.
fn prometheus_label_ok(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn metrics(f: &mut Field<'_>, m: &Metrics) {
    providers(&mut f.at("providers"), &m.providers);
    if let Some(d) = &m.reporting_interval {
        checks::istio_duration(&mut f.at("reportingInterval"), d);
    }
    for (i, o) in m.overrides.iter().enumerate() {
        let mut ol = f.at("overrides");
        let mut of = ol.index(i);
        if let Some(sel) = &o.match_ {
            let mut mf = of.at("match");
            let one = checks::at_most_one(
                &mut mf,
                &[
                    ("metric", sel.metric.is_some()),
                    ("customMetric", sel.custom_metric.is_some()),
                ],
            );
            if one && sel.custom_metric.as_deref() == Some("") {
                mf.at("customMetric").error("customMetric may not be empty");
            }
        }
        for (name, to) in &o.tag_overrides {
            let mut tl = of.at("tagOverrides");
            let mut tf = tl.key(name);
            if name.is_empty() {
                tf.warn("tagOverrides.name may not be empty");
            } else if !prometheus_label_ok(name) {
                tf.warn(format!(
                    "tag name {name:?} is not a valid Prometheus label name; use letters, digits and '_', not starting with a digit"
                ));
            }
            let has_value = to.value.as_deref().is_some_and(|v| !v.is_empty());
            match to.operation.unwrap_or_default() {
                TagOperation::Upsert if !has_value => tf.at("value").error(
                    "tagOverrides.value must be set when operation is UPSERT (the default); give a CEL expression such as request.host",
                ),
                TagOperation::Remove if to.value.is_some() => tf.at("value").error(
                    "tagOverrides.value may only be set when operation is UPSERT; remove it for REMOVE",
                ),
                _ => {}
            }
        }
    }
}

fn access_logging(f: &mut Field<'_>, l: &AccessLogging) {
    providers(&mut f.at("providers"), &l.providers);
    if let Some(filter) = &l.filter {
        let expr = filter.expression.as_deref().unwrap_or("");
        if let Some(why) = cel_syntax_problem(expr) {
            f.at("filter")
                .at("expression")
                .error(format!("must be a valid CEL expression: {why}"));
        }
    }
}

/// A cheap syntax check for CEL expressions: not empty, brackets balanced and
/// quotes closed. Returns why it is broken, or `None`.
fn cel_syntax_problem(expr: &str) -> Option<String> {
    if expr.trim().is_empty() {
        return Some("it is empty; write a condition such as response.code >= 400".into());
    }
    let mut stack = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' => quote = Some(c),
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if stack.pop() != Some(want) {
                    return Some(format!("unbalanced {c:?}"));
                }
            }
            _ => {}
        }
    }
    if quote.is_some() {
        return Some("a string literal is not closed".into());
    }
    if let Some(open) = stack.pop() {
        return Some(format!("{open:?} is not closed"));
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::validate::Level;
    use crate::validate::test_support::{expect, spec_findings};

    fn run(spec: Value, level: Level) -> Vec<(String, String)> {
        spec_findings(
            "telemetry.istio.io/v1",
            "Telemetry",
            ("t", "istio-system"),
            spec,
            level,
        )
    }

    #[test]
    fn documented_examples_are_valid() {
        let spec = json!({
            "selector": {"matchLabels": {"app": "frontend"}},
            "tracing": [{"providers": [{"name": "zipkin"}], "randomSamplingPercentage": 10,
                "customTags": {"env": {"environment": {"name": "ENV"}}, "lit": {"literal": {"value": "x"}}}}],
            "metrics": [{"providers": [{"name": "prometheus"}], "reportingInterval": "10s",
                "overrides": [{"match": {"metric": "REQUEST_COUNT", "mode": "CLIENT"},
                               "tagOverrides": {"request_host": {"value": "request.host"},
                                                "request_protocol": {"operation": "REMOVE"}}},
                              {"match": {"customMetric": "my_metric"}, "disabled": true}]}],
            "accessLogging": [{"providers": [{"name": "envoy"}],
                "filter": {"expression": "response.code >= 400 || xds.cluster_name.startsWith('outbound')"}}]
        });
        assert!(
            run(spec.clone(), Level::Error).is_empty(),
            "{:#?}",
            run(spec.clone(), Level::Error)
        );
        assert!(
            run(spec.clone(), Level::Warning).is_empty(),
            "{:#?}",
            run(spec, Level::Warning)
        );
    }

    #[test]
    fn provider_names_and_sampling() {
        let e = run(
            json!({"tracing": [{"providers": [{"name": ""}], "randomSamplingPercentage": 120.5}],
                           "metrics": [{"providers": [{}]}],
                           "accessLogging": [{"providers": [{"name": " "}]}]}),
            Level::Error,
        );
        expect(&e, "spec.tracing[0].providers[0].name", "may not be empty");
        expect(
            &e,
            "spec.tracing[0].randomSamplingPercentage",
            "[0.0, 100.0]; got 120.5",
        );
        expect(&e, "spec.metrics[0].providers[0].name", "may not be empty");
        expect(
            &e,
            "spec.accessLogging[0].providers[0].name",
            "may not be empty",
        );
        let e = run(
            json!({"tracing": [{"randomSamplingPercentage": -1}]}),
            Level::Error,
        );
        expect(
            &e,
            "spec.tracing[0].randomSamplingPercentage",
            "[0.0, 100.0]",
        );
    }

    #[test]
    fn custom_tags() {
        let e = run(
            json!({"tracing": [{"customTags": {
                "both": {"literal": {"value": "a"}, "header": {"name": "x"}},
                "none": {},
                "lit": {"literal": {"value": ""}},
                "env": {"environment": {}},
                "hdr": {"header": {"name": "bad header"}},
                "fmt": {"formatter": {"value": ""}}
            }}]}),
            Level::Error,
        );
        expect(
            &e,
            "spec.tracing[0].customTags.both",
            "only one of literal, environment, header, formatter",
        );
        expect(
            &e,
            "spec.tracing[0].customTags.none",
            "exactly one of literal, environment, header, formatter",
        );
        expect(
            &e,
            "spec.tracing[0].customTags.lit.literal.value",
            "literal tag value may not be empty",
        );
        expect(
            &e,
            "spec.tracing[0].customTags.env.environment.name",
            "environment tag name may not be empty",
        );
        expect(
            &e,
            "spec.tracing[0].customTags.hdr.header.name",
            "not a valid HTTP header name",
        );
        expect(
            &e,
            "spec.tracing[0].customTags.fmt.formatter.value",
            "may not be empty",
        );
    }

    #[test]
    fn tag_overrides_and_metric_selectors() {
        let e = run(
            json!({"metrics": [{"reportingInterval": "0s", "overrides": [
                {"match": {"metric": "REQUEST_COUNT", "customMetric": "x"}},
                {"match": {"customMetric": ""}},
                {"tagOverrides": {"a": {}, "b": {"operation": "UPSERT", "value": ""}, "c": {"operation": "REMOVE", "value": "x"}}}
            ]}]}),
            Level::Error,
        );
        expect(&e, "spec.metrics[0].reportingInterval", "at least 1ms");
        expect(
            &e,
            "spec.metrics[0].overrides[0].match",
            "only one of metric, customMetric",
        );
        expect(
            &e,
            "spec.metrics[0].overrides[1].match.customMetric",
            "may not be empty",
        );
        expect(
            &e,
            "spec.metrics[0].overrides[2].tagOverrides.a.value",
            "must be set when operation is UPSERT",
        );
        expect(
            &e,
            "spec.metrics[0].overrides[2].tagOverrides.b.value",
            "must be set when operation is UPSERT",
        );
        expect(
            &e,
            "spec.metrics[0].overrides[2].tagOverrides.c.value",
            "only be set when operation is UPSERT",
        );
        let w = run(
            json!({"metrics": [{"overrides": [{"tagOverrides": {"9bad-name": {"value": "x"}}}]}]}),
            Level::Warning,
        );
        expect(
            &w,
            "spec.metrics[0].overrides[0].tagOverrides.9bad-name",
            "not a valid Prometheus label name",
        );
    }

    #[test]
    fn access_log_filters_and_scope() {
        let e = run(
            json!({"accessLogging": [{"filter": {"expression": "response.code >= (400"}},
                                              {"filter": {}},
                                              {"filter": {"expression": "x == 'a"}}]}),
            Level::Error,
        );
        expect(
            &e,
            "spec.accessLogging[0].filter.expression",
            "'(' is not closed",
        );
        expect(&e, "spec.accessLogging[1].filter.expression", "it is empty");
        expect(&e, "spec.accessLogging[2].filter.expression", "not closed");
        let e = run(
            json!({"selector": {"matchLabels": {"app": "a"}},
                           "targetRef": {"kind": "Service", "name": "s"}}),
            Level::Error,
        );
        expect(&e, "spec", "only one of selector, targetRef, targetRefs");
        let w = run(
            json!({"tracing": [{"providers": [{"name": "a"}, {"name": "b"}]}, {}]}),
            Level::Warning,
        );
        expect(&w, "spec.tracing", "multiple tracing entries");
        expect(&w, "spec.tracing[0].providers", "multiple providers");
    }
}

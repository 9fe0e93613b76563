//! `envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication` compiled
//! into a [`JwtAuthn`]. Honoured: providers' `issuer`, `audiences`,
//! `local_jwks` (`inline_string`, `inline_bytes`, `filename`, read once when
//! the listener compiles), `from_headers`, `from_params`, `from_cookies`,
//! `forward`, `forward_payload_header`, `pad_forward_payload_header`,
//! `payload_in_metadata`, `claim_to_headers`, `clock_skew_seconds`,
//! `clear_route_cache`; rules with a route match and an inline requirement
//! (`provider_name`, `provider_and_audiences`, `requires_any`,
//! `requires_all`, `allow_missing`, `allow_missing_or_failed`);
//! `bypass_cors_preflight`. Refused by field path: `remote_jwks` (pilot
//! inlines the keys), `subjects`, `require_expiration`, `max_lifetime`,
//! `normalize_payload_in_metadata`, `header_in_metadata`,
//! `failed_status_in_metadata`, `jwt_cache_config`, `claim_path`,
//! `extract_only_without_validation`, `requirement_name`, `requirement_map`,
//! `filter_state_rules`, `strip_failure_response` and `stat_prefix`.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source};
use envoy_types::pb::envoy::extensions::filters::http::jwt_authn::v3::{
    JwtAuthentication, JwtProvider, JwtRequirement, jwt_provider, jwt_requirement, requirement_rule,
};
use http::header::HeaderName;
use prost::Message;

use super::token::{self, normalize_audience};
use super::{JwtAuthn, Location, Provider, Requirement};
use crate::route::compile_route_match;

/// Type URL of the filter's config.
pub const JWT_AUTHN_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";

type Result<T> = std::result::Result<T, Vec<String>>;

/// Compiles the filter's config (the `typed_config` value).
pub fn filter(bytes: &[u8]) -> Result<JwtAuthn> {
    let f = JwtAuthentication::decode(bytes).map_err(|e| vec![format!("typed_config: {e}")])?;
    let mut errors = Vec::new();
    if f.filter_state_rules.is_some() {
        errors.push("filter_state_rules: not supported".to_string());
    }
    if !f.requirement_map.is_empty() {
        errors.push("requirement_map: not supported; give requirements inline".to_string());
    }
    if f.strip_failure_response {
        errors.push("strip_failure_response: not supported".to_string());
    }
    if !f.stat_prefix.is_empty() {
        errors.push("stat_prefix: not supported".to_string());
    }
    // Providers by name, in name order.
    let names: BTreeMap<&String, &JwtProvider> = f.providers.iter().collect();
    let index: Vec<&String> = names.keys().copied().collect();
    let mut providers = Vec::new();
    for (name, p) in &names {
        match provider(&format!("providers[{name:?}]"), p) {
            Ok(p) => providers.push(p),
            Err(e) => errors.extend(e),
        }
    }
    let mut rules = Vec::new();
    for (i, r) in f.rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        let matcher = match &r.r#match {
            Some(m) => compile_route_match(&format!("{at}.match"), m),
            None => Err(vec![format!("{at}.match: missing")]),
        };
        let req = match &r.requirement_type {
            None => Ok(None),
            Some(requirement_rule::RequirementType::Requires(req)) => {
                requirement(&format!("{at}.requires"), req, &index).map(Some)
            }
            Some(requirement_rule::RequirementType::RequirementName(_)) => Err(vec![format!(
                "{at}.requirement_name: not supported; give the requirement inline"
            )]),
        };
        match (matcher, req) {
            (Ok(m), Ok(req)) => rules.push((m, req)),
            (m, req) => {
                errors.extend(m.err().unwrap_or_default());
                errors.extend(req.err().unwrap_or_default());
            }
        }
    }
    if errors.is_empty() {
        Ok(JwtAuthn {
            providers,
            rules,
            bypass_cors_preflight: f.bypass_cors_preflight,
        })
    } else {
        Err(errors)
    }
}

fn header_name(at: &str, name: &str) -> Result<HeaderName> {
    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| vec![format!("{at}: {name:?} is not a header name")])
}

fn provider(at: &str, p: &JwtProvider) -> Result<Provider> {
    let mut errors = Vec::new();
    let mut refuse = |set: bool, field: &str| {
        if set {
            errors.push(format!("{at}.{field}: not supported"));
        }
    };
    refuse(p.subjects.is_some(), "subjects");
    refuse(p.require_expiration, "require_expiration");
    refuse(p.max_lifetime.is_some(), "max_lifetime");
    refuse(
        p.normalize_payload_in_metadata.is_some(),
        "normalize_payload_in_metadata",
    );
    refuse(!p.header_in_metadata.is_empty(), "header_in_metadata");
    refuse(
        !p.failed_status_in_metadata.is_empty(),
        "failed_status_in_metadata",
    );
    refuse(p.jwt_cache_config.is_some(), "jwt_cache_config");
    let keys = match &p.jwks_source_specifier {
        Some(jwt_provider::JwksSourceSpecifier::LocalJwks(ds)) => {
            jwks(&format!("{at}.local_jwks"), ds)
        }
        Some(jwt_provider::JwksSourceSpecifier::RemoteJwks(_)) => Err(vec![format!(
            "{at}.remote_jwks: not supported: the proxy does not fetch keys (pilot inlines them as local_jwks)"
        )]),
        None => Err(vec![format!("{at}: local_jwks is required")]),
    };
    let keys = match keys {
        Ok(k) => k,
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    let mut locations = Vec::new();
    for (i, h) in p.from_headers.iter().enumerate() {
        match header_name(&format!("{at}.from_headers[{i}].name"), &h.name) {
            Ok(name) => locations.push(Location::Header {
                name,
                prefix: h.value_prefix.clone(),
            }),
            Err(e) => errors.extend(e),
        }
    }
    locations.extend(p.from_params.iter().cloned().map(Location::Param));
    locations.extend(p.from_cookies.iter().cloned().map(Location::Cookie));
    if locations.is_empty() {
        locations.push(Location::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".to_string(),
        });
        locations.push(Location::Param("access_token".to_string()));
    }
    let forward_payload_header = if p.forward_payload_header.is_empty() {
        None
    } else {
        match header_name(
            &format!("{at}.forward_payload_header"),
            &p.forward_payload_header,
        ) {
            Ok(h) => Some(h),
            Err(e) => {
                errors.extend(e);
                None
            }
        }
    };
    let mut claim_to_headers = Vec::new();
    for (i, c) in p.claim_to_headers.iter().enumerate() {
        let here = format!("{at}.claim_to_headers[{i}]");
        if !c.claim_path.is_empty() {
            errors.push(format!("{here}.claim_path: not supported; use claim_name"));
        }
        let path: Vec<String> = c.claim_name.split('.').map(str::to_string).collect();
        if path.iter().any(String::is_empty) {
            errors.push(format!(
                "{here}.claim_name: {:?} is not a claim",
                c.claim_name
            ));
            continue;
        }
        match header_name(&format!("{here}.header_name"), &c.header_name) {
            Ok(h) => claim_to_headers.push((h, path)),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Provider {
        issuer: p.issuer.clone(),
        audiences: p.audiences.iter().map(|a| normalize_audience(a)).collect(),
        keys,
        locations,
        forward: p.forward,
        forward_payload_header,
        pad_forward_payload_header: p.pad_forward_payload_header,
        payload_in_metadata: Some(p.payload_in_metadata.clone()).filter(|k| !k.is_empty()),
        claim_to_headers,
        clock_skew: if p.clock_skew_seconds == 0 {
            60
        } else {
            u64::from(p.clock_skew_seconds)
        },
    })
}

/// The key set of a `local_jwks` data source: `Ok(None)` when it does not
/// parse (Envoy accepts the config; the provider's tokens then fail).
fn jwks(at: &str, ds: &DataSource) -> Result<Option<Vec<token::Key>>> {
    let text = match &ds.specifier {
        Some(data_source::Specifier::InlineString(s)) => s.clone(),
        Some(data_source::Specifier::InlineBytes(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(data_source::Specifier::Filename(f)) => std::fs::read_to_string(f)
            .map_err(|e| vec![format!("{at}.filename: cannot read {f:?}: {e}")])?,
        Some(data_source::Specifier::EnvironmentVariable(_)) => {
            return Err(vec![format!("{at}.environment_variable: not supported")]);
        }
        None => return Err(vec![format!("{at}: no specifier")]),
    };
    let keys = token::keys(&text);
    if keys.is_none() {
        tracing::warn!("{at}: the JWKS does not parse; tokens of this provider will fail");
    }
    Ok(keys)
}

fn requirement(at: &str, r: &JwtRequirement, providers: &[&String]) -> Result<Requirement> {
    use jwt_requirement::RequiresType as T;
    let find = |field: &str, name: &str| {
        providers
            .iter()
            .position(|p| *p == name)
            .ok_or_else(|| vec![format!("{at}.{field}: no provider {name:?}")])
    };
    let list = |field: &str, reqs: &[JwtRequirement]| -> Result<Vec<JwtRequirement>> {
        if reqs.len() < 2 {
            return Err(vec![format!(
                "{at}.{field}.requirements: at least two are required"
            )]);
        }
        Ok(reqs.to_vec())
    };
    Ok(match &r.requires_type {
        Some(T::ProviderName(name)) => Requirement::Provider(find("provider_name", name)?, None),
        Some(T::ProviderAndAudiences(pa)) => Requirement::Provider(
            find("provider_and_audiences.provider_name", &pa.provider_name)?,
            Some(pa.audiences.iter().map(|a| normalize_audience(a)).collect()),
        ),
        Some(T::RequiresAny(any)) => {
            let reqs = list("requires_any", &any.requirements)?;
            let (mut allow_missing, mut allow_missing_or_failed) = (false, false);
            let mut children = Vec::new();
            let mut errors = Vec::new();
            for (i, c) in reqs.iter().enumerate() {
                match &c.requires_type {
                    Some(T::AllowMissing(_)) => allow_missing = true,
                    Some(T::AllowMissingOrFailed(_)) => allow_missing_or_failed = true,
                    _ => match requirement(
                        &format!("{at}.requires_any.requirements[{i}]"),
                        c,
                        providers,
                    ) {
                        Ok(c) => children.push(c),
                        Err(e) => errors.extend(e),
                    },
                }
            }
            if !errors.is_empty() {
                return Err(errors);
            }
            Requirement::Any {
                children,
                allow_missing,
                allow_missing_or_failed,
            }
        }
        Some(T::RequiresAll(all)) => {
            let reqs = list("requires_all", &all.requirements)?;
            let mut children = Vec::new();
            for (i, c) in reqs.iter().enumerate() {
                children.push(requirement(
                    &format!("{at}.requires_all.requirements[{i}]"),
                    c,
                    providers,
                )?);
            }
            Requirement::All(children)
        }
        Some(T::AllowMissing(_)) => Requirement::AllowMissing,
        Some(T::AllowMissingOrFailed(_)) => Requirement::AllowMissingOrFailed,
        Some(T::ExtractOnlyWithoutValidation(_)) => {
            return Err(vec![format!(
                "{at}.extract_only_without_validation: not supported"
            )]);
        }
        None => return Err(vec![format!("{at}: no requirement")]),
    })
}

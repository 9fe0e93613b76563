//! The HTTP connection manager's config compiled ([`Hcm`]): routes, codec,
//! the HTTP filters the data path runs (`jwt_authn` and `rbac`, then
//! `fault`, `cors` and the router), server header, timeouts, path settings
//! and tracing. Refusals name their field path under the filter's
//! `typed_config`.

use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, http_connection_manager, http_filter,
};

use crate::cluster::duration;
use crate::http::auth::AuthFilter;
use crate::http::path::{EscapedSlashes, PathPolicy};
use crate::route::RouteTable;

/// Where an HTTP connection manager's routes come from.
#[derive(Debug)]
pub enum RouteSource {
    /// RDS, by name.
    Rds(String),
    /// Inline.
    Inline(Arc<RouteTable>),
}

/// Downstream codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// HTTP/1.1 or HTTP/2 (prior knowledge), detected per connection.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// A compiled HTTP connection manager.
#[derive(Debug)]
pub struct Hcm {
    /// `stat_prefix`.
    pub stat_prefix: String,
    /// Routes.
    pub routes: RouteSource,
    /// Codec.
    pub codec: Codec,
    /// The `fault` filter is in the chain.
    pub fault: bool,
    /// The `cors` filter is in the chain.
    pub cors: bool,
    /// `jwt_authn` and `rbac` filters, in chain order (run before routing).
    pub auth: Vec<AuthFilter>,
    /// `server` header value (`server_name`, default `envoy`) and whether it
    /// replaces the upstream's (`OVERWRITE`), is added when absent, or passes.
    pub server_name: String,
    /// `server_name` as a header value (made once).
    pub server_value: Option<http::HeaderValue>,
    /// `server_header_transformation`: 0 overwrite, 1 append if absent, 2 pass through.
    pub server_header: i32,
    /// `use_remote_address`.
    pub use_remote_address: bool,
    /// WebSocket upgrades allowed.
    pub websocket: bool,
    /// `stream_idle_timeout` (Envoy's default 5 min; zero disables).
    pub stream_idle_timeout: Option<Duration>,
    /// `request_timeout` (zero or absent: none).
    pub request_timeout: Option<Duration>,
    /// `generate_request_id` (default true).
    pub generate_request_id: bool,
    /// `normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`.
    pub paths: PathPolicy,
    /// `tracing`: span reporting (none: trace headers are only propagated).
    pub tracing: Option<crate::telemetry::span::TracingConfig>,
    /// `forward_client_cert_details` and `set_current_client_cert_details`:
    /// what happens to `x-forwarded-client-cert`.
    pub xfcc: Xfcc,
}

/// Envoy's `forward_client_cert_details` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XfccMode {
    /// Remove the header (Envoy's default).
    #[default]
    Sanitize,
    /// Forward it unchanged over mTLS; remove it otherwise.
    ForwardOnly,
    /// Over mTLS, append this connection's element; remove it otherwise.
    AppendForward,
    /// Over mTLS, replace it with this connection's element; remove it otherwise.
    SanitizeSet,
    /// Forward it unchanged, whatever the connection.
    AlwaysForwardOnly,
}

/// What the connection manager does with `x-forwarded-client-cert`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Xfcc {
    /// The mode.
    pub mode: XfccMode,
    /// `set_current_client_cert_details.subject`.
    pub subject: bool,
    /// `set_current_client_cert_details.uri`.
    pub uri: bool,
    /// `set_current_client_cert_details.dns`.
    pub dns: bool,
}

impl Hcm {
    /// Whether requests carry the client certificate's details (the
    /// connection must keep them).
    pub fn forwards_client_cert(&self) -> bool {
        matches!(
            self.xfcc.mode,
            XfccMode::AppendForward | XfccMode::SanitizeSet
        )
    }
}

fn xfcc(hcm: &HttpConnectionManager) -> Xfcc {
    let mode = match hcm.forward_client_cert_details {
        1 => XfccMode::ForwardOnly,
        2 => XfccMode::AppendForward,
        3 => XfccMode::SanitizeSet,
        4 => XfccMode::AlwaysForwardOnly,
        _ => XfccMode::Sanitize,
    };
    let details = hcm.set_current_client_cert_details.as_ref();
    Xfcc {
        mode,
        subject: details.is_some_and(|d| d.subject.as_ref().is_some_and(|b| b.value)),
        uri: details.is_some_and(|d| d.uri),
        dns: details.is_some_and(|d| d.dns),
    }
}

pub(crate) fn hcm_config(hcm: &HttpConnectionManager, direction: i32) -> Result<Hcm, Vec<String>> {
    use http_connection_manager::RouteSpecifier;
    let mut errors = Vec::new();
    let routes = match &hcm.route_specifier {
        Some(RouteSpecifier::Rds(rds)) => Some(RouteSource::Rds(rds.route_config_name.clone())),
        Some(RouteSpecifier::RouteConfig(rc)) => match crate::route::compile(rc) {
            Ok(t) => Some(RouteSource::Inline(Arc::new(t))),
            Err(e) => {
                errors.extend(e.into_iter().map(|e| format!("route_config: {e}")));
                None
            }
        },
        Some(RouteSpecifier::ScopedRoutes(_)) => {
            errors.push("scoped_routes: not supported; use rds or route_config".into());
            None
        }
        None => {
            errors.push("route_specifier: missing (rds or route_config)".into());
            None
        }
    };
    let (mut fault, mut cors, mut router) = (false, false, false);
    let mut auth = Vec::new();
    for (i, f) in hcm.http_filters.iter().enumerate() {
        let (type_url, value) = match &f.config_type {
            Some(http_filter::ConfigType::TypedConfig(any)) => {
                (any.type_url.as_str(), any.value.as_slice())
            }
            _ => ("", &[][..]),
        };
        if router {
            errors.push(format!(
                "http_filters[{i}] ({}): filters after the router",
                f.name
            ));
        }
        let is_auth = type_url == crate::rbac::compile::HTTP_RBAC_TYPE
            || type_url == crate::jwt::JWT_AUTHN_TYPE;
        if is_auth && (fault || cors) {
            errors.push(format!(
                "http_filters[{i}] ({}): jwt_authn and rbac filters must come before fault and cors \
                 (the proxy runs them first)",
                f.name
            ));
        }
        let at = |e: String| format!("http_filters[{i}] ({}): {e}", f.name);
        match type_url.rsplit('.').next().unwrap_or("") {
            "HTTPFault" => fault = true,
            "Cors" => cors = true,
            "Router" => router = true,
            _ if type_url == crate::rbac::compile::HTTP_RBAC_TYPE => {
                match crate::rbac::http_filter(value) {
                    Ok(r) => auth.push(AuthFilter::Rbac(Arc::new(r))),
                    Err(e) => errors.extend(e.into_iter().map(at)),
                }
            }
            _ if type_url == crate::jwt::JWT_AUTHN_TYPE => match crate::jwt::filter(value) {
                Ok(j) => auth.push(AuthFilter::Jwt(Arc::new(j))),
                Err(e) => errors.extend(e.into_iter().map(at)),
            },
            _ if f.is_optional => {}
            _ => errors.push(format!(
                "http_filters[{i}] ({}, {type_url}): HTTP filter not supported",
                f.name
            )),
        }
    }
    if !router {
        errors.push("http_filters: the last filter must be envoy.filters.http.router".into());
    }
    if !hcm.access_log.is_empty() {
        errors.push(
            "access_log: access loggers in the connection manager are not supported; start the \
             proxy with --access-log FILE for Istio's JSON access log"
                .into(),
        );
    }
    let tracing = match &hcm.tracing {
        Some(t) => match crate::telemetry::span::compile(t, direction) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.extend(e.into_iter().map(|e| format!("tracing.{e}")));
                None
            }
        },
        None => None,
    };
    let codec = match hcm.codec_type {
        1 => Codec::Http1,
        2 => Codec::Http2,
        0 => Codec::Auto,
        other => {
            errors.push(format!("codec_type: {other} (HTTP/3) not supported"));
            Codec::Auto
        }
    };
    let websocket = hcm.upgrade_configs.iter().any(|u| {
        u.upgrade_type.eq_ignore_ascii_case("websocket") && u.enabled.is_none_or(|e| e.value)
    });
    use http_connection_manager::PathWithEscapedSlashesAction as Escaped;
    let escaped_slashes = match Escaped::try_from(hcm.path_with_escaped_slashes_action) {
        Ok(Escaped::ImplementationSpecificDefault | Escaped::KeepUnchanged) => EscapedSlashes::Keep,
        Ok(Escaped::RejectRequest) => EscapedSlashes::Reject,
        Ok(Escaped::UnescapeAndRedirect) => EscapedSlashes::UnescapeAndRedirect,
        Ok(Escaped::UnescapeAndForward) => EscapedSlashes::UnescapeAndForward,
        Err(_) => {
            errors.push(format!(
                "path_with_escaped_slashes_action: unknown action {}",
                hcm.path_with_escaped_slashes_action
            ));
            EscapedSlashes::Keep
        }
    };
    let paths = PathPolicy {
        normalize: hcm.normalize_path.is_some_and(|b| b.value),
        merge_slashes: hcm.merge_slashes,
        escaped_slashes,
    };
    let server_name = if hcm.server_name.is_empty() {
        "envoy".to_string()
    } else {
        hcm.server_name.clone()
    };
    match routes {
        Some(routes) if errors.is_empty() => Ok(Hcm {
            stat_prefix: hcm.stat_prefix.clone(),
            routes,
            codec,
            fault,
            cors,
            auth,
            server_name: server_name.clone(),
            server_value: http::HeaderValue::from_str(&server_name).ok(),
            server_header: hcm.server_header_transformation,
            use_remote_address: hcm.use_remote_address.is_some_and(|b| b.value),
            websocket,
            stream_idle_timeout: match &hcm.stream_idle_timeout {
                Some(d) => Some(duration(d)).filter(|d| !d.is_zero()),
                None => Some(Duration::from_secs(300)),
            },
            request_timeout: hcm
                .request_timeout
                .as_ref()
                .map(duration)
                .filter(|d| !d.is_zero()),
            generate_request_id: hcm.generate_request_id.is_none_or(|b| b.value),
            paths,
            tracing,
            xfcc: xfcc(hcm),
        }),
        _ => Err(errors),
    }
}

//! Messages as Istio prints them: `Error [IST0101] (VirtualService reviews.default
//! vs.yaml:12) Referenced host not found: "reviews2"`, with the codes of Istio's
//! analyzer catalogue (`pkg/config/analysis/msg/messages.yaml`).

use std::fmt;

use common::path::Path;
use common::resource::{DecodeError, Resource};
use serde::Serialize;

pub use crate::validate::field::Level;

/// One entry of Istio's message catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    /// `IST0101`.
    pub code: &'static str,
    /// `ReferencedResourceNotFound`.
    pub name: &'static str,
    /// The level Istio gives it.
    pub level: Level,
}

macro_rules! codes {
    ($($ident:ident = $code:literal, $name:literal, $level:ident;)+) => {
        $(
            #[doc = concat!("`", $code, "` ", $name)]
            pub const $ident: Code = Code { code: $code, name: $name, level: Level::$level };
        )+
        /// Every code Mizzen can report.
        pub const ALL: &[Code] = &[$($ident),+];
    };
}

/// Istio's analyzer codes that Mizzen reports, with Istio's names and levels.
pub mod codes {
    use super::{Code, Level};

    codes! {
        INTERNAL_ERROR = "IST0001", "InternalError", Error;
        DEPRECATED = "IST0002", "Deprecated", Warning;
        REFERENCED_RESOURCE_NOT_FOUND = "IST0101", "ReferencedResourceNotFound", Error;
        NAMESPACE_NOT_INJECTED = "IST0102", "NamespaceNotInjected", Info;
        POD_MISSING_PROXY = "IST0103", "PodMissingProxy", Warning;
        SCHEMA_VALIDATION_ERROR = "IST0106", "SchemaValidationError", Error;
        MISPLACED_ANNOTATION = "IST0107", "MisplacedAnnotation", Warning;
        UNKNOWN_ANNOTATION = "IST0108", "UnknownAnnotation", Warning;
        CONFLICTING_MESH_GATEWAY_VIRTUAL_SERVICE_HOSTS = "IST0109", "ConflictingMeshGatewayVirtualServiceHosts", Error;
        CONFLICTING_SIDECAR_WORKLOAD_SELECTORS = "IST0110", "ConflictingSidecarWorkloadSelectors", Error;
        MULTIPLE_SIDECARS_WITHOUT_WORKLOAD_SELECTORS = "IST0111", "MultipleSidecarsWithoutWorkloadSelectors", Error;
        VIRTUAL_SERVICE_DESTINATION_PORT_SELECTOR_REQUIRED = "IST0112", "VirtualServiceDestinationPortSelectorRequired", Error;
        MTLS_POLICY_CONFLICT = "IST0113", "MTLSPolicyConflict", Error;
        PORT_NAME_IS_NOT_UNDER_NAMING_CONVENTION = "IST0118", "PortNameIsNotUnderNamingConvention", Info;
        INVALID_REGEXP = "IST0122", "InvalidRegexp", Warning;
        NO_MATCHING_WORKLOADS_FOUND = "IST0127", "NoMatchingWorkloadsFound", Warning;
        NO_SERVER_CERTIFICATE_VERIFICATION_DESTINATION_LEVEL = "IST0128", "NoServerCertificateVerificationDestinationLevel", Warning;
        NO_SERVER_CERTIFICATE_VERIFICATION_PORT_LEVEL = "IST0129", "NoServerCertificateVerificationPortLevel", Warning;
        VIRTUAL_SERVICE_UNREACHABLE_RULE = "IST0130", "VirtualServiceUnreachableRule", Warning;
        VIRTUAL_SERVICE_INEFFECTIVE_MATCH = "IST0131", "VirtualServiceIneffectiveMatch", Info;
        VIRTUAL_SERVICE_HOST_NOT_FOUND_IN_GATEWAY = "IST0132", "VirtualServiceHostNotFoundInGateway", Warning;
        SCHEMA_WARNING = "IST0133", "SchemaWarning", Warning;
        SERVICE_ENTRY_ADDRESSES_REQUIRED = "IST0134", "ServiceEntryAddressesRequired", Warning;
        CONFLICTING_GATEWAYS = "IST0145", "ConflictingGateways", Error;
        JWT_CLAIM_BASED_ROUTING_WITHOUT_REQUEST_AUTHN = "IST0149", "JwtClaimBasedRoutingWithoutRequestAuthN", Error;
        ENVOY_FILTER_USES_RELATIVE_OPERATION = "IST0151", "EnvoyFilterUsesRelativeOperation", Warning;
        ENVOY_FILTER_USES_REPLACE_OPERATION_INCORRECTLY = "IST0152", "EnvoyFilterUsesReplaceOperationIncorrectly", Error;
        ENVOY_FILTER_USES_ADD_OPERATION_INCORRECTLY = "IST0153", "EnvoyFilterUsesAddOperationIncorrectly", Error;
        ENVOY_FILTER_USES_REMOVE_OPERATION_INCORRECTLY = "IST0154", "EnvoyFilterUsesRemoveOperationIncorrectly", Error;
        ENVOY_FILTER_USES_RELATIVE_OPERATION_WITH_PROXY_VERSION = "IST0155", "EnvoyFilterUsesRelativeOperationWithProxyVersion", Warning;
        INVALID_TELEMETRY_PROVIDER = "IST0157", "InvalidTelemetryProvider", Warning;
        CONFLICTING_TELEMETRY_WORKLOAD_SELECTORS = "IST0159", "ConflictingTelemetryWorkloadSelectors", Error;
        MULTIPLE_TELEMETRIES_WITHOUT_WORKLOAD_SELECTORS = "IST0160", "MultipleTelemetriesWithoutWorkloadSelectors", Error;
        INVALID_GATEWAY_CREDENTIAL = "IST0161", "InvalidGatewayCredential", Error;
        GATEWAY_PORT_NOT_DEFINED_ON_SERVICE = "IST0162", "GatewayPortNotDefinedOnService", Warning;
    }
}

/// The resource a message is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceRef {
    /// Kind, e.g. `VirtualService`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// Namespace (empty for cluster-scoped kinds).
    pub namespace: String,
}

/// Where in the input a message points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourcePos {
    /// File name (`-` for standard input).
    pub file: String,
    /// 1-based line; 0 when unknown.
    pub line: usize,
}

/// One message of `validate` or `analyze`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The catalogue code (`IST0106`).
    pub code: &'static str,
    /// The catalogue name (`SchemaValidationError`).
    pub name: &'static str,
    /// How serious it is.
    pub level: Level,
    /// The resource concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// Where in the input.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<SourcePos>,
    /// Field path within the resource, if the message is about one field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The details, as in Istio's templates.
    pub text: String,
}

impl Message {
    /// A message about `resource` (at `path`, when given), with `code`'s level.
    pub fn about(
        code: Code,
        resource: &Resource,
        default_ns: &str,
        path: Option<&Path>,
        text: String,
    ) -> Message {
        let line = match path {
            Some(p) => resource.line_of(p),
            None => resource.origin.line,
        };
        Message {
            code: code.code,
            name: code.name,
            level: code.level,
            resource: Some(ResourceRef {
                kind: resource.kind.clone(),
                name: resource.name().to_string(),
                namespace: resource.namespace_or(default_ns).to_string(),
            }),
            origin: Some(SourcePos {
                file: resource.origin.file.to_string(),
                line,
            }),
            field: path.map(Path::to_string),
            text,
        }
    }

    /// The message for a document that did not decode (IST0106).
    pub fn from_decode_error(e: &DecodeError, default_ns: &str) -> Message {
        let code = codes::SCHEMA_VALIDATION_ERROR;
        let field = (!e.path.is_empty()).then(|| e.path.to_string());
        let text = match &field {
            Some(f) => format!("Schema validation error: {f}: {}", e.message),
            None => format!("Schema validation error: {}", e.message),
        };
        Message {
            code: code.code,
            name: code.name,
            level: code.level,
            resource: e.kind.as_ref().map(|k| ResourceRef {
                kind: k.clone(),
                name: e.name.clone().unwrap_or_default(),
                namespace: e
                    .namespace
                    .clone()
                    .unwrap_or_else(|| default_ns.to_string()),
            }),
            origin: Some(SourcePos {
                file: e.origin.file.to_string(),
                line: e.line,
            }),
            field,
            text,
        }
    }

    /// Whether the message is an error.
    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

impl fmt::Display for Message {
    /// Istio's format: `<Level> [<code>] (<Kind> <name>.<namespace> <file>:<line>) <details>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.level.as_str(), self.code)?;
        let mut affected = Vec::new();
        if let Some(r) = &self.resource {
            if r.name.is_empty() {
                affected.push(r.kind.clone());
            } else if r.namespace.is_empty() {
                affected.push(format!("{} {}", r.kind, r.name));
            } else {
                affected.push(format!("{} {}.{}", r.kind, r.name, r.namespace));
            }
        }
        if let Some(o) = &self.origin {
            if o.line > 0 {
                affected.push(format!("{}:{}", o.file, o.line));
            } else {
                affected.push(o.file.clone());
            }
        }
        if !affected.is_empty() {
            write!(f, " ({})", affected.join(" "))?;
        }
        write!(f, " {}", self.text)
    }
}

/// Sorts messages as `istioctl analyze` prints them: errors first, then by file,
/// line and code.
pub fn sort(messages: &mut [Message]) {
    messages.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then_with(|| {
                let fa = a.origin.as_ref().map(|o| (o.file.as_str(), o.line));
                let fb = b.origin.as_ref().map(|o| (o.file.as_str(), o.line));
                fa.cmp(&fb)
            })
            .then_with(|| a.code.cmp(b.code))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_istioctl() {
        let m = Message {
            code: "IST0101",
            name: "ReferencedResourceNotFound",
            level: Level::Error,
            resource: Some(ResourceRef {
                kind: "VirtualService".into(),
                name: "httpbin".into(),
                namespace: "default".into(),
            }),
            origin: Some(SourcePos {
                file: "vs.yaml".into(),
                line: 3,
            }),
            field: None,
            text: "Referenced gateway not found: \"httpbin-gateway-bogus\"".into(),
        };
        assert_eq!(
            m.to_string(),
            "Error [IST0101] (VirtualService httpbin.default vs.yaml:3) Referenced gateway not found: \"httpbin-gateway-bogus\""
        );
    }

    #[test]
    fn codes_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in codes::ALL {
            assert!(seen.insert(c.code), "{} twice", c.code);
            assert!(c.code.starts_with("IST") && c.code.len() == 7);
        }
    }
}

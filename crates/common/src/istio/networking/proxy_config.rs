//! `ProxyConfig` (networking.istio.io/v1beta1): per-workload overrides of the proxy's
//! settings (worker threads, environment, image).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::istio::types::WorkloadSelector;

/// The spec of a `ProxyConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyConfigSpec {
    /// The workloads this applies to; the whole namespace (or mesh, in the root
    /// namespace) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    /// Number of worker threads; 0 means one per CPU core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i32>,
    /// Additional environment variables for the proxy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_variables: BTreeMap<String, String>,
    /// The proxy image to use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ProxyImage>,
}

/// `ProxyImage`: which flavour of the proxy image to run.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProxyImage {
    /// The image type: `default`, `debug` or `distroless`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_type: Option<String>,
}

//! `/config_dump`: Envoy's `envoy.admin.v3.ConfigDump` as JSON, assembled from
//! the bootstrap and the current [`XdsState`].
//!
//! The admin messages themselves are not in the descriptor pool, so the outer
//! shape is built here with serde_json, field names as Envoy's
//! (`dynamic_active_clusters[].cluster`, `dynamic_listeners[].active_state`,
//! ...), and every resource inside is real proto3 JSON from
//! [`common::envoy_json::to_json`] with its `@type` first, as Envoy prints an
//! `Any`. Per resource: `version_info` is its delta version (or the type's
//! state-of-the-world version), `last_updated` the time its type was last
//! applied, and `error_state` is present while the type's latest response was
//! NACKed for that resource. Secrets are listed with private keys and passwords
//! replaced by `[redacted]`, as Envoy does. Endpoints are always included
//! (Envoy needs `?include_eds`).

use std::collections::BTreeSet;
use std::time::SystemTime;

use common::envoy_json::{EnvoyJsonError, to_json};
use serde_json::{Map, Value, json};

use crate::bootstrap::{BOOTSTRAP_TYPE, Bootstrap};
use crate::xds::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET, TypeState, XdsState};

const ADMIN: &str = "type.googleapis.com/envoy.admin.v3.";

/// The whole dump: bootstrap, clusters, listeners, routes, secrets, endpoints.
pub fn dump(bootstrap: &Bootstrap, state: &XdsState) -> Result<Value, EnvoyJsonError> {
    // One decoded descriptor pool for every resource of the dump.
    let _pool = common::envoy_json::pool();
    Ok(json!({
        "configs": [
            {
                "@type": format!("{ADMIN}BootstrapConfigDump"),
                "bootstrap": to_json(BOOTSTRAP_TYPE, &bootstrap.raw)?,
            },
            clusters(bootstrap, state),
            listeners(bootstrap, state),
            routes(state),
            secrets(state),
            endpoints(state),
        ]
    }))
}

/// Envoy's `?resource=FIELD`: the elements of the repeated field `FIELD` of
/// whichever section has it, each as an `Any` of its element type
/// (`ClustersConfigDump.DynamicCluster`, ...); `None` when no section has it.
pub fn select_resource(dump: &Value, field: &str) -> Option<Value> {
    let element = match field {
        "static_clusters" => "ClustersConfigDump.StaticCluster",
        "dynamic_active_clusters" | "dynamic_warming_clusters" => {
            "ClustersConfigDump.DynamicCluster"
        }
        "static_listeners" => "ListenersConfigDump.StaticListener",
        "dynamic_listeners" => "ListenersConfigDump.DynamicListener",
        "static_route_configs" => "RoutesConfigDump.StaticRouteConfig",
        "dynamic_route_configs" => "RoutesConfigDump.DynamicRouteConfig",
        "static_secrets" => "SecretsConfigDump.StaticSecret",
        "dynamic_active_secrets" | "dynamic_warming_secrets" => "SecretsConfigDump.DynamicSecret",
        "static_endpoint_configs" => "EndpointsConfigDump.StaticEndpointConfig",
        "dynamic_endpoint_configs" => "EndpointsConfigDump.DynamicEndpointConfig",
        _ => return None,
    };
    let items = dump["configs"]
        .as_array()?
        .iter()
        .find_map(|section| section.get(field)?.as_array())?;
    let configs: Vec<Value> = items
        .iter()
        .map(|item| {
            let mut out = Map::new();
            out.insert("@type".into(), format!("{ADMIN}{element}").into());
            if let Value::Object(fields) = item {
                out.extend(fields.clone());
            }
            Value::Object(out)
        })
        .collect();
    Some(json!({ "configs": configs }))
}

/// `msg` (named `name`) as an `Any` in JSON: `@type` first, then its fields.
/// A resource that cannot be written (it holds an `Any` whose type is not in
/// the descriptor pool) is shown by name with the reason under
/// `mizzen_dump_error`, so one unknown extension does not hide the whole dump.
fn any<T: prost::Message>(type_url: &str, name: &str, msg: &T) -> Value {
    let full_name = type_url.rsplit('/').next().unwrap_or(type_url);
    let mut out = Map::new();
    out.insert("@type".into(), Value::String(type_url.to_owned()));
    match to_json(full_name, msg) {
        Ok(Value::Object(fields)) => out.extend(fields),
        Ok(_) => {}
        Err(e) => {
            tracing::debug!(name, error = %e, "config_dump: resource not shown");
            out.insert("name".into(), name.into());
            out.insert("mizzen_dump_error".into(), e.to_string().into());
        }
    }
    Value::Object(out)
}

fn timestamp(at: SystemTime) -> String {
    prost_types::Timestamp::from(at).to_string()
}

/// Per-resource facts of one type: version, last update, error state.
struct Type {
    state: TypeState,
}

impl Type {
    fn new(state: &XdsState, type_url: &str) -> Type {
        Type {
            state: state.type_state(type_url),
        }
    }

    fn version(&self, name: &str) -> &str {
        self.state
            .resource_versions
            .get(name)
            .unwrap_or(&self.state.version_info)
    }

    /// `version_info`, `last_updated` and `<key>` (the resource) of one entry.
    fn entry(&self, name: &str, key: &str, resource: Value) -> Map<String, Value> {
        let mut entry = Map::new();
        entry.insert("version_info".into(), self.version(name).into());
        entry.insert(key.into(), resource);
        if let Some(at) = self.state.last_update {
            entry.insert("last_updated".into(), timestamp(at).into());
        }
        entry
    }

    /// The names rejected by the type's latest response, if it was a NACK.
    fn rejected(&self) -> Vec<(String, String)> {
        match &self.state.last_nack {
            Some(nack) if nack.nonce == self.state.nonce => nack.rejected.clone(),
            _ => Vec::new(),
        }
    }

    /// Envoy's `UpdateFailureState` for `name`, when it was rejected last.
    fn error_state(&self, name: &str) -> Option<Value> {
        let nack = self.state.last_nack.as_ref()?;
        let (_, reason) = self.rejected().into_iter().find(|(n, _)| n == name)?;
        Some(json!({
            "last_update_attempt": timestamp(nack.at),
            "details": reason,
            "version_info": nack.version_info,
        }))
    }

    /// `entry` with the `error_state` added when `name` was rejected.
    fn with_error(&self, name: &str, mut entry: Map<String, Value>) -> Value {
        if let Some(error) = self.error_state(name) {
            entry.insert("error_state".into(), error);
        }
        Value::Object(entry)
    }
}

fn clusters(bootstrap: &Bootstrap, state: &XdsState) -> Value {
    let t = Type::new(state, CLUSTER);
    let statics = bootstrap
        .static_clusters
        .iter()
        .map(|c| json!({ "cluster": any(CLUSTER, &c.name, c) }))
        .collect::<Vec<_>>();
    let mut active = Vec::new();
    for (name, cluster) in &state.clusters {
        active.push(t.with_error(
            name,
            t.entry(name, "cluster", any(CLUSTER, name, &**cluster)),
        ));
    }
    let mut warming = Vec::new();
    for (name, cluster) in &state.warming_clusters {
        warming.push(Value::Object(t.entry(
            name,
            "cluster",
            any(CLUSTER, name, &**cluster),
        )));
    }
    json!({
        "@type": format!("{ADMIN}ClustersConfigDump"),
        "version_info": t.state.version_info,
        "static_clusters": statics,
        "dynamic_active_clusters": active,
        "dynamic_warming_clusters": warming,
    })
}

fn listeners(bootstrap: &Bootstrap, state: &XdsState) -> Value {
    let t = Type::new(state, LISTENER);
    let statics = bootstrap
        .static_listeners
        .iter()
        .map(|l| json!({ "listener": any(LISTENER, &l.name, l) }))
        .collect::<Vec<_>>();
    let mut names: BTreeSet<&str> = state.listeners.keys().map(String::as_str).collect();
    names.extend(state.warming_listeners.keys().map(String::as_str));
    let rejected = t.rejected();
    names.extend(rejected.iter().map(|(n, _)| n.as_str()));
    let mut dynamic = Vec::new();
    for name in names {
        let mut entry = Map::new();
        entry.insert("name".into(), name.into());
        if let Some(l) = state.listeners.get(name) {
            let active = t.entry(name, "listener", any(LISTENER, name, &**l));
            entry.insert("active_state".into(), Value::Object(active));
        }
        if let Some(l) = state.warming_listeners.get(name) {
            let warming = t.entry(name, "listener", any(LISTENER, name, &**l));
            entry.insert("warming_state".into(), Value::Object(warming));
        }
        dynamic.push(t.with_error(name, entry));
    }
    json!({
        "@type": format!("{ADMIN}ListenersConfigDump"),
        "version_info": t.state.version_info,
        "static_listeners": statics,
        "dynamic_listeners": dynamic,
    })
}

fn routes(state: &XdsState) -> Value {
    let t = Type::new(state, ROUTE);
    let mut dynamic = Vec::new();
    for (name, route) in &state.routes {
        dynamic.push(t.with_error(
            name,
            t.entry(name, "route_config", any(ROUTE, name, &**route)),
        ));
    }
    json!({
        "@type": format!("{ADMIN}RoutesConfigDump"),
        "dynamic_route_configs": dynamic,
    })
}

fn endpoints(state: &XdsState) -> Value {
    let t = Type::new(state, ENDPOINT);
    let mut dynamic = Vec::new();
    for (name, cla) in &state.endpoints {
        let entry = t.entry(name, "endpoint_config", any(ENDPOINT, name, &**cla));
        dynamic.push(t.with_error(name, entry));
    }
    json!({
        "@type": format!("{ADMIN}EndpointsConfigDump"),
        "dynamic_endpoint_configs": dynamic,
    })
}

fn secrets(state: &XdsState) -> Value {
    let t = Type::new(state, SECRET);
    let mut dynamic = Vec::new();
    for (name, secret) in &state.secrets {
        let mut value = any(SECRET, name, &**secret);
        redact(&mut value);
        let mut entry = t.entry(name, "secret", value);
        entry.insert("name".into(), name.as_str().into());
        dynamic.push(Value::Object(entry));
    }
    json!({
        "@type": format!("{ADMIN}SecretsConfigDump"),
        "dynamic_active_secrets": dynamic,
    })
}

/// Replaces private keys, passwords, generic secrets and session ticket keys
/// with `{"inline_string": "[redacted]"}`, anywhere in `value`.
fn redact(value: &mut Value) {
    const SENSITIVE: [&str; 4] = ["private_key", "password", "secret", "keys"];
    let redacted = || json!({ "inline_string": "[redacted]" });
    match value {
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                if SENSITIVE.contains(&key.as_str()) {
                    *field = match field {
                        Value::Array(items) => {
                            Value::Array(items.iter().map(|_| redacted()).collect())
                        }
                        _ => redacted(),
                    };
                } else {
                    redact(field);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::{DataSource, data_source::Specifier};
    use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
        Secret, TlsCertificate, secret,
    };

    use super::*;
    use crate::xds::Nack;

    fn bootstrap() -> Bootstrap {
        Bootstrap::from_proto("test", Default::default(), &Default::default())
            .expect("an empty bootstrap is valid")
    }

    #[test]
    fn clusters_carry_type_version_and_error_state() {
        let mut state = XdsState::default();
        let cluster = Cluster {
            name: "outbound|9080||reviews.default.svc.cluster.local".into(),
            ..Default::default()
        };
        state
            .clusters
            .insert(cluster.name.clone(), Arc::new(cluster.clone()));
        let mut ts = TypeState {
            nonce: "n2".into(),
            ..Default::default()
        };
        ts.resource_versions
            .insert(cluster.name.clone(), "v7".into());
        ts.last_nack = Some(Nack {
            nonce: "n2".into(),
            version_info: "v8".into(),
            rejected: vec![(cluster.name.clone(), "bad lb policy".into())],
            message: String::new(),
            at: SystemTime::now(),
        });
        state.types.insert(CLUSTER.into(), ts);
        let dump = dump(&bootstrap(), &state).expect("dumps");
        let configs = dump["configs"].as_array().expect("configs");
        assert!(
            configs[0]["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("BootstrapConfigDump"))
        );
        let active = &configs[1]["dynamic_active_clusters"][0];
        assert_eq!(active["version_info"], "v7");
        assert_eq!(active["cluster"]["@type"], CLUSTER);
        assert_eq!(active["cluster"]["name"], cluster.name.as_str());
        assert_eq!(active["error_state"]["details"], "bad lb policy");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut state = XdsState::default();
        let secret = Secret {
            name: "default".into(),
            r#type: Some(secret::Type::TlsCertificate(TlsCertificate {
                private_key: Some(DataSource {
                    specifier: Some(Specifier::InlineString("KEY".into())),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        };
        state.secrets.insert("default".into(), Arc::new(secret));
        let dump = dump(&bootstrap(), &state).expect("dumps");
        let text = dump.to_string();
        assert!(!text.contains("KEY"), "{text}");
        assert!(text.contains("[redacted]"));
    }
}

//! Envoy's configuration messages in the proto3 JSON mapping, both ways.
//!
//! The envoy-types crate has the Rust types of Envoy's API but no serde. This module
//! carries a descriptor set of the same `.proto` files (vendored under
//! `proto/envoy-api`, compiled by `build.rs` with protox; see
//! `scripts/vendor-envoy-protos`) and uses prost-reflect to read and write JSON the
//! way Envoy does: snake_case or lowerCamelCase field names, enums by name, 64-bit
//! integers as strings or numbers, `Duration` as `"1.5s"`, and `Any` values with an
//! `@type` resolved through the same pool (so an HCM `typed_config` is checked field
//! by field too).
//!
//! A document travels: [`from_json`] → prost-reflect's `DynamicMessage` (unknown
//! fields refused, the path of a bad field tracked by `serde_path_to_error`) → protobuf
//! bytes → the envoy-types message. [`to_json`] goes the other way, with proto field
//! names and default fields left out, like Envoy's `/config_dump`.

use std::sync::{Arc, Mutex, Weak};

use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};

/// The encoded `FileDescriptorSet` of the vendored Envoy API protos.
static DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/envoy_descriptor.bin"));

/// The decoded pool while anyone uses it. It is decoded on demand and freed
/// when the last user drops it: a proxy needs it only to read its bootstrap
/// and to answer `/config_dump`, and it is several MB of memory otherwise held
/// for the process's life.
static POOL: Mutex<Weak<DescriptorPool>> = Mutex::new(Weak::new());

/// The descriptors of every Envoy message `from_json`/`to_json` know: the roots in
/// `proto/envoy-api/ROOTS` and everything they import.
///
/// Hold the returned `Arc` across many calls (as `/config_dump` does) to decode
/// it once.
pub fn pool() -> Arc<DescriptorPool> {
    let mut cached = POOL.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(pool) = cached.upgrade() {
        return pool;
    }
    // The bytes are produced by this crate's build script from protox's own output,
    // so they always decode; a failure here is a build bug, not bad input.
    let pool = Arc::new(
        DescriptorPool::decode(DESCRIPTOR_SET)
            .expect("the Envoy descriptor set embedded by build.rs decodes"),
    );
    *cached = Arc::downgrade(&pool);
    pool
}

/// Why an Envoy message could not be read from or written to JSON.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyJsonError {
    /// The message type is not in the descriptor pool.
    #[error(
        "unknown Envoy message type `{0}`: it is not among the vendored protos; add its file to \
         scripts/vendor-envoy-protos and run it"
    )]
    UnknownType(String),
    /// The JSON does not match the message: unknown field, wrong type, bad value,
    /// an `Any` whose `@type` is not known.
    #[error("{type_name}: {}{message}", at(path))]
    Invalid {
        /// The full name of the message being read (`envoy.config.bootstrap.v3.Bootstrap`).
        type_name: String,
        /// Where in the document, as proto field names and indexes
        /// (`static_resources.clusters[0].connect_timeout`); empty at the top.
        path: String,
        /// What is wrong there.
        message: String,
    },
    /// The message read does not match the Rust type it was decoded into (the
    /// descriptor set and the envoy-types version disagree).
    #[error("{type_name}: the decoded message does not fit the Rust type: {source}")]
    Decode {
        /// The full name of the message.
        type_name: String,
        /// The protobuf decoding error.
        #[source]
        source: prost::DecodeError,
    },
    /// The message could not be written as JSON.
    #[error("{type_name}: cannot write as JSON: {source}")]
    Serialize {
        /// The full name of the message.
        type_name: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
}

fn at(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("field `{path}`: ")
    }
}

impl EnvoyJsonError {
    /// The field path of an [`EnvoyJsonError::Invalid`] error (empty otherwise or at
    /// the top of the document).
    pub fn path(&self) -> &str {
        match self {
            EnvoyJsonError::Invalid { path, .. } => path,
            _ => "",
        }
    }
}

/// Reads the proto3 JSON `value` as the Envoy message `full_name`
/// (`envoy.config.cluster.v3.Cluster`) and decodes it into `T`, the envoy-types type
/// of the same message. Unknown fields are refused; `Any` values need an `@type`
/// known to [`pool`]. Errors name the message type and the field path.
pub fn from_json<T: prost::Message + Default>(
    full_name: &str,
    value: &serde_json::Value,
) -> Result<T, EnvoyJsonError> {
    let desc = pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| EnvoyJsonError::UnknownType(full_name.to_owned()))?;
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let mut track = serde_path_to_error::Track::new();
    let de = serde_path_to_error::Deserializer::new(value, &mut track);
    let message = match DynamicMessage::deserialize_with_options(desc, de, &options) {
        Ok(m) => m,
        Err(err) => {
            let path = track.path();
            return Err(invalid(full_name, &path, &err.to_string()));
        }
    };
    T::decode(message.encode_to_vec().as_slice()).map_err(|source| EnvoyJsonError::Decode {
        type_name: full_name.to_owned(),
        source,
    })
}

/// Writes `msg`, an envoy-types message whose full name is `full_name`, as proto3
/// JSON with the proto field names (snake_case, as Envoy's `/config_dump`) and
/// without fields at their default value. `Any` values are expanded when their type
/// is in [`pool`].
pub fn to_json<T: prost::Message>(
    full_name: &str,
    msg: &T,
) -> Result<serde_json::Value, EnvoyJsonError> {
    let desc = pool()
        .get_message_by_name(full_name)
        .ok_or_else(|| EnvoyJsonError::UnknownType(full_name.to_owned()))?;
    let dynamic =
        DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).map_err(|source| {
            EnvoyJsonError::Decode {
                type_name: full_name.to_owned(),
                source,
            }
        })?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(true);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|source| EnvoyJsonError::Serialize {
            type_name: full_name.to_owned(),
            source,
        })
}

/// Builds an [`EnvoyJsonError::Invalid`] from serde_path_to_error's path and
/// prost-reflect's message. An unknown field is reported after its key was read but
/// before the path entered it, so its name is appended to the path.
fn invalid(type_name: &str, path: &serde_path_to_error::Path, message: &str) -> EnvoyJsonError {
    let mut path = path_text(path);
    let unknown = message
        .strip_prefix("unrecognized field name '")
        .and_then(|rest| rest.strip_suffix('\''));
    let message = match unknown {
        Some(key) => {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(key);
            "unknown field (not in this message; check the spelling and the Envoy API version)"
                .to_owned()
        }
        None => message.to_owned(),
    };
    EnvoyJsonError::Invalid {
        type_name: type_name.to_owned(),
        path,
        message,
    }
}

/// `a.b[0].c`, the way Envoy and protobuf tools print a field path.
fn path_text(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            // A protobuf map key such as `envoy.extensions.upstreams.http.v3.X` is
            // not a field name: quote it so the path stays readable.
            Segment::Map { key } if !is_field_name(key) => {
                out.push_str(&format!("[{key:?}]"));
            }
            Segment::Map { key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Enum { variant } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(variant);
            }
            Segment::Unknown => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push('?');
            }
        }
    }
    out
}

/// Whether `key` reads as a proto field name (letters, digits, `_`).
fn is_field_name(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
}

#[cfg(test)]
mod tests;

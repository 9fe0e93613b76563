//! Mizzen's shared crate: what every service and the CLI agree on.
//!
//! It owns Istio's configuration APIs as Rust types ([`istio`]), the registry of
//! kinds and their strict decoding from YAML ([`resource`], [`load`]), and the YAML
//! reading that keeps source lines ([`yaml`], [`path`]). It does not validate
//! semantics (galley does) nor build proxy config (pilot does).
//!
//! A config file travels: [`load::load_path`] reads text → [`yaml::parse_bounded`]
//! splits documents into positioned trees → [`resource::decode`] picks the kind
//! and decodes the spec strictly → a [`resource::Resource`] (or a
//! [`resource::DecodeError`] naming file, line, resource and field path).
#![warn(missing_docs)]

pub mod admission;
pub mod bootstrap;
pub mod crd;
pub mod envoy;
pub mod envoy_json;
pub mod host;
pub mod istio;
pub mod load;
pub mod path;
pub mod pb;
pub mod resource;
pub mod runtime;
pub mod spiffe;
pub mod time;
pub mod tls;
pub mod yaml;

//! Proxy: Mizzen's data plane. It consumes the same xDS a stock Envoy does and
//! will carry HTTP/1.1, HTTP/2, gRPC and TCP with Istio's routing, resilience,
//! mTLS, authorization and telemetry (issue 5).
//!
//! Built so far, top-down:
//! - `config`: the command line (`proxy -c BOOTSTRAP --concurrency N`);
//! - `bootstrap`: Envoy's bootstrap file (YAML or JSON), read into Envoy's own
//!   `Bootstrap` message, with unsupported fields refused or warned about by name;
//! - `xds`: the ADS client (delta by default, SotW selectable) that keeps the last
//!   good configuration and NACKs per resource what it cannot apply;
//! - `route`: RDS compiled into the HTTP routing table the data path selects from;
//! - `app`: the service: bootstrap → ADS client → admin listener, run until shutdown;
//! - `admin`: Envoy's admin endpoints (`/ready`, `/config_dump`, `/stats`, ...).
pub mod admin;
pub mod app;
pub mod balance;
pub mod body;
pub mod bootstrap;
pub mod cluster;
pub mod config;
pub mod dataplane;
pub mod http;
pub mod identity;
pub mod init;
pub mod inspect;
pub mod listener;
pub mod net;
pub mod route;
pub mod secrets;
pub mod server;
pub mod tcp;
pub mod telemetry;
pub mod upstream;
pub mod xds;

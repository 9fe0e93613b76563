//! Proxy: Mizzen's data plane. It consumes the same xDS a stock Envoy does and
//! carries HTTP/1.1, HTTP/2, gRPC and TCP with Istio's routing, resilience,
//! mTLS and telemetry (issue 5).
//!
//! Configuration, top-down:
//! - `config`: the command line (`proxy -c BOOTSTRAP --concurrency N`,
//!   `proxy init` for the capture rules, `init`, and `proxy agent`, `agent`,
//!   istio-agent's SDS server for a stock Envoy; `proxy sidecar`, `sidecar`,
//!   the injected pod's istio-agent and proxy in one process, and `proxy wait`);
//! - `bootstrap`: Envoy's bootstrap file (YAML or JSON), read into Envoy's own
//!   `Bootstrap` message, with unsupported fields refused or warned about by name;
//! - `xds`: the ADS client (delta by default, SotW selectable) that keeps the last
//!   good configuration and NACKs per resource what it cannot apply;
//! - `dataplane`: the client's snapshot compiled for the data path: `cluster`
//!   (hosts, `balance` load balancers and outlier detection, circuit breakers),
//!   `listener` (filter chains, HTTP connection managers, TCP proxies) and
//!   `route` (RDS as a routing table);
//! - `identity` and `secrets`: the workload certificate from the CA, and TLS
//!   configurations for chains and clusters from it or from SDS.
//!
//! Traffic, in the order a connection meets it:
//! - `server`: binds the listeners, hands captured connections to the
//!   listener of their original destination (`net`), inspects TLS
//!   (`inspect`), picks the filter chain and terminates TLS;
//! - `rbac` (network filter): decided from the connection, enforced on its
//!   first bytes;
//! - `http` (with `http::router`) or `tcp`: the connection manager (its
//!   `jwt` and `rbac` filters in `http::auth` before routing) and router, or
//!   the TCP proxy; `upstream` opens and pools upstream connections; `body`
//!   carries bodies and records each request's metrics (`telemetry`) and
//!   access log line at its end;
//! - `app` runs it all with the `admin` endpoints (`/ready`, `/config_dump`,
//!   `/clusters`, `/stats`, ...) and the status and readiness ports.
pub mod admin;
pub mod agent;
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
pub mod jwt;
pub mod listener;
pub mod net;
pub mod rbac;
pub mod route;
pub mod secrets;
pub mod server;
pub mod sidecar;
pub mod tcp;
pub mod telemetry;
pub mod upstream;
pub mod xds;

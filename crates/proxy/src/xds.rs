//! The xDS client: what a stock Envoy consumes from pilot over ADS, kept as an
//! immutable snapshot for the data plane.
//!
//! It owns the ADS stream (delta `DeltaAggregatedResources` by default, state of
//! the world `StreamAggregatedResources` when [`XdsConfig::delta`] is off), the
//! subscriptions, validation and ACK/NACK, warming, and reconnecting. It does not
//! build listeners or connection pools: the data plane compiles its runtime
//! config from the [`XdsState`] snapshots the [`XdsStore`] publishes.
//!
//! The path of an update, top-down:
//! - [`client`]: one task per [`spawn`]; it connects (with [`Backoff`] between
//!   attempts; TLS per [`tls`] on pilot's mTLS port), subscribes like Envoy (CDS wildcard, then EDS for the EDS
//!   clusters; LDS wildcard once the clusters are warm, then RDS for the
//!   HttpConnectionManagers' route configs; SDS for secrets whose `sds_config`
//!   is ADS), reads responses and ACKs or NACKs each one;
//! - [`apply`]: a response becomes per-resource decisions: every `Any` is
//!   decoded (wrong `type_url` or bad bytes reject that resource), checked by
//!   the built-in rules and the type's [`Handler`], and only accepted resources
//!   replace what the store holds; rejected ones keep their last good version and
//!   their names and reasons become the NACK's `error_detail`;
//! - [`subscriptions`]: which EDS, RDS and SDS names the held clusters and
//!   listeners reference;
//! - [`store`]: the working [`XdsState`] published atomically (`arc-swap`) with a
//!   generation counter, the warming sets (clusters until their
//!   `ClusterLoadAssignment` arrives, listeners until their routes arrive, both
//!   bounded by [`XdsConfig::initial_fetch_timeout`]), the initial-sync flag and
//!   the client's [`XdsStats`].

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;

pub mod apply;
pub mod client;
pub mod handler;
pub mod store;
pub mod subscriptions;
pub mod tls;

pub use client::{XdsHandle, spawn};
pub use handler::{AcceptAll, Handler, Handlers};
pub use store::{Nack, TypeState, XdsState, XdsStats, XdsStore};

pub use common::envoy::{CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET};

/// The types the client subscribes to, in Envoy's push order.
pub const TYPES: [&str; 5] = [CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET];

/// Whether a type is subscribed to as a whole (`*`: CDS, LDS) rather than by name.
pub fn is_wildcard_type(type_url: &str) -> bool {
    type_url == CLUSTER || type_url == LISTENER
}

pub use common::envoy::short_type;

/// Delays between connection attempts: exponential from `base`, capped at
/// `max`, with jitter (Envoy's defaults for ADS: 500 ms and 30 s). The attempt
/// count is reset once a stream has delivered a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first delay.
    pub base: Duration,
    /// The largest ceiling.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The ceiling for attempt `attempt` (0-based): `base * 2^attempt`, at most `max`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .saturating_mul(factor)
            .min(self.max)
            .max(self.base.min(self.max))
    }

    /// The delay before attempt `attempt + 1`: half the ceiling plus a random
    /// share of the other half (`random` is any uniformly random number), so
    /// that reconnecting proxies spread out but never retry at once.
    pub fn delay(&self, attempt: u32, random: u64) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        let half = ceiling / 2;
        Duration::from_millis(half + random % (ceiling - half + 1))
    }
}

/// How the client connects and what it says about itself.
#[derive(Debug, Clone)]
pub struct XdsConfig {
    /// Pilot's xDS address, `http://HOST:15010` (or `https://HOST:15012` with [`XdsConfig::tls`]).
    pub endpoint: String,
    /// The node sent on the first request of every stream (Istio's node id and metadata).
    pub node: Node,
    /// Delta ADS (`DeltaAggregatedResources`, the default) or state of the world.
    pub delta: bool,
    /// TLS for the connection (pilot's mTLS port), if any.
    pub tls: Option<tls::XdsTls>,
    /// The workload certificate, when [`XdsConfig::tls`] presents it or trusts
    /// its roots (`--ca-addr`).
    pub identity: Option<std::sync::Arc<crate::identity::CertManager>>,
    /// How long a cluster waits for its endpoints, a listener for its routes,
    /// before it is used anyway (Envoy's `initial_fetch_timeout`, 15 s).
    pub initial_fetch_timeout: Duration,
    /// Delays between connection attempts.
    pub backoff: Backoff,
}

impl XdsConfig {
    /// Delta ADS to `endpoint` as `node`, with Envoy's default timeouts.
    pub fn new(endpoint: impl Into<String>, node: Node) -> Self {
        XdsConfig {
            endpoint: endpoint.into(),
            node,
            delta: true,
            tls: None,
            identity: None,
            initial_fetch_timeout: Duration::from_secs(15),
            backoff: Backoff::default(),
        }
    }
}

/// Why a stream ended (logged, counted and kept as the last error).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is not a valid URI or the TLS settings were refused.
    #[error(
        "xDS endpoint {endpoint:?} is unusable: {source}; use http://HOST:PORT or https://HOST:PORT"
    )]
    Endpoint {
        /// The configured endpoint.
        endpoint: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TCP/TLS/HTTP2 connection failed.
    #[error("cannot connect to pilot at {endpoint}: {source}")]
    Connect {
        /// The configured endpoint.
        endpoint: String,
        /// What tonic said.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS settings cannot be made for this attempt (no workload
    /// certificate yet, or none configured).
    #[error("cannot connect to pilot at {endpoint} over TLS: {reason}")]
    Tls {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Pilot refused or ended the stream.
    #[error("ADS stream ended by pilot: {0}")]
    Stream(#[source] tonic::Status),
    /// Pilot closed the stream without an error.
    #[error("ADS stream closed by pilot")]
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(1), Duration::from_millis(200));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(4), Duration::from_millis(1000));
        assert_eq!(b.ceiling(1000), Duration::from_millis(1000));
    }

    #[test]
    fn backoff_jitter_stays_between_half_and_the_ceiling() {
        let b = Backoff::default();
        for attempt in 0..40 {
            let ceiling = b.ceiling(attempt);
            for random in [0, 1, 7, 12345, u64::MAX / 3, u64::MAX] {
                let d = b.delay(attempt, random);
                assert!(d >= ceiling / 2 && d <= ceiling, "{attempt} {random} {d:?}");
            }
        }
        assert_ne!(b.delay(5, 1), b.delay(5, 2), "jitter changes the delay");
    }

    #[test]
    fn backoff_with_max_below_base_uses_max() {
        let b = Backoff {
            base: Duration::from_secs(2),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(0), Duration::from_secs(1));
        assert!(b.delay(0, 99) <= Duration::from_secs(1));
    }
}

//! Istio's bookinfo sample, as small Rust services: one binary that runs any
//! one of `productpage`, `details`, `reviews` (versions v1, v2, v3) or
//! `ratings`, so the local mesh and its tests route real traffic through
//! sidecars the way Istio's traffic-management guide does.
//!
//! What each service does, as in Istio's bookinfo:
//! - `productpage` serves `/productpage` (HTML) and `/api/v1/products…`
//!   (JSON). For a page it calls `details` and `reviews`, with a 3 s timeout
//!   and one retry for `reviews`, and shows what they answered, or a message
//!   naming what was unavailable.
//! - `details` answers `/details/{id}`.
//! - `reviews` answers `/reviews/{id}`: v1 without ratings, v2 with black
//!   stars and v3 with red ones, both from `ratings`. The timeout towards
//!   `ratings` is 10 s for v2 and 2.5 s for v3.
//! - `ratings` answers `/ratings/{id}`.
//!
//! Every response names the service and version that answered, in the
//! `x-served-by` header and in the JSON (`servedBy`), so a test or the demo
//! can count which subset a request reached. Tracing headers, `end-user` and
//! the other headers Istio's sample propagates are copied onto every
//! upstream call ([`upstream::PROPAGATED`]). `productpage` sets `end-user`
//! from its `user` cookie, as the sample's sign-in does.
//!
//! Not carried over: the Python/Java/Node/Ruby implementations' UI assets,
//! MongoDB/MySQL-backed ratings, and the random failures of some variants.
//!
//! Path of a request: `main.rs` parses flags into a [`Config`], and
//! [`App::build`] binds the listener and builds the router of the chosen
//! service ([`services`]). A handler calls its upstreams through
//! [`upstream::Upstream`].

use std::net::SocketAddr;
use std::time::Duration;

pub mod services;
pub mod upstream;

/// Which bookinfo service to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Service {
    /// The front end: calls details and reviews.
    Productpage,
    /// Book details.
    Details,
    /// Book reviews; v2 and v3 call ratings.
    Reviews,
    /// Star ratings.
    Ratings,
}

impl Service {
    /// The service's name as the mesh config spells it.
    pub fn name(self) -> &'static str {
        match self {
            Service::Productpage => "productpage",
            Service::Details => "details",
            Service::Reviews => "reviews",
            Service::Ratings => "ratings",
        }
    }
}

/// One service's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The service to run.
    pub service: Service,
    /// Its version label (`v1`, `v2`, `v3`): for reviews it decides the
    /// behaviour; for every service it is reported in `x-served-by`.
    pub version: String,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Base URL of details (productpage's upstream).
    pub details: String,
    /// Base URL of reviews (productpage's upstream).
    pub reviews: String,
    /// Base URL of ratings (reviews v2/v3's upstream).
    pub ratings: String,
    /// A broken instance: every request but `/metrics` and `/health` is
    /// answered with this status (for showing retries and outlier detection).
    pub fail_with: Option<u16>,
    /// A slow instance: every request but `/metrics` and `/health` is held
    /// this long before it is answered (for showing timeouts).
    pub delay: Option<std::time::Duration>,
    /// Connect every upstream call to this address (at the URL's port),
    /// keeping the URL's host in the request: a sidecar's egress listener
    /// when nothing captures the app's traffic.
    pub connect_to: Option<std::net::IpAddr>,
}

impl Config {
    /// `service` at `version` on `listen`, with the upstreams at Istio's
    /// in-mesh names (`http://details:9080` and so on).
    pub fn new(service: Service, version: &str, listen: SocketAddr) -> Self {
        Config {
            service,
            version: version.to_string(),
            listen,
            details: "http://details:9080".to_string(),
            reviews: "http://reviews:9080".to_string(),
            ratings: "http://ratings:9080".to_string(),
            fail_with: None,
            delay: None,
            connect_to: None,
        }
    }

    /// `productpage-v1`, as `x-served-by` says.
    pub fn served_by(&self) -> String {
        format!("{}-{}", self.service.name(), self.version)
    }
}

/// What can go wrong starting a service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}; pick a free port with --listen")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An upstream URL is not an `http://host[:port]` base URL.
    #[error("--{flag} {url:?} is not an http:// base URL (for example http://details:9080)")]
    BadUpstream {
        /// The flag that set it.
        flag: &'static str,
        /// The value.
        url: String,
    },
    /// The reviews version is not one of bookinfo's.
    #[error("reviews has versions v1, v2 and v3, not {0:?}")]
    UnknownVersion(String),
    /// Serving failed.
    #[error("serving: {0}")]
    Serve(#[source] std::io::Error),
}

/// A bound, not yet running service.
pub struct App {
    listener: tokio::net::TcpListener,
    router: axum::Router,
}

impl App {
    /// Checks `config`, binds its address and builds its routes.
    pub async fn build(config: Config) -> Result<Self, Error> {
        for (flag, url) in [
            ("details", &config.details),
            ("reviews", &config.reviews),
            ("ratings", &config.ratings),
        ] {
            if !url.starts_with("http://") || url.parse::<http::Uri>().is_err() {
                return Err(Error::BadUpstream {
                    flag,
                    url: url.clone(),
                });
            }
        }
        if config.service == Service::Reviews && !["v1", "v2", "v3"].contains(&&*config.version) {
            return Err(Error::UnknownVersion(config.version.clone()));
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: config.listen,
                source,
            })?;
        let router = services::router(config);
        Ok(App { listener, router })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `stop` resolves.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(stop)
            .await
            .map_err(Error::Serve)
    }
}

/// productpage's timeout for each call to reviews and details.
pub const PRODUCTPAGE_TIMEOUT: Duration = Duration::from_secs(3);

/// reviews' timeout towards ratings, by version (Istio's sample: 10 s in
/// v2, 2.5 s in v3).
pub fn ratings_timeout(version: &str) -> Duration {
    if version == "v3" {
        Duration::from_millis(2500)
    } else {
        Duration::from_secs(10)
    }
}

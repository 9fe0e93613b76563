//! State-of-the-world ADS (`StreamAggregatedResources`), by Istio's rules
//! (`ShouldRespond` in `pilot/pkg/xds`): a NACK is recorded and not answered;
//! empty names on a non-wildcard type (EDS, RDS) unsubscribe; an empty nonce is
//! a new watch and is answered; a nonce other than the latest sent is stale and
//! ignored; the latest nonce is an ACK, answered only when it subscribes to new
//! names (or, for CDS/LDS, changes them). Each response carries the full set of
//! the type; pushes send a type only when its set changed, and EDS always follows
//! a CDS push so that updated clusters can finish warming.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};

use envoy_types::pb::envoy::config::core::v3::Node;

use super::connection::{Conn, Protocol, Scope, StreamProtocol};
use super::{AdsError, in_push_order, name_set, set_hash};
use crate::xds::{CLUSTER, ENDPOINT, GenerateError, is_wildcard_type};

/// What the proxy watches of one type.
#[derive(Debug, Default)]
struct Watch {
    names: BTreeSet<String>,
    nonce_sent: Option<String>,
    /// Hash of the last set sent, to skip pushes that change nothing.
    sent_hash: Option<u64>,
    /// Answer the next ACK even if it changes nothing (EDS after a new CDS
    /// watch, so that clusters finish warming; Istio's `AlwaysRespond`).
    always_respond: bool,
    /// The generator does not serve this type; stay silent.
    unsupported: bool,
}

pub(super) struct Sotw {
    conn: Conn<DiscoveryResponse>,
    watches: BTreeMap<String, Watch>,
}

impl StreamProtocol for Sotw {
    type Req = DiscoveryRequest;
    type Resp = DiscoveryResponse;
    const PROTOCOL: Protocol = Protocol::Sotw;

    fn node(req: &DiscoveryRequest) -> Option<Node> {
        req.node.clone()
    }

    fn new(conn: Conn<DiscoveryResponse>) -> Self {
        Sotw {
            conn,
            watches: BTreeMap::new(),
        }
    }

    fn conn(&mut self) -> &mut Conn<DiscoveryResponse> {
        &mut self.conn
    }

    async fn handle(&mut self, req: DiscoveryRequest) -> Result<(), AdsError> {
        Sotw::handle(self, req).await
    }

    async fn push(&mut self) -> Result<(), AdsError> {
        Sotw::push(self).await
    }
}

impl Sotw {
    /// Applies one request by the rules in the module header.
    async fn handle(&mut self, req: DiscoveryRequest) -> Result<(), AdsError> {
        let type_url = req.type_url.as_str();
        if type_url.is_empty() {
            return Err(AdsError::MissingType);
        }
        let max = self.conn.server.limits.max_resource_names;
        if req.resource_names.len() > max {
            return Err(AdsError::TooManyNames {
                type_url: type_url.to_string(),
                count: req.resource_names.len(),
                max,
            });
        }
        if let Some(error) = &req.error_detail {
            self.conn.nacked(
                type_url,
                &error.message,
                &req.response_nonce,
                &req.version_info,
            );
            return Ok(());
        }
        let wildcard = is_wildcard_type(type_url);
        if !wildcard && req.resource_names.is_empty() {
            // Unsubscribe: Envoy no longer needs any of this type.
            self.watches.remove(type_url);
            self.conn.unwatch(type_url);
            return Ok(());
        }
        let names = name_set(&req.resource_names);
        let Some(watch) = self.watches.get_mut(type_url) else {
            return self.new_watch(type_url, names, wildcard).await;
        };
        if req.response_nonce.is_empty() {
            // Envoy re-sent an initial request (e.g. after it restarted the watch).
            return self.new_watch(type_url, names, wildcard).await;
        }
        if watch.nonce_sent.as_deref() != Some(req.response_nonce.as_str()) {
            self.conn
                .expired(type_url, &req.response_nonce, watch.nonce_sent.as_deref());
            return Ok(());
        }
        // ACK of the latest response.
        let added = names.difference(&watch.names).next().is_some();
        let removed = watch.names.difference(&names).next().is_some();
        watch.names = names;
        let always = std::mem::take(&mut watch.always_respond);
        self.conn
            .acked(type_url, &req.version_info, &req.response_nonce);
        self.conn.watching(type_url, watch.names.iter(), wildcard);
        let respond = always || added || (wildcard && removed);
        if respond {
            self.respond(type_url, true).await?;
        }
        Ok(())
    }

    async fn new_watch(
        &mut self,
        type_url: &str,
        names: BTreeSet<String>,
        wildcard: bool,
    ) -> Result<(), AdsError> {
        self.conn.watching(type_url, names.iter(), wildcard);
        let watch = self.watches.entry(type_url.to_string()).or_default();
        watch.names = names;
        watch.always_respond = false;
        if type_url == CLUSTER
            && let Some(eds) = self.watches.get_mut(ENDPOINT)
        {
            eds.always_respond = true;
        }
        self.respond(type_url, true).await?;
        Ok(())
    }

    /// Generates and sends `type_url`. Unless `always`, a set identical to the
    /// last one sent is not sent again. Returns whether a response went out.
    async fn respond(&mut self, type_url: &str, always: bool) -> Result<bool, AdsError> {
        let Some(watch) = self.watches.get_mut(type_url) else {
            return Ok(false);
        };
        if watch.unsupported {
            return Ok(false);
        }
        let started = Instant::now();
        let names: Vec<String> = watch.names.iter().cloned().collect();
        let resources = match self.conn.generate(type_url, &names) {
            Ok(r) => r,
            Err(GenerateError::UnknownType(_)) => {
                tracing::warn!(connection = %self.conn.id, type_url, "ADS: proxy asked for a type pilot does not serve; ignoring it");
                watch.unsupported = true;
                return Ok(false);
            }
        };
        let hash = set_hash(&resources);
        if !always && watch.sent_hash == Some(hash) {
            return Ok(false);
        }
        let version = self.conn.snapshot.version.to_string();
        let nonce = self.conn.nonce();
        let count = resources.len();
        let response = DiscoveryResponse {
            version_info: version.clone(),
            resources: resources.into_iter().map(|r| r.resource).collect(),
            type_url: type_url.to_string(),
            nonce: nonce.clone(),
            control_plane: self.conn.control_plane(),
            ..Default::default()
        };
        self.conn.send(response).await?;
        watch.nonce_sent = Some(nonce.clone());
        watch.sent_hash = Some(hash);
        self.conn.sent(type_url, &version, &nonce, count, started);
        Ok(true)
    }

    /// Whether a push of `scope` regenerates `type_url`.
    fn in_scope(&self, scope: Scope, type_url: &str) -> bool {
        match scope {
            Scope::Full => true,
            Scope::Endpoints => {
                type_url == ENDPOINT
                    && self
                        .watches
                        .get(type_url)
                        .is_some_and(|w| self.conn.endpoints_touch(&w.names))
            }
        }
    }

    /// A new snapshot: regenerate every watched type, in push order, and send
    /// those that changed (EDS always after a CDS push).
    async fn push(&mut self) -> Result<(), AdsError> {
        let started = Instant::now();
        let Some(scope) = self.conn.refresh() else {
            return Ok(());
        };
        let mut pushed = Vec::new();
        for type_url in in_push_order(self.watches.keys()) {
            if !self.in_scope(scope, &type_url) {
                continue;
            }
            let force = type_url == ENDPOINT && pushed.iter().any(|t| t == CLUSTER);
            if self.respond(&type_url, force).await? {
                pushed.push(type_url);
            }
        }
        self.conn.pushed(started, pushed.iter().map(String::as_str));
        Ok(())
    }
}

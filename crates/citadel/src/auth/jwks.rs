//! Where the JWT authenticator's public keys come from, and keeping them fresh.
//!
//! A [`KeyStore`] holds the last good [`JwkSet`] from a [`JwksSource`]:
//! - `Static`: a set given in code (tests, embedded configs);
//! - `File`: read at construction (an error if missing or invalid), re-read when its
//!   mtime or size changes — checked at most once a second on use, and at once when a
//!   token names a key the set does not have;
//! - `Url`: fetched over HTTP/1.1 (`http://`, or `https://` verified against the
//!   system's roots) at construction, then every five minutes by a background task,
//!   and on demand when a token names an unknown key (at most once per 30 s). A
//!   failed fetch keeps the last good set; with none ever fetched the store is
//!   unavailable.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;

/// How often a JWKS file's mtime is checked, at most.
pub const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How often a JWKS URL is fetched again after a success.
pub const URL_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// The least time between two fetches caused by unknown key ids.
pub const UNKNOWN_KID_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// How long one fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Where the keys come from.
#[derive(Debug, Clone)]
pub enum JwksSource {
    /// A JSON file holding a JWK set (`{"keys": [...]}`).
    File(PathBuf),
    /// An `http://` or `https://` URL serving a JWK set, fetched as `UrlOptions` say.
    Url(String, UrlOptions),
    /// A fixed set.
    Static(JwkSet),
}

/// Why a JWK set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The file could not be read.
    #[error("cannot read JWKS file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file or response is not a JWK set.
    #[error("{origin} is not a JWK set ({{\"keys\": [...]}}): {source}")]
    Parse {
        /// The file or URL.
        origin: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The CA file for an `https://` JWKS URL is unusable.
    #[error("JWKS CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL is not an `http://` or `https://` URL with a host.
    #[error("JWKS URL {url:?} is not usable: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL could not be fetched.
    #[error("cannot fetch JWKS from {url}: {reason}")]
    Fetch {
        /// The URL.
        url: String,
        /// What failed.
        reason: String,
    },
}

/// The current keys of one source, shared by clones.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.inner {
            Inner::Static(_) => f.write_str("KeyStore(static)"),
            Inner::File(file) => write!(f, "KeyStore({})", file.path.display()),
            Inner::Url(url) => write!(f, "KeyStore({})", url.url),
        }
    }
}

enum Inner {
    Static(Arc<JwkSet>),
    File(FileKeys),
    Url(UrlKeys),
}

struct FileKeys {
    path: PathBuf,
    state: Mutex<FileState>,
}

struct FileState {
    set: Arc<JwkSet>,
    stamp: Stamp,
    checked: Instant,
    /// The last re-read forced by an unknown kid.
    forced: Option<Instant>,
}

/// What tells a changed file: its mtime, size and inode. File times are coarse (a
/// few milliseconds), so an unknown kid also forces a re-read (see
/// [`FileKeys::current`]).
type Stamp = (Option<SystemTime>, u64, u64);

/// How a JWKS URL is fetched.
#[derive(Debug, Clone, Default)]
pub struct UrlOptions {
    /// PEM roots that verify an `https://` server instead of the system's (the
    /// cluster CA, `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`).
    pub ca_file: Option<PathBuf>,
    /// A file whose content is sent as `Authorization: Bearer …`, re-read on every
    /// fetch (a projected service-account token, which the kubelet rotates).
    pub token_file: Option<PathBuf>,
}

impl JwksSource {
    /// A URL fetched with the system's roots and no credentials.
    pub fn url(url: impl Into<String>) -> JwksSource {
        JwksSource::Url(url.into(), UrlOptions::default())
    }
}

struct UrlKeys {
    url: String,
    uri: Uri,
    /// The TLS connector for `https://` (built at construction from `ca_file`, or
    /// the system roots on first use).
    connector: Option<tokio_rustls::TlsConnector>,
    token_file: Option<PathBuf>,
    state: Mutex<UrlState>,
    /// Serializes fetches so a burst of unknown kids fetches once.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct UrlState {
    set: Option<Arc<JwkSet>>,
    last_error: Option<String>,
    last_on_demand: Option<Instant>,
}

impl KeyStore {
    /// Loads the keys. A file must be readable and valid now; a URL that cannot be
    /// fetched yet is retried in the background (see the module docs).
    pub async fn new(source: JwksSource) -> Result<KeyStore, JwksError> {
        let inner = match source {
            JwksSource::Static(set) => Inner::Static(Arc::new(set)),
            JwksSource::File(path) => {
                let (set, stamp) = read_file(&path)?;
                let state = FileState {
                    set: Arc::new(set),
                    stamp,
                    checked: Instant::now(),
                    forced: None,
                };
                Inner::File(FileKeys {
                    path,
                    state: Mutex::new(state),
                })
            }
            JwksSource::Url(url, options) => {
                let uri = parse_url(&url)?;
                let connector = match &options.ca_file {
                    Some(path) => Some(connector_with_roots(path)?),
                    None => None,
                };
                Inner::Url(UrlKeys {
                    url,
                    uri,
                    connector,
                    token_file: options.token_file,
                    state: Mutex::new(UrlState::default()),
                    fetching: tokio::sync::Mutex::new(()),
                })
            }
        };
        let store = KeyStore {
            inner: Arc::new(inner),
        };
        if let Inner::Url(keys) = &*store.inner {
            let first = keys.fetch().await;
            if let Err(e) = &first {
                tracing::warn!(error = %e, "JWKS not fetched yet; retrying in the background");
            }
            tokio::spawn(refresh_loop(Arc::downgrade(&store.inner), first.is_ok()));
        }
        Ok(store)
    }

    /// The current set, or why there is none (a URL never fetched successfully).
    pub async fn current(&self) -> Result<Arc<JwkSet>, String> {
        match &*self.inner {
            Inner::Static(set) => Ok(set.clone()),
            Inner::File(file) => Ok(file.current(false)),
            Inner::Url(url) => {
                if let Some(set) = url.state.lock().expect("jwks lock").set.clone() {
                    return Ok(set);
                }
                // Never fetched: try now (rate-limited), then give up.
                url.on_demand().await;
                let state = url.state.lock().expect("jwks lock");
                state.set.clone().ok_or_else(|| {
                    let why = state.last_error.as_deref().unwrap_or("not fetched yet");
                    format!("no JWKS fetched from {} yet ({why})", url.url)
                })
            }
        }
    }

    /// Looks for a newer set because a token named a key the current set lacks;
    /// returns the set to use afterwards. Rate-limited as the module docs say.
    pub async fn refresh_for_unknown_kid(&self) -> Result<Arc<JwkSet>, String> {
        match &*self.inner {
            Inner::Static(set) => Ok(set.clone()),
            Inner::File(file) => Ok(file.current(true)),
            Inner::Url(url) => {
                url.on_demand().await;
                self.current().await
            }
        }
    }
}

impl FileKeys {
    /// The set, re-read first if the file changed (checked when the last check is
    /// older than [`FILE_CHECK_INTERVAL`]). With `force` (an unknown kid) the file
    /// is looked at now, and re-read even when it seems unchanged, at most once per
    /// [`FILE_CHECK_INTERVAL`].
    fn current(&self, force: bool) -> Arc<JwkSet> {
        let mut state = self.state.lock().expect("jwks lock");
        if !force && state.checked.elapsed() < FILE_CHECK_INTERVAL {
            return state.set.clone();
        }
        state.checked = Instant::now();
        let stamp = std::fs::metadata(&self.path).map(|m| stamp_of(&m));
        let reread = force
            && state
                .forced
                .is_none_or(|t| t.elapsed() >= FILE_CHECK_INTERVAL);
        if reread {
            state.forced = Some(Instant::now());
        } else if stamp.as_ref().is_ok_and(|s| *s == state.stamp) {
            return state.set.clone();
        }
        match read_file(&self.path) {
            Ok((set, stamp)) => {
                if *state.set != set {
                    tracing::info!(path = %self.path.display(), keys = set.keys.len(), "JWKS file reloaded");
                    state.set = Arc::new(set);
                }
                state.stamp = stamp;
            }
            Err(e) => {
                tracing::warn!(error = %e, "keeping the last good JWKS");
                if let Ok(s) = stamp {
                    // Do not re-read a bad file until it changes again.
                    state.stamp = s;
                }
            }
        }
        state.set.clone()
    }
}

impl UrlKeys {
    /// Fetches now (serialized with other fetches) and keeps the result if good.
    async fn fetch(&self) -> Result<(), JwksError> {
        let _guard = self.fetching.lock().await;
        let result = fetch(self).await;
        let mut state = self.state.lock().expect("jwks lock");
        match result {
            Ok(body) => match serde_json::from_slice::<JwkSet>(&body) {
                Ok(set) => {
                    tracing::debug!(url = %self.url, keys = set.keys.len(), "JWKS fetched");
                    state.set = Some(Arc::new(set));
                    state.last_error = None;
                    Ok(())
                }
                Err(source) => {
                    let e = JwksError::Parse {
                        origin: self.url.clone(),
                        source,
                    };
                    state.last_error = Some(e.to_string());
                    Err(e)
                }
            },
            Err(reason) => {
                let e = JwksError::Fetch {
                    url: self.url.clone(),
                    reason,
                };
                state.last_error = Some(e.to_string());
                Err(e)
            }
        }
    }

    /// A fetch on behalf of a token, at most once per
    /// [`UNKNOWN_KID_REFRESH_INTERVAL`].
    async fn on_demand(&self) {
        {
            let mut state = self.state.lock().expect("jwks lock");
            if state
                .last_on_demand
                .is_some_and(|t| t.elapsed() < UNKNOWN_KID_REFRESH_INTERVAL)
            {
                return;
            }
            state.last_on_demand = Some(Instant::now());
        }
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good set");
        }
    }
}

/// Refetches every [`URL_REFRESH_INTERVAL`], sooner (1 s doubling to 30 s) after a
/// failure; ends when the store is dropped.
async fn refresh_loop(store: Weak<Inner>, mut last_ok: bool) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let delay = if last_ok {
            URL_REFRESH_INTERVAL
        } else {
            backoff
        };
        tokio::time::sleep(delay).await;
        let Some(inner) = store.upgrade() else { return };
        let Inner::Url(keys) = &*inner else { return };
        last_ok = match keys.fetch().await {
            Ok(()) => {
                backoff = Duration::from_secs(1);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good set");
                backoff = (backoff * 2).min(Duration::from_secs(30));
                false
            }
        };
    }
}

fn stamp_of(meta: &std::fs::Metadata) -> Stamp {
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(meta);
    #[cfg(not(unix))]
    let inode = 0;
    (meta.modified().ok(), meta.len(), inode)
}

fn read_file(path: &PathBuf) -> Result<(JwkSet, Stamp), JwksError> {
    let read = |source| JwksError::Read {
        path: path.clone(),
        source,
    };
    let stamp = stamp_of(&std::fs::metadata(path).map_err(read)?);
    let body = std::fs::read(path).map_err(read)?;
    let set = serde_json::from_slice(&body).map_err(|source| JwksError::Parse {
        origin: path.display().to_string(),
        source,
    })?;
    Ok((set, stamp))
}

fn parse_url(url: &str) -> Result<Uri, JwksError> {
    let bad = |reason: &str| JwksError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| bad(&e.to_string()))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(bad("the scheme must be http or https"));
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(uri)
}

/// GETs `uri` over HTTP/1.1 and returns the body of a 200 answer.
async fn fetch(keys: &UrlKeys) -> Result<Bytes, String> {
    let bearer = match &keys.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    tokio::time::timeout(
        FETCH_TIMEOUT,
        fetch_inner(&keys.uri, keys.connector.as_ref(), bearer.as_deref()),
    )
    .await
    .map_err(|_| format!("timed out after {FETCH_TIMEOUT:?}"))?
}

async fn fetch_inner(
    uri: &Uri,
    connector: Option<&tokio_rustls::TlsConnector>,
    bearer: Option<&str>,
) -> Result<Bytes, String> {
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().unwrap_or_default();
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    if https {
        let name = rustls_pki_types::ServerName::try_from(bare_host.to_string())
            .map_err(|e| format!("bad server name {bare_host:?}: {e}"))?;
        let system;
        let connector = match connector {
            Some(c) => c,
            None => {
                system = tls_connector()?;
                &system
            }
        };
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
        get(TokioIo::new(tls), uri, bearer).await
    } else {
        get(TokioIo::new(tcp), uri, bearer).await
    }
}

async fn get<IO>(io: IO, uri: &Uri, bearer: Option<&str>) -> Result<Bytes, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let conn = tokio::spawn(conn);
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::USER_AGENT, "mizzen-citadel");
    if let Some(token) = bearer {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::new())
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| format!("cannot read the answer (limit {MAX_JWKS_BYTES} bytes): {e}"))?
        .to_bytes();
    conn.abort();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
        return Err(format!("HTTP {status}: {}", text.trim()));
    }
    Ok(body)
}

/// A TLS connector trusting only the PEM roots in `path`.
fn connector_with_roots(path: &std::path::Path) -> Result<tokio_rustls::TlsConnector, JwksError> {
    let bad = |reason: String| JwksError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read the CA file: {e}")))?;
    let certs =
        common::tls::certs_from_pem(&pem, "the JWKS CA file").map_err(|e| bad(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
    }
    connector(roots).map_err(bad)
}

/// A TLS client (aws-lc, safe defaults, no client certificate) trusting `roots`.
fn connector(roots: rustls::RootCertStore) -> Result<tokio_rustls::TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A TLS connector trusting the system's roots, built once.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    static SYSTEM: OnceLock<Result<tokio_rustls::TlsConnector, String>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(format!(
                    "no system root certificates found ({:?})",
                    found.errors
                ));
            }
            connector(roots)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert!(parse_url("https://issuer.example/keys").is_ok());
        assert!(parse_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(parse_url("ftp://x/y").is_err());
        assert!(parse_url("/just/a/path").is_err());
    }

    #[tokio::test]
    async fn a_missing_or_invalid_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let err = KeyStore::new(JwksSource::File(path.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("jwks.json"), "{err}");
        std::fs::write(&path, "{").unwrap();
        let err = KeyStore::new(JwksSource::File(path)).await.unwrap_err();
        assert!(err.to_string().contains("jwks.json"), "{err}");
    }
}

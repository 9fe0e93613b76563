//! Upstream HTTP/1.1 exchanges made by the request's own task: the request is
//! written to a pooled connection and the response read from it by the
//! future (and then the body) that wants it, with no connection task and no
//! channel between them. A response whose body arrived with its head hands
//! the connection back to the pool at once.
//!
//! Used for requests whose body is complete (none, or buffered for retries
//! and mirrors) and that are not upgrades; the others (a body still
//! streaming from downstream, WebSocket) go through hyper's client
//! connection, whose task can send the request body while the response
//! arrives ([`super::send`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker, ready};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::{Frame, SizeHint};
use tokio::io::AsyncWriteExt;
use tokio_util::io::poll_read_buf;

use super::{ConnGuard, Stream, UpstreamError};
use crate::body::{Body, BodyError};
use crate::cluster::{Cluster, Host};

/// The most a response head (status line and headers) may take.
const MAX_HEAD: usize = 96 * 1024;
/// The most header fields a response (or its trailers) may have.
const MAX_HEADERS: usize = 100;
/// A request body up to this size goes out in the same write as its head.
const COALESCE: usize = 16 * 1024;
/// Body chunks up to this size are copied out of the read buffer (which is
/// then reused); larger ones are split off it.
const COPY_BELOW: usize = 1024;
/// Room made in the read buffer before each read.
const READ_RESERVE: usize = 8 * 1024;

/// An HTTP/1.1 connection to an upstream host, with what was read from it
/// and not used yet.
pub struct Conn {
    io: Stream,
    rbuf: BytesMut,
    wbuf: Vec<u8>,
    /// When it went idle.
    pub(super) since: Instant,
    /// Requests it carried.
    pub(super) served: u32,
    _guard: ConnGuard,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("served", &self.served)
            .finish()
    }
}

impl Conn {
    pub(super) fn new(io: Stream, guard: ConnGuard) -> Conn {
        Conn {
            io,
            rbuf: BytesMut::new(),
            wbuf: Vec::new(),
            since: Instant::now(),
            served: 0,
            _guard: guard,
        }
    }

    /// Whether an idle connection can carry a request: the peer has neither
    /// closed it nor sent anything unasked. Costs no system call unless the
    /// socket became readable since it was last read.
    pub(super) fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.rbuf.reserve(64);
        poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.rbuf).is_pending()
            && self.rbuf.is_empty()
    }

    /// Reads more of the response into the buffer; `Ok(0)` at the end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_RESERVE / 2 {
            self.rbuf.reserve(READ_RESERVE);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Its response ended: back to the pool when the upstream keeps it alive
    /// and sent nothing more, else closed.
    fn done(self, keep_alive: bool, cluster: &Cluster, host: &Host) {
        if keep_alive && self.rbuf.is_empty() {
            self.check_in(cluster, host);
        }
    }

    /// Back to `host`'s idle list, unless it served its quota.
    fn check_in(mut self, cluster: &Cluster, host: &Host) {
        self.served += 1;
        if cluster
            .max_requests_per_connection
            .is_some_and(|m| self.served >= m)
        {
            return;
        }
        self.since = Instant::now();
        host.pool
            .inline
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(self);
        if cluster.stats.rq_pending_active.load(Ordering::Acquire) > 0 {
            cluster.released.notify_waiters();
        }
    }
}

/// Whether `req` can be sent by [`send`]: its body is complete and it is not
/// an upgrade.
pub(super) fn eligible(req: &Request<Body>) -> bool {
    matches!(req.body(), Body::Empty | Body::Full(_))
        && req.method() != Method::CONNECT
        && !req.headers().contains_key(header::UPGRADE)
}

/// Sends `req` (see [`eligible`]) to `host` and reads the response head; the
/// body follows as the response's [`Body`] is read. A request that finds its
/// pooled connection closed by the upstream (nothing answered) is sent again
/// on another connection when its method is idempotent.
pub(super) fn send(
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
    req: Request<Body>,
) -> impl Future<Output = Result<Response<Body>, UpstreamError>> {
    let (parts, body) = req.into_parts();
    let body = match body {
        Body::Full(Some(b)) => b,
        _ => Bytes::new(),
    };
    async move {
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        loop {
            let super::Inline { mut conn, reused } = super::pooled(cluster, host).await?;
            match exchange(&mut conn, &parts, &body).await {
                Ok(head) => return respond(head, conn, &parts.method, cluster, host),
                // The upstream closed the idle connection as it was taken.
                Err(Failed::Unanswered(_)) if reused && idempotent => continue,
                Err(Failed::Unanswered(e) | Failed::Closed(e)) => {
                    return Err(UpstreamError::Closed(e));
                }
                Err(Failed::Protocol(what)) => return Err(UpstreamError::Protocol(what)),
            }
        }
    }
}

/// How an exchange failed before the response head.
enum Failed {
    /// Writing failed, or the connection ended before any byte of a response.
    Unanswered(io::Error),
    /// The connection failed during the response head.
    Closed(io::Error),
    /// The response head is not HTTP/1.1.
    Protocol(String),
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
}

/// Writes the request and reads the response head (skipping `1xx`
/// interim responses); the head's bytes are consumed from the buffer.
async fn exchange(conn: &mut Conn, parts: &Parts, body: &Bytes) -> Result<Head, Failed> {
    conn.wbuf.clear();
    encode_head(parts, body.len(), &mut conn.wbuf);
    let coalesce = body.len() <= COALESCE;
    if coalesce {
        conn.wbuf.extend_from_slice(body);
    }
    let wrote = async {
        conn.io.write_all(&conn.wbuf).await?;
        if !coalesce {
            conn.io.write_all(body).await?;
        }
        conn.io.flush().await
    };
    wrote.await.map_err(Failed::Unanswered)?;
    let mut answered = false;
    loop {
        if !conn.rbuf.is_empty() {
            answered = true;
            if let Some((len, head)) = parse_head(&conn.rbuf).map_err(Failed::Protocol)? {
                conn.rbuf.advance(len);
                if head.status.is_informational() {
                    if head.status == StatusCode::SWITCHING_PROTOCOLS {
                        return Err(Failed::Protocol("101 to a request without upgrade".into()));
                    }
                    continue;
                }
                return Ok(head);
            }
            if conn.rbuf.len() > MAX_HEAD {
                return Err(Failed::Protocol(format!(
                    "response head larger than {MAX_HEAD} bytes"
                )));
            }
        }
        match conn.fill().await {
            Ok(0) => {
                let e = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before the response head",
                );
                return Err(if answered {
                    Failed::Closed(e)
                } else {
                    Failed::Unanswered(e)
                });
            }
            Ok(_) => {}
            Err(e) if answered => return Err(Failed::Closed(e)),
            Err(e) => return Err(Failed::Unanswered(e)),
        }
    }
}

/// `METHOD path HTTP/1.1`, the headers, and `content-length` when the body
/// needs one and the request has none.
fn encode_head(parts: &Parts, body_len: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.push(b' ');
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(if path.is_empty() {
        b"/"
    } else {
        path.as_bytes()
    });
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = matches!(
        parts.method,
        Method::GET | Method::HEAD | Method::DELETE | Method::OPTIONS | Method::TRACE
    );
    if !parts.headers.contains_key(header::CONTENT_LENGTH) && (body_len > 0 || !bodiless) {
        use std::io::Write as _;
        let _ = write!(out, "content-length: {body_len}\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The response head at the start of `buf`, with its length; `None` when
/// more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, String> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut fields);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(format!("bad response head: {e}")),
    };
    let code = resp.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| format!("bad response status {code}"))?;
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let headers = header_map(resp.headers)?;
    Ok(Some((
        len,
        Head {
            status,
            version,
            headers,
        },
    )))
}

fn header_map(fields: &[httparse::Header<'_>]) -> Result<HeaderMap, String> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for f in fields {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| format!("bad header name {:?}", f.name))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| format!("bad value of header {}", f.name))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Whether `token` is among the comma-separated values of `name`.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// How the response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (`HEAD`, `204`, `304`).
    None,
    /// `content-length`: the bytes still to come.
    Length(u64),
    /// `transfer-encoding: chunked`.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    Close,
}

/// Where a chunked body's decoder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk: the bytes still to come.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
}

fn framing(head: &mut Head, method: &Method) -> Result<Framing, String> {
    let s = head.status.as_u16();
    if method == Method::HEAD || s == 204 || s == 304 {
        return Ok(Framing::None);
    }
    if head.headers.contains_key(header::TRANSFER_ENCODING) {
        // Transfer-Encoding overrides Content-Length, which must not go on.
        head.headers.remove(header::CONTENT_LENGTH);
        // Chunked only when it is the last coding; else read until close.
        let chunked = head
            .headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty())
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
        return Ok(if chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for v in head.headers.get_all(header::CONTENT_LENGTH) {
        for part in v.to_str().unwrap_or("x").split(',') {
            let n: u64 = part
                .trim()
                .parse()
                .map_err(|_| format!("bad content-length {v:?}"))?;
            if length.is_some_and(|l| l != n) {
                return Err("conflicting content-length values".into());
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// The response for `head`: its body is whatever of it arrived with the head
/// when that is all of it (the connection then goes back to the pool at
/// once), else read from the connection as the body is polled.
fn respond(
    mut head: Head,
    mut conn: Conn,
    method: &Method,
    cluster: &Arc<Cluster>,
    host: &Arc<Host>,
) -> Result<Response<Body>, UpstreamError> {
    let framing = framing(&mut head, method).map_err(UpstreamError::Protocol)?;
    let keep_alive = match head.version {
        Version::HTTP_10 => has_token(&head.headers, header::CONNECTION, "keep-alive"),
        _ => !has_token(&head.headers, header::CONNECTION, "close"),
    };
    let body = match framing {
        Framing::None | Framing::Length(0) => {
            conn.done(keep_alive, cluster, host);
            Body::Empty
        }
        Framing::Length(n) if conn.rbuf.len() as u64 >= n => {
            let bytes = take(&mut conn.rbuf, n as usize);
            conn.done(keep_alive, cluster, host);
            Body::full(bytes)
        }
        _ => Body::H1(Box::new(Incoming {
            conn: Some(conn),
            framing,
            keep_alive,
            cluster: Arc::clone(cluster),
            host: Arc::clone(host),
            done: false,
        })),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = head.status;
    *resp.version_mut() = Version::HTTP_11;
    *resp.headers_mut() = head.headers;
    Ok(resp)
}

/// The first `n` bytes of `buf`: copied when small (the buffer is then
/// reused as is), split off when large.
fn take(buf: &mut BytesMut, n: usize) -> Bytes {
    if n < COPY_BELOW {
        let b = Bytes::copy_from_slice(&buf[..n]);
        buf.advance(n);
        b
    } else {
        buf.split_to(n).freeze()
    }
}

/// What one step of the chunked decoder made.
enum Step {
    /// A frame for the reader.
    Frame(Frame<Bytes>),
    /// It moved on without a frame (a size line, a chunk's CRLF, the end).
    Moved,
    /// It needs more bytes.
    More,
}

/// A response body read from its upstream connection as it is polled; the
/// connection goes back to the pool when the body has been read to its end.
pub struct Incoming {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    cluster: Arc<Cluster>,
    host: Arc<Host>,
    done: bool,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming")
            .field("framing", &self.framing)
            .finish()
    }
}

impl Incoming {
    fn buffered(&self) -> usize {
        self.conn.as_ref().map_or(0, |c| c.rbuf.len())
    }

    /// The first `n` buffered bytes.
    fn take(&mut self, n: usize) -> Bytes {
        self.conn
            .as_mut()
            .map_or_else(Bytes::new, |c| take(&mut c.rbuf, n))
    }

    /// The body ended: the connection goes back to the pool when it can
    /// carry another request.
    fn finish(&mut self) {
        self.done = true;
        if let Some(conn) = self.conn.take() {
            let keep_alive = self.keep_alive && self.framing != Framing::Close;
            conn.done(keep_alive, &self.cluster, &self.host);
        }
    }

    fn fail(&mut self, e: impl Into<BodyError>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.done = true;
        self.conn = None;
        Poll::Ready(Some(Err(e.into())))
    }

    /// The next frame of the body.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        loop {
            if self.done {
                return Poll::Ready(None);
            }
            let buffered = self.buffered();
            match self.framing {
                Framing::None | Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(left) if buffered > 0 => {
                    let n = buffered.min(usize::try_from(left).unwrap_or(usize::MAX));
                    let data = self.take(n);
                    self.framing = Framing::Length(left - n as u64);
                    if left == n as u64 {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close if buffered > 0 => {
                    let data = self.take(buffered);
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(state) if buffered > 0 => match self.chunked(state) {
                    Ok(Step::Frame(frame)) => return Poll::Ready(Some(Ok(frame))),
                    Ok(Step::Moved) => continue,
                    Ok(Step::More) => {}
                    Err(e) => return self.fail(io::Error::new(io::ErrorKind::InvalidData, e)),
                },
                _ => {}
            }
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.framing == Framing::Close => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    return self.fail(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "upstream closed the connection before the end of the body",
                    ));
                }
                Ok(_) => {}
                Err(e) => return self.fail(e),
            }
        }
    }

    /// One step of the chunked decoder over the buffered bytes.
    fn chunked(&mut self, state: Chunk) -> Result<Step, String> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Step::More);
        };
        let buf = &mut conn.rbuf;
        let next = match state {
            Chunk::Size => {
                let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                    if buf.len() > 4096 {
                        return Err("chunk size line too long".into());
                    }
                    return Ok(Step::More);
                };
                let line = std::str::from_utf8(&buf[..end])
                    .map_err(|_| "bad chunk size line".to_string())?;
                // Chunk extensions (`;name=value`) are ignored.
                let size = line.trim_end_matches('\r');
                let size = size.split(';').next().unwrap_or("").trim();
                let n = u64::from_str_radix(size, 16)
                    .map_err(|_| format!("bad chunk size {size:?}"))?;
                buf.advance(end + 1);
                if n == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(n)
                }
            }
            Chunk::Data(left) => {
                let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let data = self.take(n);
                self.framing = Framing::Chunked(if left == n as u64 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n as u64)
                });
                return Ok(Step::Frame(Frame::data(data)));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return if buf.is_empty() || buf[..] == *b"\r" {
                        Ok(Step::More)
                    } else {
                        Err("chunk data not followed by CRLF".into())
                    };
                }
                if buf[..2] != *b"\r\n" {
                    return Err("chunk data not followed by CRLF".into());
                }
                buf.advance(2);
                Chunk::Size
            }
            Chunk::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    self.finish();
                    return Ok(Step::Moved);
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                return match httparse::parse_headers(buf, &mut fields) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let trailers = header_map(fields)?;
                        buf.advance(len);
                        self.finish();
                        Ok(Step::Frame(Frame::trailers(trailers)))
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                        Err("trailers too large".into())
                    }
                    Ok(httparse::Status::Partial) => Ok(Step::More),
                    Err(e) => Err(format!("bad trailers: {e}")),
                };
            }
        };
        self.framing = Framing::Chunked(next);
        Ok(Step::Moved)
    }

    /// Whether the body has been read to its end.
    pub fn is_end_stream(&self) -> bool {
        self.done
    }

    /// What is known of the body's length.
    pub fn size_hint(&self) -> SizeHint {
        match self.framing {
            _ if self.done => SizeHint::with_exact(0),
            Framing::None => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Chunked(_) | Framing::Close => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;

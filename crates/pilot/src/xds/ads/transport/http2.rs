//! One HTTP/2 connection of the plaintext xDS port (RFC 9113), as a server
//! for gRPC calls, written for what an ADS connection is: one long call (or a
//! few) of small messages in both directions.
//!
//! [`Connection::poll`] does everything in one turn of the connection's task:
//! it reads what the socket has, applies each frame (settings, pings, window
//! credit, a new call's headers, a request's bytes, a reset), polls every call's
//! ADS loop ([`Served`]) for responses and frames them straight into the output
//! buffer, returns receive credit, and writes. A push is one poll: generated,
//! framed and written with one `write`; an ACK is one poll: read, decoded and
//! applied. Calls are polled every turn, so a request delivered to a call needs
//! no wake-up: the turn that read it polls the call next.
//!
//! What it implements: the preface and SETTINGS exchange; DATA with padding,
//! HEADERS with padding and priority, CONTINUATION, RST_STREAM, PING, GOAWAY,
//! WINDOW_UPDATE and SETTINGS (PRIORITY and unknown frames are skipped);
//! flow control both ways (responses wait for the proxy's credit; the credit
//! for requests is returned as the ADS loop consumes them); HPACK decoding of
//! request headers (`loona_hpack`), and response headers and trailers as HPACK
//! literals that never touch the proxy's dynamic table. Server push is never
//! used. Errors follow the RFC: a connection error sends GOAWAY with its code
//! and closes; a stream error resets that stream only.

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::AsyncWrite;
use tonic::Status;

mod call;
mod frame;

/// Output buffered before calls wait for the socket to take it.
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// The input buffer an idle connection keeps.
const READ_KEPT: usize = 8 * 1024;
/// The output buffer an idle connection keeps.
const WRITE_KEPT: usize = 4 * 1024;
#[cfg(test)]
mod tests;

use call::Response;
pub(super) use call::{Call, Calls, RequestHead, SharedInbound, lock};
pub(super) use frame::code;
use frame::*;

/// A connection error: GOAWAY with `code`, then the connection closes.
#[derive(Debug)]
pub(super) struct ConnectionError {
    /// The RFC 9113 error code.
    pub code: u32,
    /// Why, for the log and GOAWAY's debug data.
    pub reason: Cow<'static, str>,
}

fn protocol(reason: impl Into<Cow<'static, str>>) -> ConnectionError {
    ConnectionError {
        code: code::PROTOCOL_ERROR,
        reason: reason.into(),
    }
}

struct StreamState {
    id: u32,
    call: Call,
    inbound: SharedInbound,
    /// What the proxy's stream window lets pilot send.
    send_window: i64,
    /// What pilot's stream window still lets the proxy send.
    recv_window: i64,
    /// Credit owed to the proxy's stream window (padding, consumed requests).
    credit: usize,
    /// gRPC-framed response bytes waiting for flow-control credit.
    out: BytesMut,
    /// The status to end the call with once `out` is sent.
    ending: Option<Status>,
    /// The proxy ended its side.
    remote_ended: bool,
}

/// Settings pilot announces.
#[derive(Debug, Clone, Copy)]
pub(super) struct Local {
    pub connection_window: u32,
    pub stream_window: u32,
    pub max_concurrent_streams: u32,
    pub max_message_bytes: usize,
}

/// The HTTP/2 state of one connection (the socket stays with the caller).
pub(super) struct Connection {
    local: Local,
    /// Received bytes not yet cut into frames.
    pub read: BytesMut,
    /// Frames not yet written.
    pub write: BytesMut,
    /// The most `write` held since it was last empty.
    write_peak: usize,
    decoder: loona_hpack::Decoder<'static>,
    /// A header block being continued: stream, END_STREAM, the block so far.
    continuation: Option<(u32, bool, Vec<u8>)>,
    streams: Vec<StreamState>,
    /// The highest stream the proxy opened.
    last_stream: u32,
    /// The preface and the proxy's first SETTINGS have been read.
    pub handshaken: bool,
    preface_read: bool,
    peer_max_frame: usize,
    peer_initial_window: i64,
    /// What the proxy's connection window lets pilot send.
    send_window: i64,
    /// What pilot's connection window still lets the proxy send.
    recv_window: i64,
    /// Credit owed to the proxy's connection window.
    credit: usize,
    /// The proxy sent GOAWAY: no new calls; close once the calls end.
    pub peer_going_away: bool,
    /// Pilot is shutting down: no new calls; GOAWAY once the calls end.
    pub shutting_down: bool,
    /// A PING answer arrived since the last look.
    pub pong: bool,
}

impl Connection {
    /// A connection whose first output (pilot's SETTINGS and connection
    /// window) is queued.
    pub fn new(local: Local) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE);
        let mut c = Connection {
            local,
            read: BytesMut::with_capacity(READ_KEPT),
            write: BytesMut::with_capacity(WRITE_KEPT),
            write_peak: 0,
            decoder,
            continuation: None,
            streams: Vec::new(),
            last_stream: 0,
            handshaken: false,
            preface_read: false,
            peer_max_frame: MAX_FRAME,
            peer_initial_window: DEFAULT_WINDOW,
            send_window: DEFAULT_WINDOW,
            recv_window: i64::from(local.connection_window),
            credit: 0,
            peer_going_away: false,
            shutting_down: false,
            pong: false,
        };
        let mut settings = BytesMut::new();
        for (id, value) in [
            (SETTINGS_ENABLE_PUSH, 0),
            (
                SETTINGS_MAX_CONCURRENT_STREAMS,
                local.max_concurrent_streams,
            ),
            (SETTINGS_INITIAL_WINDOW_SIZE, local.stream_window),
        ] {
            settings.put_u16(id);
            settings.put_u32(value);
        }
        c.frame(SETTINGS, 0, 0, &settings);
        let raise = local.connection_window.saturating_sub(65_535);
        if raise > 0 {
            c.frame(WINDOW_UPDATE, 0, 0, &raise.to_be_bytes());
        }
        c
    }

    /// Calls in progress.
    pub fn open_calls(&self) -> usize {
        self.streams.len()
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        frame_head(&mut self.write, payload.len(), kind, flags, stream);
        self.write.put_slice(payload);
    }

    /// Queues a PING of pilot's own (keepalive).
    pub fn ping(&mut self) {
        self.frame(PING, 0, 0, b"mizzen\0\0");
    }

    /// Queues GOAWAY: no stream above the last one the proxy opened is served.
    pub fn goaway(&mut self, error: u32, reason: &str) {
        let mut payload = BytesMut::with_capacity(8 + reason.len());
        payload.put_u32(self.last_stream);
        payload.put_u32(error);
        payload.put_slice(&reason.as_bytes()[..reason.len().min(256)]);
        self.frame(GOAWAY, 0, 0, &payload);
    }

    /// Applies every whole frame in `read`.
    pub fn receive(&mut self, calls: &mut impl Calls) -> Result<(), ConnectionError> {
        if !self.preface_read {
            let n = self.read.len().min(PREFACE.len());
            if self.read[..n] != PREFACE[..n] {
                return Err(protocol("not an HTTP/2 connection preface"));
            }
            if n < PREFACE.len() {
                return Ok(());
            }
            self.read.advance(PREFACE.len());
            self.preface_read = true;
        }
        let mut read = std::mem::take(&mut self.read);
        let mut at = 0;
        let result = loop {
            let rest = &read[at..];
            if rest.len() < 9 {
                break Ok(());
            }
            let len = usize::from(rest[0]) << 16 | usize::from(rest[1]) << 8 | usize::from(rest[2]);
            if len > MAX_FRAME {
                break Err(ConnectionError {
                    code: code::FRAME_SIZE_ERROR,
                    reason: format!(
                        "a frame of {len} bytes exceeds SETTINGS_MAX_FRAME_SIZE ({MAX_FRAME})"
                    )
                    .into(),
                });
            }
            if rest.len() < 9 + len {
                break Ok(());
            }
            let (kind, flags) = (rest[3], rest[4]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
            if let Err(e) = self.on_frame(kind, flags, stream, &rest[9..9 + len], calls) {
                break Err(e);
            }
            at += 9 + len;
        };
        let held = read.len();
        read.advance(at);
        // A buffer that grew for a large request is not kept while idle.
        if read.is_empty() && held > READ_KEPT {
            read = BytesMut::with_capacity(READ_KEPT);
        }
        self.read = read;
        result
    }

    fn on_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
        calls: &mut impl Calls,
    ) -> Result<(), ConnectionError> {
        if !self.handshaken {
            if kind != SETTINGS || flags & ACK != 0 {
                return Err(protocol("the first frame must be SETTINGS"));
            }
            self.handshaken = true;
        }
        if let Some((id, _, _)) = &self.continuation
            && (kind != CONTINUATION || stream != *id)
        {
            return Err(protocol("a header block was interrupted by another frame"));
        }
        match kind {
            DATA => self.on_data(flags, stream, payload),
            HEADERS => {
                if stream == 0 || stream.is_multiple_of(2) {
                    return Err(protocol(format!("HEADERS on stream {stream}")));
                }
                let mut body = payload;
                let mut pad = 0;
                if flags & PADDED != 0 {
                    pad = usize::from(*body.first().ok_or_else(|| protocol("HEADERS too short"))?);
                    body = &body[1..];
                }
                if flags & PRIORITY_FLAG != 0 {
                    body = body.get(5..).ok_or_else(|| protocol("HEADERS too short"))?;
                }
                if pad > body.len() {
                    return Err(protocol("HEADERS padding exceeds the frame"));
                }
                let block = &body[..body.len() - pad];
                let end_stream = flags & END_STREAM != 0;
                if flags & END_HEADERS != 0 {
                    self.on_header_block(stream, end_stream, block, calls)
                } else {
                    self.continuation = Some((stream, end_stream, block.to_vec()));
                    Ok(())
                }
            }
            CONTINUATION => {
                let Some((id, end_stream, mut block)) = self.continuation.take() else {
                    return Err(protocol("CONTINUATION without HEADERS"));
                };
                block.extend_from_slice(payload);
                if block.len() > MAX_HEADER_BLOCK {
                    return Err(ConnectionError {
                        code: code::ENHANCE_YOUR_CALM,
                        reason: format!("request headers exceed {MAX_HEADER_BLOCK} bytes").into(),
                    });
                }
                if flags & END_HEADERS != 0 {
                    self.on_header_block(id, end_stream, &block, calls)
                } else {
                    self.continuation = Some((id, end_stream, block));
                    Ok(())
                }
            }
            PRIORITY => {
                if stream == 0 {
                    return Err(protocol("PRIORITY on stream 0"));
                }
                if payload.len() != 5 {
                    self.reset(stream, code::FRAME_SIZE_ERROR);
                }
                Ok(())
            }
            RST_STREAM => {
                if stream == 0 || payload.len() != 4 {
                    return Err(protocol("malformed RST_STREAM"));
                }
                if stream > self.last_stream {
                    return Err(protocol("RST_STREAM on an idle stream"));
                }
                self.drop_stream(stream);
                Ok(())
            }
            SETTINGS => self.on_settings(flags, stream, payload),
            PUSH_PROMISE => Err(protocol("a client may not send PUSH_PROMISE")),
            PING => {
                if stream != 0 || payload.len() != 8 {
                    return Err(protocol("malformed PING"));
                }
                if flags & ACK != 0 {
                    self.pong = true;
                } else {
                    self.frame(PING, ACK, 0, payload);
                }
                Ok(())
            }
            GOAWAY => {
                if stream != 0 || payload.len() < 8 {
                    return Err(protocol("malformed GOAWAY"));
                }
                self.peer_going_away = true;
                Ok(())
            }
            WINDOW_UPDATE => self.on_window_update(stream, payload),
            // Unknown frame types are ignored (RFC 9113 §4.1).
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, flags: u8, stream: u32, payload: &[u8]) -> Result<(), ConnectionError> {
        if stream == 0 {
            return Err(protocol("DATA on stream 0"));
        }
        let len = payload.len();
        if len as i64 > self.recv_window {
            return Err(ConnectionError {
                code: code::FLOW_CONTROL_ERROR,
                reason: "DATA beyond the connection window".into(),
            });
        }
        self.recv_window -= len as i64;
        let mut data = payload;
        if flags & PADDED != 0 {
            let pad = usize::from(*data.first().ok_or_else(|| protocol("DATA too short"))?);
            if pad >= data.len() {
                return Err(protocol("DATA padding exceeds the frame"));
            }
            data = &data[1..data.len() - pad];
        }
        let padding = len - data.len();
        let Some(i) = self.find(stream) else {
            if stream > self.last_stream {
                return Err(protocol("DATA on an idle stream"));
            }
            // A call that already ended: the bytes only count for the
            // connection's window.
            self.credit += len;
            return Ok(());
        };
        let s = &mut self.streams[i];
        if s.remote_ended {
            self.credit += len;
            self.reset(stream, code::STREAM_CLOSED);
            return Ok(());
        }
        if len as i64 > s.recv_window {
            self.credit += len;
            self.reset(stream, code::FLOW_CONTROL_ERROR);
            return Ok(());
        }
        s.recv_window -= len as i64;
        s.credit += padding;
        self.credit += padding;
        let end = flags & END_STREAM != 0;
        if end {
            s.remote_ended = true;
        }
        if !data.is_empty() || end {
            let mut inbound = lock(&s.inbound);
            inbound.buf.extend_from_slice(data);
            inbound.ended |= end;
        }
        Ok(())
    }

    fn on_header_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        block: &[u8],
        calls: &mut impl Calls,
    ) -> Result<(), ConnectionError> {
        // Decoded whatever becomes of the stream: the table is the connection's.
        let mut head = RequestHead::default();
        let mut decoded = 0usize;
        self.decoder
            .decode_with_cb(block, |name, value| {
                decoded += name.len() + value.len() + 32;
                let text = || String::from_utf8_lossy(&value).into_owned();
                match &*name {
                    b":method" => head.method = text(),
                    b":path" => head.path = text(),
                    b"content-type" => head.content_type = text(),
                    b"grpc-encoding" => head.encoding = Some(text()),
                    _ => {}
                }
            })
            .map_err(|e| ConnectionError {
                code: code::COMPRESSION_ERROR,
                reason: format!("request headers could not be decoded: {e:?}").into(),
            })?;
        if let Some(i) = self.find(stream) {
            // Trailers from the proxy: they must end its side.
            if !end_stream {
                self.reset(stream, code::PROTOCOL_ERROR);
                return Ok(());
            }
            let s = &mut self.streams[i];
            s.remote_ended = true;
            lock(&s.inbound).ended = true;
            return Ok(());
        }
        if stream <= self.last_stream {
            self.reset(stream, code::STREAM_CLOSED);
            return Ok(());
        }
        self.last_stream = stream;
        if self.shutting_down || self.peer_going_away {
            self.reset(stream, code::REFUSED_STREAM);
            return Ok(());
        }
        if self.streams.len() >= self.local.max_concurrent_streams as usize {
            self.reset(stream, code::REFUSED_STREAM);
            return Ok(());
        }
        if decoded > MAX_HEADER_BLOCK {
            self.trailers_only(
                stream,
                &Status::resource_exhausted("request headers too large"),
            );
            if !end_stream {
                self.reset(stream, code::NO_ERROR);
            }
            return Ok(());
        }
        let inbound = SharedInbound::default();
        lock(&inbound).ended = end_stream;
        match calls.start(&head, inbound.clone()) {
            Err(status) => {
                self.trailers_only(stream, &status);
                if !end_stream {
                    self.reset(stream, code::NO_ERROR);
                }
            }
            Ok(call) => {
                self.frame(HEADERS, END_HEADERS, stream, RESPONSE_HEAD);
                self.streams.push(StreamState {
                    id: stream,
                    call,
                    inbound,
                    send_window: self.peer_initial_window,
                    recv_window: i64::from(self.local.stream_window),
                    credit: 0,
                    out: BytesMut::new(),
                    ending: None,
                    remote_ended: end_stream,
                });
            }
        }
        Ok(())
    }

    fn on_settings(
        &mut self,
        flags: u8,
        stream: u32,
        payload: &[u8],
    ) -> Result<(), ConnectionError> {
        if stream != 0 {
            return Err(protocol("SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            return if payload.is_empty() {
                Ok(())
            } else {
                Err(ConnectionError {
                    code: code::FRAME_SIZE_ERROR,
                    reason: "SETTINGS ACK with a payload".into(),
                })
            };
        }
        if !payload.len().is_multiple_of(6) {
            return Err(ConnectionError {
                code: code::FRAME_SIZE_ERROR,
                reason: "SETTINGS payload is not a multiple of 6".into(),
            });
        }
        for setting in payload.chunks_exact(6) {
            let id = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match id {
                SETTINGS_ENABLE_PUSH if value > 1 => {
                    return Err(protocol("SETTINGS_ENABLE_PUSH must be 0 or 1"));
                }
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > MAX_WINDOW {
                        return Err(ConnectionError {
                            code: code::FLOW_CONTROL_ERROR,
                            reason: "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1".into(),
                        });
                    }
                    let delta = value - self.peer_initial_window;
                    self.peer_initial_window = value;
                    for s in &mut self.streams {
                        s.send_window += delta;
                    }
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(protocol("SETTINGS_MAX_FRAME_SIZE out of range"));
                    }
                    self.peer_max_frame = value as usize;
                }
                // Pilot's responses use no dynamic table, pushes nothing,
                // opens no streams and sends no header list it would need to
                // bound: the other settings change nothing here.
                _ => {}
            }
        }
        self.frame(SETTINGS, ACK, 0, &[]);
        Ok(())
    }

    fn on_window_update(&mut self, stream: u32, payload: &[u8]) -> Result<(), ConnectionError> {
        if payload.len() != 4 {
            return Err(ConnectionError {
                code: code::FRAME_SIZE_ERROR,
                reason: "WINDOW_UPDATE is not 4 bytes".into(),
            });
        }
        let increment = i64::from(
            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]) & 0x7fff_ffff,
        );
        if stream == 0 {
            if increment == 0 {
                return Err(protocol("WINDOW_UPDATE of 0"));
            }
            self.send_window += increment;
            if self.send_window > MAX_WINDOW {
                return Err(ConnectionError {
                    code: code::FLOW_CONTROL_ERROR,
                    reason: "connection window above 2^31-1".into(),
                });
            }
            return Ok(());
        }
        if let Some(i) = self.find(stream) {
            let s = &mut self.streams[i];
            s.send_window += increment;
            if increment == 0 {
                self.reset(stream, code::PROTOCOL_ERROR);
            } else if s.send_window > MAX_WINDOW {
                self.reset(stream, code::FLOW_CONTROL_ERROR);
            }
        } else if stream > self.last_stream {
            return Err(protocol("WINDOW_UPDATE on an idle stream"));
        }
        Ok(())
    }

    fn find(&self, stream: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == stream)
    }

    /// Ends a call at once (its ADS loop is dropped).
    fn drop_stream(&mut self, stream: u32) {
        if let Some(i) = self.find(stream) {
            self.remove(i);
        }
    }

    /// Removes call `i`. Every byte the proxy sent on it counted against the
    /// connection's window, so what was not credited yet (owed, consumed, or
    /// still buffered unread) is owed to the connection now.
    fn remove(&mut self, i: usize) {
        let s = self.streams.swap_remove(i);
        let inbound = lock(&s.inbound);
        self.credit += s.credit + inbound.consumed + (inbound.buf.len() - inbound.credited);
    }

    /// Resets one stream (a stream error) and drops its call.
    fn reset(&mut self, stream: u32, error: u32) {
        self.frame(RST_STREAM, 0, stream, &error.to_be_bytes());
        self.drop_stream(stream);
    }

    /// A response that is only a status: headers with END_STREAM.
    fn trailers_only(&mut self, stream: u32, status: &Status) {
        let mut block = BytesMut::from(RESPONSE_HEAD);
        status_block(&mut block, status);
        let max = self.peer_max_frame;
        header_frames(&mut self.write, stream, &block, max);
    }

    /// Polls every call for responses and frames them, as far as flow
    /// control and the output buffer allow; ends calls whose loops ended.
    /// `true`: the output buffer is full, so calls may have more once it is
    /// written.
    pub fn poll_calls(&mut self, cx: &mut Context<'_>) -> bool {
        let mut i = 0;
        while i < self.streams.len() {
            if self.poll_call(i, cx) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
        self.write.len() >= WRITE_HIGH_WATER
    }

    /// `true`: the call is over (its trailers are queued).
    fn poll_call(&mut self, i: usize, cx: &mut Context<'_>) -> bool {
        loop {
            self.drain(i);
            let s = &mut self.streams[i];
            if !s.out.is_empty() {
                return false;
            }
            if let Some(status) = s.ending.take() {
                let (id, remote_ended) = (s.id, s.remote_ended);
                let mut block = BytesMut::new();
                status_block(&mut block, &status);
                let max = self.peer_max_frame;
                header_frames(&mut self.write, id, &block, max);
                if !remote_ended {
                    // The call is over; the proxy need not send the rest.
                    self.frame(RST_STREAM, 0, id, &code::NO_ERROR.to_be_bytes());
                }
                return true;
            }
            if self.write.len() >= WRITE_HIGH_WATER {
                return false;
            }
            match s.call.poll_next(cx) {
                Poll::Pending => return false,
                Poll::Ready(None) => s.ending = Some(Status::ok("")),
                Poll::Ready(Some(Err(status))) => s.ending = Some(status),
                Poll::Ready(Some(Ok(response))) => self.emit(i, &response),
            }
        }
    }

    /// Frames one response of call `i`: straight into the output when it fits
    /// one frame and the windows, else into the call's own queue.
    fn emit(&mut self, i: usize, response: &Response) {
        let len = response.encoded_len();
        let max = self.local.max_message_bytes;
        let s = &mut self.streams[i];
        if len > max {
            s.ending = Some(Status::resource_exhausted(format!(
                "response of {len} bytes exceeds --xds-max-message-bytes ({max})"
            )));
            return;
        }
        let framed = 5 + len;
        let window = self.send_window.min(s.send_window);
        let prefix = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
        if framed <= self.peer_max_frame && framed as i64 <= window {
            frame_head(&mut self.write, framed, DATA, 0, s.id);
            self.write.reserve(framed);
            self.write.put_u8(0);
            self.write.put_slice(&prefix);
            response.encode(&mut self.write);
            self.send_window -= framed as i64;
            s.send_window -= framed as i64;
        } else {
            s.out.reserve(framed);
            s.out.put_u8(0);
            s.out.put_slice(&prefix);
            response.encode(&mut s.out);
        }
    }

    /// Moves call `i`'s queued bytes into DATA frames, as far as the windows
    /// and the output buffer allow.
    fn drain(&mut self, i: usize) {
        let s = &mut self.streams[i];
        if s.out.is_empty() {
            return;
        }
        // Room for a full buffer at once, not grown frame by frame.
        self.write
            .reserve(WRITE_HIGH_WATER + self.peer_max_frame + 9);
        while !s.out.is_empty() && self.write.len() < WRITE_HIGH_WATER {
            let window = self.send_window.min(s.send_window);
            let n = s
                .out
                .len()
                .min(self.peer_max_frame)
                .min(window.max(0) as usize);
            if n == 0 {
                return;
            }
            frame_head(&mut self.write, n, DATA, 0, s.id);
            self.write.extend_from_slice(&s.out[..n]);
            s.out.advance(n);
            self.send_window -= n as i64;
            s.send_window -= n as i64;
        }
        if s.out.is_empty() {
            // Only responses that did not fit a frame or the windows came
            // here; the next one may be small.
            s.out = BytesMut::new();
        }
    }

    /// Returns receive credit for what the calls consumed, once it is worth a
    /// frame (half a window).
    pub fn return_credit(&mut self) {
        let stream_window = self.local.stream_window as usize;
        for s in &mut self.streams {
            let consumed = {
                let mut inbound = lock(&s.inbound);
                std::mem::take(&mut inbound.consumed)
            };
            s.credit += consumed;
            self.credit += consumed;
            if s.credit >= stream_window / 2 && !s.remote_ended {
                let credit = u32::try_from(s.credit).unwrap_or(u32::MAX);
                s.recv_window += i64::from(credit);
                s.credit = 0;
                frame_head(&mut self.write, 4, WINDOW_UPDATE, 0, s.id);
                self.write.put_u32(credit);
            }
        }
        if self.credit >= self.local.connection_window as usize / 2 {
            let credit = u32::try_from(self.credit).unwrap_or(u32::MAX);
            self.recv_window += i64::from(credit);
            self.credit = 0;
            self.frame(WINDOW_UPDATE, 0, 0, &credit.to_be_bytes());
        }
    }

    /// Writes queued output; `Ready(Err)` when the socket failed.
    pub fn poll_flush<W: AsyncWrite + Unpin>(
        &mut self,
        io: &mut W,
        cx: &mut Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.write_peak = self.write_peak.max(self.write.len());
        while !self.write.is_empty() {
            match Pin::new(&mut *io).poll_write(cx, &self.write) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => self.write.advance(n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // A buffer that grew for a large push is not kept while idle.
        if self.write_peak > WRITE_KEPT {
            self.write = BytesMut::with_capacity(WRITE_KEPT);
        }
        self.write_peak = 0;
        Poll::Ready(Ok(()))
    }
}

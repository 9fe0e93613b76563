//! The simulated proxies' side of one ADS call, written straight onto the TCP
//! stream: HTTP/2 framing (RFC 9113) and gRPC's length prefix, nothing more.
//!
//! The load generator shares pilot's two cores with thousands of simulated
//! proxies, so what a proxy costs per message is measured as if it were
//! pilot's. A real Envoy runs elsewhere; here each client does the least an
//! HTTP/2 peer must: send the preface, its settings and one request's headers
//! (HPACK literals, no table), send DATA frames with its requests, read frames,
//! answer SETTINGS and PING, return flow-control credit, and collect the DATA
//! of its one stream into gRPC messages. Response headers and trailers are
//! skipped unread (their HPACK state is never needed: nothing else is decoded);
//! a trailer or reset ends the call with an error.

use anyhow::{Context, Result, bail};
use bytes::{Buf, BufMut, BytesMut};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const STREAM: u32 = 1;
/// The receive window announced for the stream and the connection.
const WINDOW: u32 = 4 << 20;
/// Credit is returned once this much was consumed.
const CREDIT_EVERY: u32 = 1 << 20;
/// Largest frame payload accepted (the default SETTINGS_MAX_FRAME_SIZE).
const MAX_FRAME: usize = 16_384;

/// One gRPC call on its own connection.
pub struct Call {
    tcp: TcpStream,
    inbound: BytesMut,
    /// DATA payloads of the stream, not yet cut into messages.
    messages: BytesMut,
    out: BytesMut,
    unacknowledged: u32,
}

impl Call {
    /// Connects and opens a `POST path` call with gRPC's headers.
    pub async fn open(tcp: TcpStream, authority: &str, path: &str) -> Result<Call> {
        let mut call = Call {
            tcp,
            inbound: BytesMut::with_capacity(64 * 1024),
            messages: BytesMut::new(),
            out: BytesMut::with_capacity(4096),
            unacknowledged: 0,
        };
        call.out.put_slice(PREFACE);
        // SETTINGS: INITIAL_WINDOW_SIZE (0x4), MAX_FRAME_SIZE stays default.
        let mut settings = BytesMut::new();
        settings.put_u16(0x4);
        settings.put_u32(WINDOW);
        call.frame(SETTINGS, 0, 0, &settings);
        // The connection window starts at 65,535; raise it to WINDOW.
        call.frame(WINDOW_UPDATE, 0, 0, &(WINDOW - 65_535).to_be_bytes());
        let mut block = BytesMut::new();
        block.put_u8(0x83); // :method POST (static index 3)
        block.put_u8(0x86); // :scheme http (static index 6)
        literal_indexed_name(&mut block, 4, path); // :path
        literal_indexed_name(&mut block, 1, authority); // :authority
        literal(&mut block, "content-type", "application/grpc");
        literal(&mut block, "te", "trailers");
        call.frame(HEADERS, END_HEADERS, STREAM, &block);
        call.flush().await?;
        Ok(call)
    }

    fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
        self.out.put_slice(&len.to_be_bytes()[1..]);
        self.out.put_u8(kind);
        self.out.put_u8(flags);
        self.out.put_u32(stream);
        self.out.put_slice(payload);
    }

    async fn flush(&mut self) -> Result<()> {
        if !self.out.is_empty() {
            self.tcp.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Sends one request message in a DATA frame.
    pub async fn send(&mut self, message: &impl Message) -> Result<()> {
        let len = message.encoded_len();
        let mut payload = BytesMut::with_capacity(5 + len);
        payload.put_u8(0);
        payload.put_u32(u32::try_from(len)?);
        message.encode(&mut payload)?;
        for chunk in payload.chunks(MAX_FRAME) {
            self.frame(DATA, 0, STREAM, chunk);
        }
        self.flush().await
    }

    /// The next response message.
    pub async fn recv<M: Message + Default>(&mut self) -> Result<M> {
        loop {
            if let Some(bytes) = grpc_message(&mut self.messages)? {
                if self.messages.is_empty() {
                    // Let go of the buffer now: kept empty, a large one (the
                    // initial sync's) would be freed by the next message, inside
                    // a measured change, as a real proxy on another machine would
                    // not.
                    self.messages = BytesMut::new();
                }
                return Ok(M::decode(bytes)?);
            }
            self.read_frame().await?;
        }
    }

    /// Reads and handles one frame.
    async fn read_frame(&mut self) -> Result<()> {
        while self.inbound.len() < 9 || self.inbound.len() < 9 + frame_len(&self.inbound) {
            if self.tcp.read_buf(&mut self.inbound).await? == 0 {
                bail!("pilot closed the connection");
            }
        }
        let len = frame_len(&self.inbound);
        let kind = self.inbound[3];
        let flags = self.inbound[4];
        let stream = u32::from_be_bytes([
            self.inbound[5],
            self.inbound[6],
            self.inbound[7],
            self.inbound[8],
        ]) & 0x7fff_ffff;
        self.inbound.advance(9);
        let mut payload = self.inbound.split_to(len);
        match kind {
            DATA if stream == STREAM => {
                if flags & PADDED != 0 {
                    let pad = usize::from(*payload.first().context("padded DATA")?);
                    payload.advance(1);
                    payload.truncate(payload.len().saturating_sub(pad));
                }
                if self.messages.is_empty() {
                    // Usually a whole message: take the frame's bytes as they are.
                    self.messages = payload;
                } else {
                    self.messages.extend_from_slice(&payload);
                }
                self.unacknowledged += u32::try_from(len)?;
                if self.unacknowledged >= CREDIT_EVERY {
                    let credit = self.unacknowledged.to_be_bytes();
                    self.frame(WINDOW_UPDATE, 0, 0, &credit);
                    self.frame(WINDOW_UPDATE, 0, STREAM, &credit);
                    self.unacknowledged = 0;
                    self.flush().await?;
                }
                if flags & END_STREAM != 0 {
                    bail!("pilot ended the stream");
                }
            }
            HEADERS if stream == STREAM && flags & END_STREAM != 0 => {
                bail!("pilot ended the call (trailers)")
            }
            SETTINGS if flags & ACK == 0 => {
                self.frame(SETTINGS, ACK, 0, &[]);
                self.flush().await?;
            }
            PING if flags & ACK == 0 => {
                self.frame(PING, ACK, 0, &payload);
                self.flush().await?;
            }
            RST_STREAM if stream == STREAM => bail!("pilot reset the stream"),
            GOAWAY => bail!("pilot sent GOAWAY"),
            // Response headers, WINDOW_UPDATE (requests are tiny), acks.
            _ => {}
        }
        Ok(())
    }
}

fn frame_len(buf: &[u8]) -> usize {
    (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2])
}

/// One whole gRPC message cut from `buf`, if there is one.
fn grpc_message(buf: &mut BytesMut) -> Result<Option<bytes::Bytes>> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        bail!("compressed response");
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

/// HPACK literal header field without indexing, name from the static table.
fn literal_indexed_name(block: &mut BytesMut, index: u8, value: &str) {
    block.put_u8(index); // 0000xxxx, index < 15
    string(block, value);
}

/// HPACK literal header field without indexing, new name.
fn literal(block: &mut BytesMut, name: &str, value: &str) {
    block.put_u8(0);
    string(block, name);
    string(block, value);
}

/// An HPACK string literal, not Huffman-coded.
fn string(block: &mut BytesMut, s: &str) {
    // Writing into a `BytesMut` cannot fail.
    let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, &mut block.writer());
    block.put_slice(s.as_bytes());
}

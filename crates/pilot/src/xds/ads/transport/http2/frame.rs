//! HTTP/2's wire vocabulary as pilot's ADS port uses it: frame types, flags,
//! error codes and settings (RFC 9113), and the few things pilot writes
//! beyond plain frames: response headers and trailers as HPACK literals
//! (RFC 7541) that never touch the proxy's dynamic table.

use bytes::{BufMut, BytesMut};
use loona_hpack::encoder::encode_integer_into;
use tonic::Status;

/// What a client sends first (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub(crate) const DATA: u8 = 0x0;
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const PRIORITY: u8 = 0x2;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const PING: u8 = 0x6;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const WINDOW_UPDATE: u8 = 0x8;
pub(crate) const CONTINUATION: u8 = 0x9;

pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const ACK: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
pub(crate) const PADDED: u8 = 0x8;
pub(crate) const PRIORITY_FLAG: u8 = 0x20;

/// Error codes (RFC 9113 §7).
pub(crate) mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const COMPRESSION_ERROR: u32 = 0x9;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

pub(crate) const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub(crate) const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub(crate) const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub(crate) const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// The largest frame payload pilot accepts: SETTINGS_MAX_FRAME_SIZE's
/// default, which pilot keeps.
pub(crate) const MAX_FRAME: usize = 16_384;
/// The dynamic table pilot's decoder keeps (SETTINGS_HEADER_TABLE_SIZE's
/// default, which pilot keeps).
pub(crate) const HEADER_TABLE: usize = 4_096;
/// The largest request header block (HEADERS and its CONTINUATIONs) accepted.
pub(crate) const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Flow-control windows start here until SETTINGS say otherwise.
pub(crate) const DEFAULT_WINDOW: i64 = 65_535;
/// The largest window flow control allows.
pub(crate) const MAX_WINDOW: i64 = (1 << 31) - 1;

/// `:status: 200` (static index 8) and `content-type: application/grpc` (a
/// literal not indexed, with static name 31), the head of every response.
pub(crate) const RESPONSE_HEAD: &[u8] = b"\x88\x0f\x10\x10application/grpc";

pub(crate) fn frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.reserve(9 + len);
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.put_slice(&len.to_be_bytes()[1..]);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

/// A header block as HEADERS and, past the proxy's frame size, CONTINUATION
/// frames, ending the stream.
pub(crate) fn header_frames(out: &mut BytesMut, stream: u32, block: &[u8], max_frame: usize) {
    let mut chunks = block.chunks(max_frame).peekable();
    let mut kind = HEADERS;
    let mut flags = END_STREAM;
    if chunks.peek().is_none() {
        frame_head(out, 0, HEADERS, END_STREAM | END_HEADERS, stream);
        return;
    }
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= END_HEADERS;
        }
        frame_head(out, chunk.len(), kind, flags, stream);
        out.put_slice(chunk);
        kind = CONTINUATION;
        flags = 0;
    }
}

/// `grpc-status` and `grpc-message` (percent-encoded, as gRPC over HTTP/2
/// says; tonic's own encoding) as HPACK literals with new names, not indexed.
pub(crate) fn status_block(block: &mut BytesMut, status: &Status) {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        headers.clear();
        headers.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    for (name, value) in &headers {
        block.put_u8(0);
        for text in [name.as_str().as_bytes(), value.as_bytes()] {
            // Writing into a `BytesMut` cannot fail.
            let _ = encode_integer_into(text.len(), 7, 0, &mut (&mut *block).writer());
            block.put_slice(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn response_head_and_status_decode_as_grpc_headers() {
        let mut block = BytesMut::from(RESPONSE_HEAD);
        // Long enough that its length takes more than one HPACK byte.
        let reason = format!("pilot is shutting down; 100% sure{}", ".".repeat(300));
        status_block(&mut block, &Status::unavailable(reason));
        let mut decoder = loona_hpack::Decoder::new();
        let headers = decoder.decode(&block).expect("decodes");
        let text: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n).expect("name"),
                    String::from_utf8(v).expect("value"),
                )
            })
            .collect();
        assert_eq!(text[0], (":status".into(), "200".into()));
        assert_eq!(text[1], ("content-type".into(), "application/grpc".into()));
        assert_eq!(text[2], ("grpc-status".into(), "14".into()));
        assert_eq!(text[3].0, "grpc-message");
        assert!(text[3].1.contains("100%25%20sure"), "{:?}", text[3]);
        assert!(text[3].1.ends_with(&".".repeat(300)), "{:?}", text[3]);
    }

    #[test]
    fn a_long_header_block_is_split_into_continuations() {
        let block = vec![0u8; 40_000];
        let mut out = BytesMut::new();
        header_frames(&mut out, 3, &block, 16_384);
        let mut kinds = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let len = usize::from(out[at]) << 16
                | usize::from(out[at + 1]) << 8
                | usize::from(out[at + 2]);
            kinds.push((out[at + 3], out[at + 4], len));
            at += 9 + len;
        }
        assert_eq!(
            kinds,
            vec![
                (HEADERS, END_STREAM, 16_384),
                (CONTINUATION, 0, 16_384),
                (CONTINUATION, END_HEADERS, 40_000 - 2 * 16_384)
            ]
        );
    }
}

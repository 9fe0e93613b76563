//! The connection's state machine fed frames directly, without a socket.

use super::frame::*;
use super::*;
use crate::xds::ads::Served;

/// Starts every call with a loop that never answers.
struct Silent;

impl Calls for Silent {
    fn start(&mut self, head: &RequestHead, _: SharedInbound) -> Result<Call, Status> {
        if head.method == "GET" {
            return Err(Status::unimplemented("no"));
        }
        Ok(Call::Delta(Served::new(1, |_| std::future::pending())))
    }
}

fn local() -> Local {
    Local {
        connection_window: 1 << 20,
        stream_window: 1 << 16,
        max_concurrent_streams: 4,
        max_message_bytes: 1 << 20,
    }
}

/// Every frame in `out`, as (type, flags, stream, length); panics on a
/// torn frame.
fn frames(out: &[u8]) -> Vec<(u8, u8, u32, usize)> {
    let mut seen = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let len =
            usize::from(out[at]) << 16 | usize::from(out[at + 1]) << 8 | usize::from(out[at + 2]);
        let stream = u32::from_be_bytes([out[at + 5], out[at + 6], out[at + 7], out[at + 8]]);
        seen.push((out[at + 3], out[at + 4], stream, len));
        at += 9 + len;
        assert!(at <= out.len(), "torn frame in {out:?}");
    }
    seen
}

proptest::proptest! {
    /// Whatever frames a peer sends after a valid preface, the connection
    /// answers with whole frames or a connection error, and never panics.
    #[test]
    fn arbitrary_frames_never_panic_and_output_stays_framed(
        sent in proptest::collection::vec(
            (0u8..12, proptest::num::u8::ANY, 0u32..8, proptest::collection::vec(proptest::num::u8::ANY, 0..64)),
            0..24,
        )
    ) {
        let mut conn = Connection::new(local());
        let mut input = BytesMut::from(PREFACE);
        frame_head(&mut input, 0, SETTINGS, 0, 0);
        for (kind, flags, stream, payload) in &sent {
            frame_head(&mut input, payload.len(), *kind, *flags, *stream);
            input.put_slice(payload);
        }
        // Delivered in two reads, split inside a frame.
        let split = input.len() / 2;
        let rest = input.split_off(split);
        let mut calls = Silent;
        let mut cx = Context::from_waker(std::task::Waker::noop());
        conn.read.extend_from_slice(&input);
        let mut result = conn.receive(&mut calls);
        if result.is_ok() {
            conn.read.extend_from_slice(&rest);
            result = conn.receive(&mut calls);
        }
        conn.poll_calls(&mut cx);
        conn.return_credit();
        if let Err(e) = result {
            conn.goaway(e.code, &e.reason);
        }
        let out = frames(&conn.write);
        proptest::prop_assert!(out.first().is_some_and(|f| f.0 == SETTINGS), "{out:?}");
        // Stream-level frames never name stream 0.
        proptest::prop_assert!(
            out.iter().all(|f| !matches!(f.0, RST_STREAM | HEADERS | DATA) || f.2 != 0),
            "{out:?}"
        );
    }
}

#[test]
fn a_request_is_served_and_a_refused_one_gets_its_status() {
    let mut conn = Connection::new(local());
    let mut input = BytesMut::from(PREFACE);
    frame_head(&mut input, 0, SETTINGS, 0, 0);
    // POST and GET, each with a literal :path (static name 4).
    for (stream, method) in [(1u32, 0x83u8), (3, 0x82)] {
        let block = [method, 0x04, 0x02, b'/', b'x'];
        frame_head(&mut input, block.len(), HEADERS, END_HEADERS, stream);
        input.put_slice(&block);
    }
    conn.read = input;
    conn.receive(&mut Silent).expect("valid frames");
    assert_eq!(conn.open_calls(), 1);
    let out = frames(&conn.write);
    // SETTINGS, WINDOW_UPDATE, the peer's SETTINGS acknowledged, the
    // served call's head, the refused call's status and its reset.
    let kinds: Vec<(u8, u32)> = out.iter().map(|f| (f.0, f.2)).collect();
    assert_eq!(
        kinds,
        vec![
            (SETTINGS, 0),
            (WINDOW_UPDATE, 0),
            (SETTINGS, 0),
            (HEADERS, 1),
            (HEADERS, 3),
            (RST_STREAM, 3)
        ]
    );
}

#[test]
fn a_reset_call_gives_its_unread_bytes_back_to_the_connection_window() {
    let mut conn = Connection::new(local());
    let mut input = BytesMut::from(PREFACE);
    frame_head(&mut input, 0, SETTINGS, 0, 0);
    let block = [0x83, 0x04, 0x02, b'/', b'x'];
    frame_head(&mut input, block.len(), HEADERS, END_HEADERS, 1);
    input.put_slice(&block);
    // The start of a message the call never gets to read whole.
    let partial = [0u8, 0, 0, 0x10, 0, 1, 2, 3];
    frame_head(&mut input, partial.len(), DATA, 0, 1);
    input.put_slice(&partial);
    conn.read = input;
    conn.receive(&mut Silent).expect("valid frames");
    let window = conn.recv_window;
    assert_eq!(window, i64::from(local().connection_window) - 8);

    let mut reset = BytesMut::new();
    frame_head(&mut reset, 4, RST_STREAM, 0, 1);
    reset.put_u32(code::NO_ERROR);
    conn.read = reset;
    conn.receive(&mut Silent).expect("valid frames");
    assert_eq!(conn.open_calls(), 0);
    assert_eq!(conn.credit, 8, "the 8 bytes are owed to the connection");
}

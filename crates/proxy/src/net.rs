//! Socket helpers the listeners need beyond what tokio offers.
//!
//! It owns reading a redirected connection's original destination; it does not
//! install the redirect (`proxy init` does, see [`crate::init`]). A connection
//! captured by the `ISTIO_REDIRECT`/`ISTIO_IN_REDIRECT` rules arrives on the proxy's
//! 15001/15006 listener with its local address rewritten; the kernel's conntrack
//! entry still knows where the client meant to go, and [`original_dst`] asks it.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::SockRef;

/// The destination `stream` had before an iptables `REDIRECT` sent it to this
/// listener: `SO_ORIGINAL_DST` for IPv4, `IP6T_SO_ORIGINAL_DST` for IPv6, chosen by
/// the family of the stream's local address (an IPv4-mapped IPv6 local address counts
/// as IPv4, since the kernel tracked the connection as IPv4).
///
/// When the connection was not redirected, either conntrack tracked it anyway
/// (the namespace has nat rules) and this returns the local address, or the kernel
/// has no entry for it and this returns an error of kind
/// [`io::ErrorKind::NotFound`] that says so; callers fall back to
/// `stream.local_addr()`, which then is the destination.
pub fn original_dst(stream: &tokio::net::TcpStream) -> io::Result<SocketAddr> {
    let local = stream.local_addr()?;
    let sock = SockRef::from(stream);
    let ipv4 = match local.ip() {
        IpAddr::V4(_) => true,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    };
    let found = if ipv4 {
        sock.original_dst_v4()
    } else {
        sock.original_dst_v6()
    };
    let addr = found.map_err(|err| not_redirected(err, local))?;
    addr.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the original destination of the connection to {local} is not an IP address"),
        )
    })
}

/// Linux's ENOPROTOOPT: no conntrack in the kernel answers `SO_ORIGINAL_DST`, so
/// nothing can have been redirected either.
const ENOPROTOOPT: i32 = 92;

/// Names the common failure (ENOENT: no NAT entry; ENOPROTOOPT: no conntrack at
/// all) plainly; other errors keep their kind and gain the local address.
fn not_redirected(err: io::Error, local: SocketAddr) -> io::Error {
    if err.kind() == io::ErrorKind::NotFound || err.raw_os_error() == Some(ENOPROTOOPT) {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "the connection to {local} was not redirected by iptables (no original \
                 destination recorded); use its local address"
            ),
        )
    } else {
        io::Error::new(
            err.kind(),
            format!("cannot read the original destination of the connection to {local}: {err}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_that_was_not_redirected_says_so() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (client, accepted) = tokio::join!(tokio::net::TcpStream::connect(addr), async {
            listener.accept().await
        });
        let _client = client.expect("connect");
        let (server, _) = accepted.expect("accept");
        match original_dst(&server) {
            // Where nat rules make conntrack track loopback, the entry shows the
            // connection went where it arrived.
            Ok(orig) => assert_eq!(orig, addr),
            Err(err) => {
                assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
                assert!(err.to_string().contains("not redirected"), "{err}");
            }
        }
    }

    #[test]
    fn no_conntrack_entry_and_no_conntrack_read_as_not_redirected() {
        let local: SocketAddr = "10.0.0.1:8080".parse().expect("addr");
        for errno in [2, ENOPROTOOPT] {
            let err = not_redirected(io::Error::from_raw_os_error(errno), local);
            assert_eq!(err.kind(), io::ErrorKind::NotFound);
            assert!(err.to_string().contains("10.0.0.1:8080 was not redirected"));
        }
        let other = not_redirected(io::Error::from_raw_os_error(9), local);
        assert_ne!(other.kind(), io::ErrorKind::NotFound);
        assert!(
            other
                .to_string()
                .contains("cannot read the original destination")
        );
    }
}

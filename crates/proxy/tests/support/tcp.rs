//! Raw TCP test servers on a free loopback port.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

/// Binds a free port on 127.0.0.1 and runs `conn` on every accepted
/// connection, each in its own task, for as long as the test's runtime lives.
pub async fn serve<F, Fut>(conn: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(conn(s));
        }
    });
    addr
}

/// Reads from `s` until a whole HTTP/1.1 request head (up to the blank line)
/// is in: what was read, or `None` when the peer closed first.
#[allow(dead_code)] // not every test that includes this module reads heads
pub async fn read_head(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
        }
    }
    Some(got)
}

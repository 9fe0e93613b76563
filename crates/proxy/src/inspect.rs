//! Envoy's `tls_inspector`: looks at the first bytes of a connection, without
//! consuming them, to tell TLS (`tls`) from anything else (`raw_buffer`),
//! and reads the ClientHello's SNI and ALPN for filter chain matching.

use std::time::Duration;

use tokio::net::TcpStream;

/// The largest ClientHello looked at (one TLS record).
const MAX_HELLO: usize = 16 * 1024 + 5;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// A TLS ClientHello.
    Tls(Hello),
    /// Not TLS (or nothing arrived in time: server-first protocols).
    Plain,
}

/// The parts of a ClientHello chains match on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hello {
    /// `server_name` (SNI), lower-cased.
    pub sni: Option<String>,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<String>,
}

/// Peeks at `stream` until its first bytes decide; waits at most `wait` for
/// the first byte (a connection whose peer waits for the server to speak is
/// plain text, as Envoy's `continue_on_listener_filters_timeout`).
pub async fn detect(stream: &TcpStream, wait: Duration) -> Detected {
    let mut buf = vec![0u8; 512];
    let deadline = tokio::time::Instant::now() + wait;
    let mut last = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return Detected::Plain,
        };
        if n == 0 {
            return Detected::Plain;
        }
        match parse_client_hello(&buf[..n]) {
            Err(NotTls) => return Detected::Plain,
            Ok(Some(hello)) => return Detected::Tls(hello),
            Ok(None) if n == buf.len() && buf.len() < MAX_HELLO => {
                buf.resize((buf.len() * 2).min(MAX_HELLO), 0);
            }
            Ok(None) if n == last || n == buf.len() => {
                // No new bytes yet: wait a little for the rest of the record.
                if tokio::time::Instant::now() >= deadline {
                    return Detected::Tls(Hello::default());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(None) => {}
        }
        last = n;
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<usize> {
        Some(usize::from(self.u8()?) << 8 | usize::from(self.u8()?))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
}

/// The first bytes are not a TLS ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotTls;

/// Parses the ClientHello at the start of `buf`: `Err` when it is not TLS,
/// `Ok(None)` when more bytes are needed, else its SNI and ALPN.
pub fn parse_client_hello(buf: &[u8]) -> Result<Option<Hello>, NotTls> {
    // Record header: handshake (22), version 3.x, length.
    match buf {
        [] => return Ok(None),
        [22] | [22, 3] | [22, 3, _] | [22, 3, _, _] => return Ok(None),
        [22, 3, minor, ..] if *minor <= 4 => {}
        _ => return Err(NotTls),
    }
    let record_len = usize::from(buf[3]) << 8 | usize::from(buf[4]);
    if record_len < 4 {
        return Err(NotTls);
    }
    let available = buf.len() - 5;
    let body = &buf[5..5 + record_len.min(available)];
    if body.is_empty() {
        return Ok(None);
    }
    if body[0] != 1 {
        return Err(NotTls);
    }
    if body.len() < record_len && available < record_len {
        return Ok(None);
    }
    Ok(Some(hello_fields(&body[4..]).unwrap_or_default()))
}

/// SNI and ALPN from a ClientHello body (after the handshake header); `None`
/// when it is cut short (the caller keeps what it has: nothing).
fn hello_fields(body: &[u8]) -> Option<Hello> {
    let mut r = Reader { buf: body };
    r.take(2 + 32)?; // version, random
    let session = usize::from(r.u8()?);
    r.take(session)?;
    let suites = r.u16()?;
    r.take(suites)?;
    let compression = usize::from(r.u8()?);
    r.take(compression)?;
    let mut hello = Hello::default();
    let ext_len = r.u16()?;
    let mut ext = Reader {
        buf: r.take(ext_len)?,
    };
    while !ext.buf.is_empty() {
        let kind = ext.u16()?;
        let len = ext.u16()?;
        let mut data = Reader {
            buf: ext.take(len)?,
        };
        match kind {
            0 => {
                let list = data.u16()?;
                let mut names = Reader {
                    buf: data.take(list)?,
                };
                while !names.buf.is_empty() {
                    let name_type = names.u8()?;
                    let n = names.u16()?;
                    let name = names.take(n)?;
                    if name_type == 0 {
                        hello.sni = std::str::from_utf8(name).ok().map(str::to_ascii_lowercase);
                    }
                }
            }
            16 => {
                let list = data.u16()?;
                let mut protos = Reader {
                    buf: data.take(list)?,
                };
                while !protos.buf.is_empty() {
                    let n = usize::from(protos.u8()?);
                    let p = protos.take(n)?;
                    hello.alpn.push(String::from_utf8_lossy(p).into_owned());
                }
            }
            _ => {}
        }
    }
    Some(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, with `sni` and `alpn`.
    fn client_hello(sni: &str, alpn: &[&str]) -> Vec<u8> {
        use std::sync::Arc;
        let mut roots = rustls::RootCertStore::empty();
        let cert = rcgen::generate_simple_self_signed(vec!["x.example".into()]).unwrap();
        roots.add(cert.cert.der().clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_sni_and_alpn_from_a_real_client_hello() {
        let hello = client_hello(
            "Reviews.Default.svc",
            &["istio-peer-exchange", "istio", "h2"],
        );
        let parsed = parse_client_hello(&hello).unwrap().unwrap();
        assert_eq!(parsed.sni.as_deref(), Some("reviews.default.svc"));
        assert_eq!(parsed.alpn, ["istio-peer-exchange", "istio", "h2"]);
        // Every prefix asks for more bytes rather than guessing.
        for cut in 1..hello.len().min(64) {
            assert_eq!(parse_client_hello(&hello[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn plain_text_is_not_tls() {
        assert_eq!(parse_client_hello(b"GET / HTTP/1.1\r\n"), Err(NotTls));
        assert_eq!(parse_client_hello(b"PRI * HTTP/2.0\r\n"), Err(NotTls));
        assert_eq!(parse_client_hello(&[22, 9, 9, 0, 5]), Err(NotTls));
        assert_eq!(
            parse_client_hello(&[22, 3, 1, 0, 4, 2, 0, 0, 0]),
            Err(NotTls)
        );
    }

    #[tokio::test]
    async fn detect_peeks_without_consuming() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hello = client_hello("a.example", &["h2"]);
        let sent = hello.clone();
        tokio::spawn(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.write_all(&sent).await.unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        });
        let (mut s, _) = listener.accept().await.unwrap();
        let d = detect(&s, Duration::from_secs(5)).await;
        assert_eq!(
            d,
            Detected::Tls(Hello {
                sni: Some("a.example".into()),
                alpn: vec!["h2".into()]
            })
        );
        let mut got = vec![0u8; hello.len()];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(
            got, hello,
            "the bytes are still there for the TLS handshake"
        );

        // A server-first peer sends nothing: plain text after the wait.
        tokio::spawn(async move {
            let _c = TcpStream::connect(addr).await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
        });
        let (s, _) = listener.accept().await.unwrap();
        assert_eq!(
            detect(&s, Duration::from_millis(100)).await,
            Detected::Plain
        );
    }
}

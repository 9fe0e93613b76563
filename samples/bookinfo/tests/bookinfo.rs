//! Bookinfo's services over real sockets: productpage → details and reviews,
//! reviews v2/v3 → ratings, the headers carried along, and what each shows
//! when an upstream is down.

use std::net::SocketAddr;
use std::time::Duration;

use bookinfo::{App, Config, Error, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Starts `config`; returns its base URL. The service runs until the test ends.
async fn start(config: Config) -> String {
    let app = App::build(config).await.expect("service starts");
    let url = format!("http://{}", app.addr());
    tokio::spawn(app.run_until(std::future::pending()));
    url
}

/// A port nothing listens on.
async fn closed_port() -> String {
    let l = tokio::net::TcpListener::bind(any_port())
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}")
}

/// ratings, reviews at `version` calling it, details, and a productpage in front.
async fn mesh(version: &str) -> String {
    let ratings = start(Config::new(Service::Ratings, "v1", any_port())).await;
    let mut reviews = Config::new(Service::Reviews, version, any_port());
    reviews.ratings = ratings.clone();
    let reviews = start(reviews).await;
    let details = start(Config::new(Service::Details, "v1", any_port())).await;
    let mut page = Config::new(Service::Productpage, "v1", any_port());
    page.details = details;
    page.reviews = reviews;
    page.ratings = ratings;
    start(page).await
}

/// A raw HTTP/1.1 GET: status, the `x-served-by` header and the body.
async fn get(url: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let (status, head, body) = request("GET", url, path, headers, "").await;
    let served_by = head
        .lines()
        .find_map(|l| l.strip_prefix("x-served-by: "))
        .unwrap_or("")
        .to_string();
    (status, served_by, body)
}

/// A raw HTTP/1.1 request: status, response head and body.
async fn request(
    method: &str,
    url: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let addr = url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a full response");
    let status = head[9..12].parse().expect("status");
    (status, head.to_string(), body.to_string())
}

#[tokio::test]
async fn each_reviews_version_shows_its_ratings_on_the_product_page() {
    for (version, expect) in [
        ("v1", None),
        ("v2", Some("stars black")),
        ("v3", Some("stars red")),
    ] {
        let page = mesh(version).await;
        let (status, served_by, body) = get(&page, "/productpage", &[]).await;
        assert_eq!(status, 200);
        assert_eq!(served_by, "productpage-v1");
        assert!(body.contains("data-served-by=\"details-v1\""), "{body}");
        assert!(
            body.contains(&format!("data-served-by=\"reviews-{version}\"")),
            "{body}"
        );
        match expect {
            None => assert!(!body.contains("class=\"stars"), "{body}"),
            Some(class) => assert!(body.contains(class), "{body}"),
        }
        let (status, served_by, json) = get(&page, "/api/v1/products/0/reviews", &[]).await;
        assert_eq!((status, served_by.as_str()), (200, "productpage-v1"));
        let json: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(json["servedBy"], format!("reviews-{version}"));
        let first = &json["reviews"][0]["rating"];
        match version {
            "v1" => assert!(first.is_null(), "{json}"),
            _ => {
                assert_eq!(first["stars"], 5);
                assert_eq!(json["ratingsServedBy"], "ratings-v1");
            }
        }
    }
}

/// An upstream that records the request head it gets and answers `{}`.
async fn recording_upstream() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let l = tokio::net::TcpListener::bind(any_port())
        .await
        .expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = l.accept().await {
            let mut buf = vec![0; 16 * 1024];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let _ = tx.send(String::from_utf8_lossy(&got).to_lowercase());
            let _ = tcp
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}")
                .await;
        }
    });
    (url, rx)
}

#[tokio::test]
async fn productpage_carries_tracing_headers_and_the_signed_in_user_upstream() {
    let (upstream, mut heads) = recording_upstream().await;
    let mut page = Config::new(Service::Productpage, "v1", any_port());
    page.details = upstream.clone();
    page.reviews = upstream;
    let page = start(page).await;
    let (status, _, _) = get(
        &page,
        "/api/v1/products/0",
        &[
            ("x-request-id", "req-42"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
            ("end-user", "jason"),
            ("x-not-propagated", "1"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let head = heads.recv().await.expect("details was called");
    assert!(head.starts_with("get /details/0 "), "{head}");
    assert!(head.contains("x-request-id: req-42"), "{head}");
    assert!(
        head.contains("x-b3-traceid: 80f198ee56343ba864fe8b2a57d3eff7"),
        "{head}"
    );
    assert!(head.contains("end-user: jason"), "{head}");
    assert!(!head.contains("x-not-propagated"), "{head}");

    // Signed in with the cookie the login sets: end-user comes from it.
    let (status, _, _) = get(
        &page,
        "/api/v1/products/0/reviews",
        &[("cookie", "user=jason")],
    )
    .await;
    assert_eq!(status, 200);
    let head = heads.recv().await.expect("reviews was called");
    assert!(head.starts_with("get /reviews/0 "), "{head}");
    assert!(head.contains("end-user: jason"), "{head}");
}

#[tokio::test]
async fn unavailable_upstreams_are_named_on_the_page_not_failed() {
    // reviews v3 with ratings down: the reviews still show, with the error.
    let mut reviews = Config::new(Service::Reviews, "v3", any_port());
    reviews.ratings = closed_port().await;
    let reviews = start(reviews).await;
    let (status, _, body) = get(&reviews, "/reviews/0", &[]).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("Ratings service is currently unavailable"),
        "{body}"
    );

    // productpage with details and reviews down: still 200, saying so.
    let mut page = Config::new(Service::Productpage, "v1", any_port());
    page.details = closed_port().await;
    page.reviews = closed_port().await;
    let page = start(page).await;
    let (status, _, body) = get(&page, "/productpage", &[]).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("product details are currently unavailable"),
        "{body}"
    );
    assert!(
        body.contains("product reviews are currently unavailable"),
        "{body}"
    );
    let (status, _, body) = get(&page, "/api/v1/products/0/reviews", &[]).await;
    assert_eq!(status, 503);
    assert!(body.contains("reviews unavailable"), "{body}");
}

#[tokio::test]
async fn bad_configs_are_refused_with_what_to_change() {
    let err = |r: Result<App, Error>| match r {
        Ok(_) => panic!("accepted a bad config"),
        Err(e) => e.to_string(),
    };
    let e = err(App::build(Config::new(Service::Reviews, "v4", any_port())).await);
    assert!(e.contains("v1, v2 and v3"), "{e}");

    let mut bad = Config::new(Service::Productpage, "v1", any_port());
    bad.details = "details:9080".to_string();
    let e = err(App::build(bad).await);
    assert!(e.contains("--details") && e.contains("http://"), "{e}");

    let taken = tokio::net::TcpListener::bind(any_port())
        .await
        .expect("bind");
    let addr = taken.local_addr().expect("addr");
    let e = err(App::build(Config::new(Service::Details, "v1", addr)).await);
    assert!(
        e.contains(&addr.to_string()) && e.contains("--listen"),
        "{e}"
    );
}

#[tokio::test]
async fn signing_in_sets_the_user_that_reviews_see_as_end_user() {
    let page = mesh("v2").await;
    let (status, head, _) = request("POST", &page, "/login", &[], "username=jason&passwd=x").await;
    assert_eq!(status, 303);
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .expect("a session cookie");
    assert!(cookie.starts_with("user=jason;"), "{cookie}");
    let (status, _, body) = get(&page, "/productpage", &[("cookie", "user=jason")]).await;
    assert_eq!(status, 200);
    assert!(body.contains("Signed in as jason"), "{body}");
    let (status, _, _) = request("POST", &page, "/login", &[], "username=").await;
    assert_eq!(status, 400);
    let (status, head, _) = request("GET", &page, "/logout", &[], "").await;
    assert_eq!(status, 303);
    assert!(head.contains("Max-Age=0"), "{head}");
}

#[tokio::test]
async fn metrics_count_the_requests_served() {
    let ratings = start(Config::new(Service::Ratings, "v1", any_port())).await;
    for _ in 0..3 {
        let (status, _, _) = get(&ratings, "/ratings/0", &[]).await;
        assert_eq!(status, 200);
    }
    let (status, _, body) = get(&ratings, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(
        body.contains("bookinfo_requests_total{service=\"ratings\",version=\"v1\"} 3\n"),
        "{body}"
    );
}

#[tokio::test]
async fn a_broken_instance_fails_every_request_but_health_and_metrics() {
    let mut config = Config::new(Service::Ratings, "v1", any_port());
    config.fail_with = Some(503);
    let ratings = start(config).await;
    let (status, served_by, _) = get(&ratings, "/ratings/0", &[]).await;
    assert_eq!((status, served_by.as_str()), (503, "ratings-v1"));
    assert_eq!(get(&ratings, "/health", &[]).await.0, 200);
    let (status, _, body) = get(&ratings, "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("} 2\n"), "both counted: {body}");
}

#[tokio::test]
async fn a_slow_instance_holds_every_request_but_health() {
    let mut config = Config::new(Service::Ratings, "v1", any_port());
    config.delay = Some(Duration::from_secs(2));
    let ratings = start(config).await;
    let started = std::time::Instant::now();
    let (status, served_by, _) = get(&ratings, "/ratings/0", &[]).await;
    assert_eq!((status, served_by.as_str()), (200, "ratings-v1"));
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "answered after {:?}",
        started.elapsed()
    );
    let started = std::time::Instant::now();
    assert_eq!(get(&ratings, "/health", &[]).await.0, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "/health held {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connect_to_sends_every_call_to_one_address_keeping_the_host() {
    let (upstream, mut heads) = recording_upstream().await;
    let port = upstream.rsplit(':').next().unwrap().to_string();
    let mut page = Config::new(Service::Productpage, "v1", any_port());
    // A name no resolver knows: only --connect-to makes it reachable.
    page.details = format!("http://details.bookinfo.invalid:{port}");
    page.reviews = page.details.clone();
    page.connect_to = Some("127.0.0.1".parse().unwrap());
    let page = start(page).await;
    let (status, _, _) = get(&page, "/api/v1/products/0", &[]).await;
    assert_eq!(status, 200);
    let head = heads.recv().await.expect("details was called");
    assert!(head.starts_with("get /details/0 "), "{head}");
    assert!(
        head.contains(&format!("host: details.bookinfo.invalid:{port}")),
        "{head}"
    );
}

//! The four services' routes. Each handler answers with `x-served-by`
//! (`reviews-v2`) and, for JSON, a `servedBy` field with the same value.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::upstream::{Answer, Upstream, propagated};
use crate::{Config, PRODUCTPAGE_TIMEOUT, Service, ratings_timeout};

struct Ctx {
    config: Config,
    /// Requests served, `/metrics` excluded.
    served: std::sync::atomic::AtomicU64,
    served_by: HeaderValue,
    details: Upstream,
    reviews: Upstream,
    ratings: Upstream,
}

type Shared = State<Arc<Ctx>>;

/// The routes of `config.service`.
pub fn router(config: Config) -> Router {
    let served_by = HeaderValue::from_str(&config.served_by())
        .unwrap_or_else(|_| HeaderValue::from_static("bookinfo"));
    let ctx = Arc::new(Ctx {
        details: Upstream::new(&config.details, config.connect_to),
        reviews: Upstream::new(&config.reviews, config.connect_to),
        ratings: Upstream::new(&config.ratings, config.connect_to),
        served_by,
        served: std::sync::atomic::AtomicU64::new(0),
        config,
    });
    let routes = match ctx.config.service {
        Service::Productpage => Router::new()
            .route("/", get(index))
            .route("/productpage", get(productpage))
            .route("/login", post(login))
            .route("/logout", get(logout))
            .route("/api/v1/products", get(products))
            .route("/api/v1/products/{id}", get(product_details))
            .route("/api/v1/products/{id}/reviews", get(product_reviews))
            .route("/api/v1/products/{id}/ratings", get(product_ratings)),
        Service::Details => Router::new().route("/details/{id}", get(details)),
        Service::Reviews => Router::new().route("/reviews/{id}", get(reviews)),
        Service::Ratings => Router::new().route("/ratings/{id}", get(ratings)),
    };
    routes
        .route("/health", get(health))
        .layer(axum::middleware::from_fn_with_state(ctx.clone(), count))
        .route("/metrics", get(metrics))
        .with_state(ctx)
}

/// Counts every request but `/metrics`'s (a mirror's copies too, which
/// is how a test sees mirroring: the mirror's answers are dropped), holds it
/// when the instance is slow (`--delay`), and fails it when the instance is
/// broken (`--fail-with`).
async fn count(
    State(ctx): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    ctx.served
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(delay) = ctx.config.delay
        && request.uri().path() != "/health"
    {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = ctx.config.fail_with
        && request.uri().path() != "/health"
    {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return json_answer(
            &ctx,
            status,
            json!({"error": "this instance is broken (--fail-with)"}),
        );
    }
    next.run(request).await
}

/// `GET /metrics`: `bookinfo_requests_total`, in Prometheus' text format.
async fn metrics(State(ctx): Shared) -> Response {
    let (service, version) = match ctx.config.served_by().split_once('-') {
        Some((s, v)) => (s.to_string(), v.to_string()),
        None => (ctx.config.served_by(), String::new()),
    };
    let body = format!(
        "# HELP bookinfo_requests_total Requests this instance served.\n\
         # TYPE bookinfo_requests_total counter\n\
         bookinfo_requests_total{{service=\"{service}\",version=\"{version}\"}} {}\n",
        ctx.served.load(std::sync::atomic::Ordering::Relaxed)
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

fn json_answer(ctx: &Ctx, status: StatusCode, mut body: Value) -> Response {
    if let Value::Object(map) = &mut body {
        map.insert(
            "servedBy".to_string(),
            Value::String(ctx.config.served_by()),
        );
    }
    (
        status,
        [("x-served-by", ctx.served_by.clone())],
        axum::Json(body),
    )
        .into_response()
}

async fn health(State(ctx): Shared) -> Response {
    json_answer(&ctx, StatusCode::OK, json!({"status": "ok"}))
}

async fn details(State(ctx): Shared, Path(id): Path<u32>) -> Response {
    json_answer(
        &ctx,
        StatusCode::OK,
        json!({
            "id": id,
            "author": "William Shakespeare",
            "year": 1595,
            "type": "paperback",
            "pages": 200,
            "publisher": "PublisherA",
            "language": "English",
            "ISBN-10": "1234567890",
            "ISBN-13": "123-1234567890",
        }),
    )
}

async fn ratings(State(ctx): Shared, Path(id): Path<u32>) -> Response {
    json_answer(
        &ctx,
        StatusCode::OK,
        json!({"id": id, "ratings": {"Reviewer1": 5, "Reviewer2": 4}}),
    )
}

const REVIEWS: [(&str, &str); 2] = [
    (
        "Reviewer1",
        "An extremely entertaining play by Shakespeare. The slapstick humour is refreshing!",
    ),
    (
        "Reviewer2",
        "Absolutely fun and entertaining. The play lacks thematic depth when compared to other plays by Shakespeare.",
    ),
];

async fn reviews(State(ctx): Shared, Path(id): Path<u32>, headers: HeaderMap) -> Response {
    let version = ctx.config.version.as_str();
    // v1 shows no ratings; v2 black stars, v3 red ones, from ratings.
    let color = match version {
        "v2" => Some("black"),
        "v3" => Some("red"),
        _ => None,
    };
    let mut ratings_served_by = None;
    let stars: Option<Result<Value, String>> = match color {
        None => None,
        Some(_) => Some(
            match ctx
                .ratings
                .get(
                    &format!("/ratings/{id}"),
                    &propagated(&headers),
                    ratings_timeout(version),
                    0,
                )
                .await
            {
                Ok(Answer {
                    status,
                    served_by,
                    json,
                }) if status.is_success() => {
                    ratings_served_by = served_by;
                    Ok(json["ratings"].clone())
                }
                Ok(answer) => Err(format!("ratings answered {}", answer.status)),
                Err(e) => Err(e.to_string()),
            },
        ),
    };
    let reviews: Vec<Value> = REVIEWS
        .iter()
        .map(|(reviewer, text)| {
            let mut review = json!({"reviewer": reviewer, "text": text});
            match (&stars, color) {
                (Some(Ok(all)), Some(color)) => {
                    if let Some(n) = all.get(*reviewer).and_then(Value::as_u64) {
                        review["rating"] = json!({"stars": n, "color": color});
                    }
                }
                (Some(Err(_)), _) => {
                    review["rating"] = json!({"error": "Ratings service is currently unavailable"});
                }
                _ => {}
            }
            review
        })
        .collect();
    let mut body = json!({"id": id, "podname": ctx.config.served_by(), "reviews": reviews});
    if let Some(s) = ratings_served_by {
        body["ratingsServedBy"] = Value::String(s);
    }
    // What the sidecar said of the caller's certificate (mTLS only), so a
    // client can see which identities the mesh saw.
    if let Some(xfcc) = headers
        .get("x-forwarded-client-cert")
        .and_then(|v| v.to_str().ok())
    {
        body["forwardedClientCert"] = Value::String(xfcc.to_string());
    }
    if let Some(Err(e)) = &stars {
        tracing::warn!(error = %e, "reviews: ratings unavailable");
    }
    json_answer(&ctx, StatusCode::OK, body)
}

/// The request's propagated headers, with `end-user` from the sign-in
/// cookie when the request does not carry one.
fn outgoing(headers: &HeaderMap) -> HeaderMap {
    let mut out = propagated(headers);
    if !out.contains_key("end-user")
        && let Some(user) = cookie_user(headers)
        && let Ok(value) = HeaderValue::from_str(&user)
    {
        out.insert("end-user", value);
    }
    out
}

fn cookie_user(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == "user")
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty())
}

async fn index() -> Html<&'static str> {
    Html(
        "<html><body><h1>Bookinfo</h1><p><a href=\"/productpage\">Product page</a></p></body></html>",
    )
}

async fn login(State(ctx): Shared, body: String) -> Response {
    let user = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "username")
        .map(|(_, v)| v.to_string())
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric()));
    let Some(user) = user else {
        return (
            StatusCode::BAD_REQUEST,
            "send username=NAME (letters and digits)\n",
        )
            .into_response();
    };
    (
        StatusCode::SEE_OTHER,
        [
            ("x-served-by", ctx.served_by.clone()),
            (
                header::SET_COOKIE.as_str(),
                HeaderValue::from_str(&format!("user={user}; Path=/"))
                    .unwrap_or_else(|_| HeaderValue::from_static("user=; Path=/")),
            ),
            (
                header::LOCATION.as_str(),
                HeaderValue::from_static("/productpage"),
            ),
        ],
    )
        .into_response()
}

async fn logout(State(ctx): Shared) -> Response {
    (
        StatusCode::SEE_OTHER,
        [
            ("x-served-by", ctx.served_by.clone()),
            (
                header::SET_COOKIE.as_str(),
                HeaderValue::from_static("user=; Path=/; Max-Age=0"),
            ),
            (
                header::LOCATION.as_str(),
                HeaderValue::from_static("/productpage"),
            ),
        ],
    )
        .into_response()
}

async fn products(State(ctx): Shared) -> Response {
    let body = json!([{
        "id": 0,
        "title": "The Comedy of Errors",
        "descriptionHtml": "Wikipedia Summary: The Comedy of Errors is one of William Shakespeare's early plays.",
    }]);
    (
        StatusCode::OK,
        [("x-served-by", ctx.served_by.clone())],
        axum::Json(body),
    )
        .into_response()
}

/// An upstream's answer passed through (its `servedBy` kept), or 503 naming
/// what failed.
fn relay(ctx: &Ctx, what: &str, answer: Result<Answer, crate::upstream::CallError>) -> Response {
    match answer {
        Ok(a) => (
            a.status,
            [("x-served-by", ctx.served_by.clone())],
            axum::Json(a.json),
        )
            .into_response(),
        Err(e) => json_answer(
            ctx,
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": format!("{what} unavailable: {e}")}),
        ),
    }
}

/// `GET /{what}/{id}` on that upstream (reviews with one retry, as the
/// sample's productpage), relayed.
async fn api_call(ctx: &Ctx, what: &str, id: u32, h: &HeaderMap) -> Response {
    let (upstream, retries) = match what {
        "details" => (&ctx.details, 0),
        "reviews" => (&ctx.reviews, 1),
        _ => (&ctx.ratings, 0),
    };
    let path = format!("/{what}/{id}");
    let a = upstream
        .get(&path, &outgoing(h), PRODUCTPAGE_TIMEOUT, retries)
        .await;
    relay(ctx, what, a)
}

async fn product_details(State(ctx): Shared, Path(id): Path<u32>, h: HeaderMap) -> Response {
    api_call(&ctx, "details", id, &h).await
}

async fn product_reviews(State(ctx): Shared, Path(id): Path<u32>, h: HeaderMap) -> Response {
    api_call(&ctx, "reviews", id, &h).await
}

async fn product_ratings(State(ctx): Shared, Path(id): Path<u32>, h: HeaderMap) -> Response {
    api_call(&ctx, "ratings", id, &h).await
}

/// The product page: details and reviews, each as it answered or a message
/// saying it is unavailable. Always 200, as Istio's sample.
async fn productpage(State(ctx): Shared, h: HeaderMap) -> Response {
    let headers = outgoing(&h);
    let (details, reviews) = tokio::join!(
        ctx.details
            .get("/details/0", &headers, PRODUCTPAGE_TIMEOUT, 0),
        ctx.reviews
            .get("/reviews/0", &headers, PRODUCTPAGE_TIMEOUT, 1),
    );
    let user = headers
        .get("end-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut page = String::from("<html><head><title>Simple Bookstore App</title></head><body>\n");
    page.push_str("<h1>The Comedy of Errors</h1>\n");
    if !user.is_empty() {
        page.push_str(&format!(
            "<p id=\"user\">Signed in as {}</p>\n",
            escape(user)
        ));
    }
    match details {
        Ok(a) if a.status.is_success() => {
            page.push_str(&format!(
                "<div id=\"details\" data-served-by=\"{}\"><p>Author: {}</p><p>Pages: {}</p></div>\n",
                escape(a.served_by.as_deref().unwrap_or("")),
                escape(a.json["author"].as_str().unwrap_or("")),
                a.json["pages"]
            ));
        }
        Ok(a) => page.push_str(&format!(
            "<div id=\"details\"><p>Error fetching product details ({})</p></div>\n",
            a.status
        )),
        Err(_) => page.push_str(
            "<div id=\"details\"><p>Sorry, product details are currently unavailable for this book.</p></div>\n",
        ),
    }
    match reviews {
        Ok(a) if a.status.is_success() => {
            page.push_str(&format!(
                "<div id=\"reviews\" data-served-by=\"{}\">\n",
                escape(a.served_by.as_deref().unwrap_or(""))
            ));
            for r in a.json["reviews"].as_array().into_iter().flatten() {
                let rating = &r["rating"];
                let stars = match (rating["stars"].as_u64(), rating["color"].as_str()) {
                    (Some(n), Some(color)) => {
                        format!(" <span class=\"stars {color}\">{}</span>", "★".repeat(n as usize))
                    }
                    _ => match rating["error"].as_str() {
                        Some(e) => format!(" <span class=\"error\">{}</span>", escape(e)),
                        None => String::new(),
                    },
                };
                page.push_str(&format!(
                    "<p>{} — {}{stars}</p>\n",
                    escape(r["reviewer"].as_str().unwrap_or("")),
                    escape(r["text"].as_str().unwrap_or(""))
                ));
            }
            page.push_str("</div>\n");
        }
        Ok(a) => page.push_str(&format!(
            "<div id=\"reviews\"><p>Error fetching product reviews ({})</p></div>\n",
            a.status
        )),
        Err(_) => page.push_str(
            "<div id=\"reviews\"><p>Sorry, product reviews are currently unavailable for this book.</p></div>\n",
        ),
    }
    page.push_str("</body></html>\n");
    (
        StatusCode::OK,
        [("x-served-by", ctx.served_by.clone())],
        Html(page),
    )
        .into_response()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

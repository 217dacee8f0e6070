//! The shape of every error answer: an RFC 9457 problem document with a code of API.md, also for
//! the answers no handler makes (a path segment that does not decode, a body over the limit, a
//! method the path does not take, an unknown path, a request timeout, a gateway still recovering).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{Request, StatusCode};
use axum::response::Response;
use serde_json::Value;
use surge_gateway::testing::{TestApp, WEBHOOK_SECRET};
use surge_gateway::{AppState, Config};
use tower::ServiceExt as _;

/// A request body that never arrives: only a timeout ends a request that waits for it.
struct NeverBody;

impl hyper::body::Body for NeverBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        Poll::Pending
    }
}

/// Checks that `response` is a problem document with `status` and `code`, and returns it with
/// the response's headers.
async fn problem(
    response: Response,
    status: StatusCode,
    code: &str,
) -> (Value, axum::http::HeaderMap) {
    let headers = response.headers().clone();
    assert_eq!(response.status(), status);
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    assert_eq!(
        headers.get("content-type").and_then(|value| value.to_str().ok()),
        Some("application/problem+json"),
        "{status} {code}: {text}"
    );
    let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {text}"));
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status.as_u16(), "{body}");
    assert!(body["type"].as_str().unwrap().ends_with(code), "{body}");
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    (body, headers)
}

async fn send(router: &axum::Router, request: Request<Body>) -> Response {
    router.clone().oneshot(request).await.unwrap()
}

fn get(path: &str, token: Option<&str>) -> Request<Body> {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

#[tokio::test]
async fn every_error_answer_is_a_problem_document() {
    let config = Config { request_timeout: Duration::from_millis(200), ..TestApp::config() };
    let app = TestApp::start(config).await;
    let (_, buyer) = app.user("buyer").await;
    let router = &app.router;

    // A path segment that is not UTF-8 once decoded: malformed input, naming the parameter.
    let response = send(router, get("/v1/orders/%FF", Some(&buyer))).await;
    let (body, _) = problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert!(body["detail"].as_str().unwrap().starts_with("id:"), "{body}");
    let response = send(router, get("/v1/products/%C3%28", None)).await;
    problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;

    // A query string that is not UTF-8 once decoded, on every route that reads one.
    for path in [
        "/v1/search?q=laptop%FF",
        "/v1/suggest?q=lap%FF",
        "/v1/orders?status=%FF",
        "/v1/serviceability?sku=A&postal_code=1%FF",
    ] {
        let response = send(router, get(path, Some(&buyer))).await;
        let (body, _) =
            problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        assert!(body["detail"].as_str().unwrap().contains("not valid UTF-8"), "{path}: {body}");
    }

    // A body over the limit, also on the webhook route, which reads raw bytes.
    let oversized = format!("{{\"id\": \"{}\"}}", "x".repeat(100_000));
    let signature = surge_gateway::payments::sign(
        WEBHOOK_SECRET,
        surge_gateway::auth::unix_now(),
        oversized.as_bytes(),
    );
    let request = Request::post("/v1/payments/webhook")
        .header("content-type", "application/json")
        .header("surge-signature", signature)
        .body(Body::from(oversized.clone()))
        .unwrap();
    problem(send(router, request).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    let request = Request::patch("/v1/me")
        .header("authorization", format!("Bearer {buyer}"))
        .header("content-type", "application/json")
        .body(Body::from(oversized))
        .unwrap();
    problem(send(router, request).await, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // A method the path does not take: `405` keeps its `Allow` header.
    let request = Request::delete("/v1/users").body(Body::empty()).unwrap();
    let (_, headers) =
        problem(send(router, request).await, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            .await;
    assert_eq!(headers.get("allow").unwrap(), "POST");
    let request = Request::put("/v1/me").body(Body::empty()).unwrap();
    let (_, headers) =
        problem(send(router, request).await, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            .await;
    let allow = headers.get("allow").unwrap().to_str().unwrap();
    assert!(allow.contains("GET") && allow.contains("PATCH"), "{allow}");

    // An unknown path.
    problem(send(router, get("/v1/nowhere", None)).await, StatusCode::NOT_FOUND, "not_found").await;

    // A request that outlives the timeout (its body never arrives): `503` with `Retry-After`.
    let request = Request::post("/v1/users")
        .header("content-type", "application/json")
        .body(Body::new(NeverBody))
        .unwrap();
    let (_, headers) =
        problem(send(router, request).await, StatusCode::SERVICE_UNAVAILABLE, "overloaded").await;
    assert_eq!(headers.get("retry-after").unwrap(), "1");
}

#[tokio::test]
async fn a_gateway_still_recovering_answers_problem_documents() {
    let router = surge_gateway::app(Arc::new(AppState::default()));
    assert_eq!(send(&router, get("/healthz", None)).await.status(), StatusCode::OK);
    for path in ["/readyz", "/metrics", "/v1/me", "/v1/search?q=x"] {
        let (_, headers) = problem(
            send(&router, get(path, None)).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
        )
        .await;
        assert!(headers.contains_key("retry-after"), "{path}");
    }
}

#[tokio::test]
async fn a_struct_is_a_json_object_never_an_array() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, buyer) = app.user("buyer").await;
    let (_, before) = app.call(axum::http::Method::GET, "/v1/me", Some(&buyer), None).await;
    // An array used to bind the profile's fields by position.
    let cases = [
        ("PATCH", "/v1/me", Some(buyer.as_str()), r#"["Evil", "999", "addr"]"#, "body"),
        ("POST", "/v1/sessions", None, r#"["a@b.co", "password"]"#, "body"),
        ("POST", "/v1/users", None, r#"["a@b.co", "password", "A", "buyer"]"#, "body"),
        (
            "PUT",
            "/v1/warehouses/w1",
            Some(surge_gateway::testing::ADMIN_TOKEN),
            r#"{"name": "W", "postal_code": "10115", "serves": [["", 1]]}"#,
            "serves[0]",
        ),
    ];
    for (method, path, token, body, field) in cases {
        let mut request =
            Request::builder().method(method).uri(path).header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let response = send(&app.router, request.body(Body::from(body)).unwrap()).await;
        let (problem, _) =
            problem(response, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.starts_with(&format!("{field}: ")), "{method} {path}: {detail}");
        assert!(detail.contains("expected a JSON object"), "{method} {path}: {detail}");
    }
    let (_, after) = app.call(axum::http::Method::GET, "/v1/me", Some(&buyer), None).await;
    assert_eq!(before, after, "the profile did not change");
}

#[tokio::test]
async fn public_catalog_reads_are_limited_per_client_address() {
    let config =
        Config { reads_per_second_per_address: 1, reads_burst_per_address: 2, ..TestApp::config() };
    let app = TestApp::start(config).await;
    let get = |ip: [u8; 4], path: &str| {
        let mut request = Request::get(path).body(Body::empty()).unwrap();
        let peer = std::net::SocketAddr::from((ip, 40_000));
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        app.router.clone().oneshot(request)
    };
    let status = |response: Result<Response, _>| response.unwrap().status();
    assert_eq!(status(get([10, 0, 0, 1], "/v1/search?q=laptop").await), StatusCode::OK);
    assert_eq!(status(get([10, 0, 0, 1], "/v1/suggest?q=lap").await), StatusCode::OK);
    // The third read within the second, whichever route, is refused with a wait to retry after.
    let refused = get([10, 0, 0, 1], "/v1/categories").await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(status(get([10, 0, 0, 2], "/v1/categories").await), StatusCode::OK);
}

#[tokio::test]
async fn a_bulk_upload_by_a_buyer_is_refused_before_its_body_is_read() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, buyer) = app.user("buyer").await;
    // A body that never arrives: only a handler that decides before reading it can answer.
    let request = Request::post("/v1/products/bulk")
        .header("content-type", "application/x-ndjson")
        .header("authorization", format!("Bearer {buyer}"))
        .body(Body::new(NeverBody))
        .unwrap();
    let answered =
        tokio::time::timeout(Duration::from_secs(20), app.router.clone().oneshot(request))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
    problem(answered, StatusCode::FORBIDDEN, "forbidden").await;
}

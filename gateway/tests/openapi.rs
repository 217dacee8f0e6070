//! `/openapi.json` lists exactly the routes that answer.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use surge_gateway::openapi::OPERATIONS;
use surge_gateway::testing::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_is_routed() {
    let app = TestApp::start(TestApp::config()).await;
    let (status, document) = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    for (method, path, _, _) in OPERATIONS {
        assert!(document["paths"][path][method].is_object(), "{method} {path} missing");
        let concrete = path.replace("{id}", "x1").replace("{sku}", "NOSKU");
        let request = Request::builder()
            .method(Method::from_bytes(method.to_uppercase().as_bytes()).unwrap())
            .uri(&concrete)
            .body(Body::empty())
            .unwrap();
        let (status, body) = app.send(request).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path} is not routed");
        assert_ne!(body["detail"], "no such route", "{method} {path} is not routed");
    }
    let (status, body) = app.call(Method::GET, "/v1/nothing-here", None, None).await;
    assert_eq!((status, body["detail"].as_str()), (StatusCode::NOT_FOUND, Some("no such route")));
}

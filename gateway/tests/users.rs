//! Users, sessions, the profile, admin tokens, and the error shapes every route shares.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::json;
use surge_gateway::testing::{TestApp, ADMIN_TOKEN};
use surge_gateway::Config;

#[tokio::test]
async fn sign_up_sign_in_and_profile() {
    let app = TestApp::start(TestApp::config()).await;
    let new = json!({"email": "Ann@Example.com", "password": "correct horse", "name": "Ann", "role": "buyer"});
    let (status, user) = app.call(Method::POST, "/v1/users", None, Some(new.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{user}");
    assert_eq!(user["email"], "ann@example.com");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
    let (status, body) = app.call(Method::POST, "/v1/users", None, Some(new)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::CONFLICT, Some("conflict")));

    let wrong = json!({"email": "ann@example.com", "password": "wrong horse"});
    let (status, body) = app.call(Method::POST, "/v1/sessions", None, Some(wrong)).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
    let right = json!({"email": "ann@example.com", "password": "correct horse"});
    let (status, session) = app.call(Method::POST, "/v1/sessions", None, Some(right)).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(session["user_id"], user["id"]);
    assert_eq!(session["role"], "buyer");
    let token = session["token"].as_str().unwrap();

    let change = json!({"postal_code": "10115", "address": "Main St 1"});
    let (status, me) = app.call(Method::PATCH, "/v1/me", Some(token), Some(change)).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!((me["postal_code"].as_str(), me["name"].as_str()), (Some("10115"), Some("Ann")));
    let (_, me) = app.call(Method::GET, "/v1/me", Some(token), None).await;
    assert_eq!(me["address"], "Main St 1");
}

#[tokio::test]
async fn a_profile_field_left_out_is_kept_and_null_clears_it() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, token) = app.user("buyer").await;
    let patch = |body| app.call(Method::PATCH, "/v1/me", Some(&token), Some(body));
    let (status, me) = patch(json!({"postal_code": "10115", "address": "Main St 1"})).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    let (_, me) = patch(json!({"name": "Ann"})).await;
    assert_eq!(
        (me["postal_code"].as_str(), me["address"].as_str()),
        (Some("10115"), Some("Main St 1"))
    );

    let (status, me) = patch(json!({"postal_code": null})).await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!((&me["postal_code"], me["address"].as_str()), (&json!(null), Some("Main St 1")));
    let (_, me) = app.call(Method::GET, "/v1/me", Some(&token), None).await;
    assert_eq!(me["postal_code"], json!(null), "{me}");
    assert!(me.as_object().unwrap().contains_key("postal_code"), "shown as null: {me}");
    let (_, me) = patch(json!({"address": null, "postal_code": "80331"})).await;
    assert_eq!((me["postal_code"].as_str(), &me["address"]), (Some("80331"), &json!(null)));

    for (body, field) in [
        (json!({"name": null}), "name"),
        (json!({"postal_code": ""}), "postal_code"),
        (json!({"postal_code": 10115}), "postal_code"),
    ] {
        let (status, problem) = patch(body).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert!(problem["detail"].as_str().unwrap().starts_with(field), "{problem}");
    }
    let (_, me) = app.call(Method::GET, "/v1/me", Some(&token), None).await;
    assert_eq!((me["name"].as_str(), me["postal_code"].as_str()), (Some("Ann"), Some("80331")));
}

#[tokio::test]
async fn bad_input_is_a_problem_document_naming_the_field() {
    let app = TestApp::start(TestApp::config()).await;
    let cases = [
        json!({"email": "a@b.co", "password": "12345678", "name": "A", "role": "buyer", "admin": true}),
        json!({"email": "a@b.co", "password": "12345678", "name": "A", "role": "admin"}),
        json!({"email": "a@b.co", "password": "short", "name": "A", "role": "buyer"}),
        json!({"email": "a@b.co", "password": 12345678, "name": "A", "role": "buyer"}),
        json!({"email": "a@b.co", "name": "A", "role": "buyer"}),
    ];
    let fields = ["admin", "role", "password", "password", "password"];
    for (body, field) in cases.into_iter().zip(fields) {
        let (status, problem) = app.call(Method::POST, "/v1/users", None, Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["code"], "validation_failed");
        assert_eq!(problem["status"], 422);
        assert!(problem["detail"].as_str().unwrap().contains(field), "{problem}");
    }
    let malformed =
        Request::post("/v1/users").header("content-type", "application/json").body(Body::from("{"));
    let (status, problem) = app.send(malformed.unwrap()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("validation_failed"))
    );
    let not_json =
        Request::post("/v1/users").header("content-type", "text/plain").body(Body::from("{}"));
    let (status, _) = app.send(not_json.unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let huge = format!("{{\"email\": \"{}\"}}", "a".repeat(200_000));
    let too_large = Request::post("/v1/users")
        .header("content-type", "application/json")
        .body(Body::from(huge));
    let (status, problem) = app.send(too_large.unwrap()).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
}

#[tokio::test]
async fn tokens_are_checked_and_roles_enforced() {
    let app = TestApp::start(TestApp::config()).await;
    let (status, _) = app.call(Method::GET, "/v1/me", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = app.call(Method::GET, "/v1/me", Some("forged.token"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, buyer) = app.user("buyer").await;
    let mut tampered = buyer.clone();
    tampered.insert(2, 'x');
    let (status, _) = app.call(Method::GET, "/v1/me", Some(&tampered), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) =
        app.call(Method::POST, "/v1/admin/tokens", Some(&buyer), Some(json!({"count": 1}))).await;
    assert_eq!((status, body["code"].as_str()), (StatusCode::FORBIDDEN, Some("forbidden")));
    let (status, body) = app
        .call(Method::POST, "/v1/admin/tokens", Some(ADMIN_TOKEN), Some(json!({"count": 3})))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["users"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let app = TestApp::start(TestApp::config()).await;
    let (_, buyer) = app.user("buyer").await;
    let me = |authorization: String| {
        let request = Request::get("/v1/me").header("authorization", authorization);
        app.send(request.body(Body::empty()).unwrap())
    };
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let (status, body) = me(format!("{scheme} {buyer}")).await;
        assert_eq!(status, StatusCode::OK, "{scheme}: {body}");
    }
    let (status, _) = me(format!("Bearer   {buyer}")).await;
    assert_eq!(status, StatusCode::OK, "spaces before the token");
    for authorization in [format!("Basic {buyer}"), format!("Bearer{buyer}"), buyer.clone()] {
        let (status, body) = me(authorization).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn the_per_user_rate_limit_answers_429_with_retry_after() {
    let config = Config { rate_per_second: 1, rate_burst: 3, ..TestApp::config() };
    let app = TestApp::start(config).await;
    let (_, buyer) = app.user("buyer").await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let request = Request::get("/v1/me").header("authorization", format!("Bearer {buyer}"));
        let response =
            tower::ServiceExt::oneshot(app.router.clone(), request.body(Body::empty()).unwrap())
                .await
                .unwrap();
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
        }
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let (_, other) = app.user("buyer").await;
    let (status, _) = app.call(Method::GET, "/v1/me", Some(&other), None).await;
    assert_eq!(status, StatusCode::OK, "the limit is per user");
}

#[tokio::test]
async fn sign_ins_are_limited_per_email_whoever_sends_them() {
    let config =
        Config { sign_in_per_minute_per_email: 1, sign_in_burst_per_email: 3, ..TestApp::config() };
    let app = TestApp::start(config).await;
    let new = json!({"email": "bo@example.com", "password": "correct horse", "name": "Bo", "role": "buyer"});
    let (status, _) = app.call(Method::POST, "/v1/users", None, Some(new)).await;
    assert_eq!(status, StatusCode::CREATED);
    let wrong = json!({"email": "bo@example.com", "password": "wrong horse"});
    for _ in 0..3 {
        let (status, _) = app.call(Method::POST, "/v1/sessions", None, Some(wrong.clone())).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The fourth within the minute is refused before any hashing, even with the right password
    // and the email spelt differently.
    let right = json!({"email": " BO@example.com", "password": "correct horse"});
    let (status, body) = app.call(Method::POST, "/v1/sessions", None, Some(right)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited"))
    );
    // Another email is not affected; an unknown one answers like a wrong password.
    let unknown = json!({"email": "nobody@example.com", "password": "correct horse"});
    let (status, body) = app.call(Method::POST, "/v1/sessions", None, Some(unknown)).await;
    assert_eq!(
        (status, body["detail"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("wrong email or password"))
    );
}

#[tokio::test]
async fn sign_ups_and_sign_ins_are_limited_per_client_address() {
    let config = Config {
        sign_in_per_minute_per_address: 1,
        sign_in_burst_per_address: 2,
        ..TestApp::config()
    };
    let app = TestApp::start(config).await;
    let from = |ip: [u8; 4], path: &str, body: serde_json::Value| {
        let mut request = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let peer = std::net::SocketAddr::from((ip, 40_000));
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        let router = app.router.clone();
        async move { tower::ServiceExt::oneshot(router, request).await.unwrap() }
    };
    let user = |n: u32| json!({"email": format!("u{n}@example.com"), "password": "correct horse", "name": "U", "role": "buyer"});
    let sign_in = json!({"email": "u1@example.com", "password": "correct horse"});
    assert_eq!(from([10, 0, 0, 1], "/v1/users", user(1)).await.status(), StatusCode::CREATED);
    assert_eq!(from([10, 0, 0, 1], "/v1/sessions", sign_in.clone()).await.status(), StatusCode::OK);
    // The third from that address within the minute, sign-up or sign-in, is refused.
    let refused = from([10, 0, 0, 1], "/v1/users", user(2)).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        from([10, 0, 0, 1], "/v1/sessions", sign_in.clone()).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another address still gets through.
    assert_eq!(from([10, 0, 0, 2], "/v1/sessions", sign_in).await.status(), StatusCode::OK);
}

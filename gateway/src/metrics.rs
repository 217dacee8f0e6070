//! Request counts and latency histograms per route, for `/metrics`.
//!
//! Routes are labelled by their matched pattern (`/v1/orders/{id}`), never the raw path, so label
//! cardinality is bounded by the router.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::AppState;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

#[derive(Debug, Default)]
struct RouteStats {
    by_status: BTreeMap<u16, u64>,
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_seconds: f64,
}

#[derive(Debug, Default)]
pub struct HttpMetrics {
    routes: Mutex<BTreeMap<(String, String), RouteStats>>,
    pub shed_total: std::sync::atomic::AtomicU64,
}

impl HttpMetrics {
    fn record(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let mut routes = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stats = routes.entry((method.to_owned(), route.to_owned())).or_default();
        *stats.by_status.entry(status).or_default() += 1;
        stats.count += 1;
        stats.sum_seconds += seconds;
        for (bucket, bound) in stats.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        if status == 503 {
            self.shed_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn render(&self, out: &mut String) {
        let routes = self.routes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        out.push_str("# HELP surge_http_requests_total requests answered, by route and status\n");
        out.push_str("# TYPE surge_http_requests_total counter\n");
        for ((method, route), stats) in routes.iter() {
            for (status, count) in &stats.by_status {
                let _ = writeln!(
                    out,
                    "surge_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {count}"
                );
            }
        }
        out.push_str("# HELP surge_http_request_seconds request latency, by route\n");
        out.push_str("# TYPE surge_http_request_seconds histogram\n");
        for ((method, route), stats) in routes.iter() {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            for (bucket, bound) in stats.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(
                    out,
                    "surge_http_request_seconds_bucket{{{labels},le=\"{bound}\"}} {bucket}"
                );
            }
            let _ = writeln!(
                out,
                "surge_http_request_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                stats.count
            );
            let _ =
                writeln!(out, "surge_http_request_seconds_sum{{{labels}}} {}", stats.sum_seconds);
            let _ = writeln!(out, "surge_http_request_seconds_count{{{labels}}} {}", stats.count);
        }
        let shed = self.shed_total.load(std::sync::atomic::Ordering::Relaxed);
        crate::ops::counter(
            out,
            "surge_http_shed_total",
            "requests answered 503 (load shed)",
            shed,
        );
    }
}

/// Middleware: times every request and records it under its matched route.
pub async fn track(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.record(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

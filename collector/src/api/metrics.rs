//! `GET /metrics`: Prometheus text exposition of what the collector did since it started.
//!
//! Open when `metrics_open = true` in the configuration (for a scraper on a trusted network);
//! otherwise it needs an admin token of any role, like `/api/v1`.
//!
//! Counted by [`count_responses`], a middleware around every route: responses by status, and
//! refusals by their stable error code (an [`ApiError`] tags its response with the code). The
//! ingest handler counts reports stored and repeated; the writer counts commits.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ErrorCodeTag;

#[derive(Debug, Default)]
pub struct Metrics {
    /// Responses by status code.
    responses: Mutex<BTreeMap<u16, u64>>,
    /// Error responses by code.
    errors: Mutex<BTreeMap<&'static str, u64>>,
    pub reports_stored: AtomicU64,
    pub reports_repeated: AtomicU64,
    pub enrollments: AtomicU64,
}

impl Metrics {
    fn count_response(&self, status: u16, code: Option<&'static str>) {
        *self
            .responses
            .lock()
            .expect("metrics lock")
            .entry(status)
            .or_default() += 1;
        if let Some(code) = code {
            *self
                .errors
                .lock()
                .expect("metrics lock")
                .entry(code)
                .or_default() += 1;
        }
    }

    /// The exposition text; `commits` is the store's count of write transactions.
    pub fn render(&self, commits: u64) -> String {
        let mut out = String::new();
        fn family(out: &mut String, name: &str, kind: &str, help: &str) {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        }
        family(
            &mut out,
            "census_build_info",
            "gauge",
            "The running census-collector version.",
        );
        let _ = writeln!(
            out,
            "census_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        family(
            &mut out,
            "census_http_responses_total",
            "counter",
            "HTTP responses by status code.",
        );
        for (status, n) in self.responses.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "census_http_responses_total{{status=\"{status}\"}} {n}"
            );
        }
        family(
            &mut out,
            "census_http_errors_total",
            "counter",
            "Error responses by their stable error code.",
        );
        for (code, n) in self.errors.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "census_http_errors_total{{code=\"{code}\"}} {n}");
        }
        for (name, help, value) in [
            (
                "census_reports_stored_total",
                "Reports stored (new).",
                &self.reports_stored,
            ),
            (
                "census_reports_repeated_total",
                "Reports acknowledged again because they were stored before.",
                &self.reports_repeated,
            ),
            (
                "census_enrollments_total",
                "Agents enrolled.",
                &self.enrollments,
            ),
        ] {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        family(
            &mut out,
            "census_store_commits_total",
            "counter",
            "Write transactions committed (a group of requests counts once).",
        );
        let _ = writeln!(out, "census_store_commits_total {commits}");
        out
    }
}

/// Middleware around every route: counts each response by status and error code.
pub async fn count_responses(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let response = next.run(request).await;
    let code = response.extensions().get::<ErrorCodeTag>().map(|tag| tag.0);
    state
        .metrics
        .count_response(response.status().as_u16(), code);
    response
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    summary = "Prometheus text exposition; needs an admin token unless `metrics_open`.",
    responses(
        (status = 200, description = "Counters since start, Prometheus text format 0.0.4.",
            body = String, content_type = "text/plain"),
    ),
    security(("admin_token" = [])),
)]
pub async fn get(State(state): State<AppState>) -> Response {
    let mut response = state.metrics.render(state.store.commits()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let metrics = Metrics::default();
        metrics.count_response(200, None);
        metrics.count_response(200, None);
        metrics.count_response(401, Some("token_invalid"));
        metrics.reports_stored.fetch_add(3, Ordering::Relaxed);
        let text = metrics.render(7);
        for line in [
            "census_http_responses_total{status=\"200\"} 2",
            "census_http_responses_total{status=\"401\"} 1",
            "census_http_errors_total{code=\"token_invalid\"} 1",
            "census_reports_stored_total 3",
            "census_reports_repeated_total 0",
            "census_store_commits_total 7",
            "# TYPE census_enrollments_total counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing in:\n{text}"
            );
        }
    }
}

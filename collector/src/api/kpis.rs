//! `GET /api/v1/kpis?from=&to=` (viewer): incident figures over a time range, read in one
//! transaction: open incidents by priority (now, whatever the range), incidents opened and
//! resolved in the range, MTTA and MTTR, service-level compliance, and the CIs and rules with
//! the most incidents. The range is `[from, to)`, RFC 3339; `to` defaults to now and `from` to
//! 30 days before `to`; it must be non-empty and at most 366 days long. How each figure is
//! computed is in the schema of [`Kpis`] and in `store::incident_ops`.

use axum::Json;
use axum::extract::State;
use axum::http::Uri;
use census_common::ErrorBody;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime, UtcOffset};

use super::cis::parse_time;
use super::{ApiError, AppState, query_params};
use crate::store::Kpis;

/// The range when `from` is not given.
const DEFAULT_RANGE: Duration = Duration::days(30);
/// The longest range.
const MAX_RANGE: Duration = Duration::days(366);

/// Incident KPIs over a time range.
#[utoipa::path(
    get,
    path = "/api/v1/kpis",
    operation_id = "get_kpis",
    tag = "incidents",
    params(
        ("from" = Option<String>, Query, format = DateTime,
            description = "Start of the range (inclusive); default 30 days before `to`."),
        ("to" = Option<String>, Query, format = DateTime,
            description = "End of the range (exclusive); default now."),
    ),
    responses(
        (status = 200, description = "The figures. `opened`, MTTA, MTTR, the SLA percentages \
            and the top lists are over the incidents opened in the range; `resolved` counts \
            the resolutions in the range; `open_by_priority` is now.", body = Kpis),
        (status = 400, body = ErrorBody, description = "`invalid_filter`: an unknown \
            parameter, a time that is not RFC 3339, `from` not before `to`, or a range longer \
            than 366 days."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn get(State(state): State<AppState>, uri: Uri) -> Result<Json<Kpis>, ApiError> {
    let params = query_params(&uri, &["from", "to"])?;
    let now = state.clock.now();
    let utc = |t: OffsetDateTime| t.to_offset(UtcOffset::UTC);
    let to = utc(parse_time("to", params.get("to"))?.unwrap_or(now));
    let from = parse_time("from", params.get("from"))?.map_or(to - DEFAULT_RANGE, utc);
    if from >= to {
        return Err(ApiError::invalid_filter(
            "from must be before to (the range is from inclusive to exclusive)",
        ));
    }
    if to - from > MAX_RANGE {
        return Err(ApiError::invalid_filter(format!(
            "the range from {} to {} is longer than 366 days; ask for a shorter one",
            from.format(&Rfc3339).unwrap_or_default(),
            to.format(&Rfc3339).unwrap_or_default(),
        )));
    }
    Ok(Json(state.store.kpis(from, to, now).await?))
}

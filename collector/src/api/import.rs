//! `POST /api/v1/import`: an inventory JSON document, as `census-agent inventory` writes it,
//! applied through the same path as an agent's inventory (identification, the CI, its parts,
//! software and history). The way to inventory a machine that cannot run an agent: run
//! `census-agent inventory > host.json` on it once (or write the document by hand) and post it.
//!
//! **Promises:** the document passes the same checks as an agent's report before anything is
//! stored (media type, optional `gzip`/`zstd` within `max_body_bytes`, nesting depth, schema,
//! the batch limits on strings, lists and `collected_at`); a refused document changes nothing.
//! The answer `{ ci_id, created, identified_by }` is sent after the change is durable: `201`
//! with a `Location` when the import created the CI, `200` when it updated one. History rows
//! name the source `import:<token name>`. `agent_id` is any stable id for the machine (the
//! agent's when it comes from `census-agent inventory`; a UUID generated once otherwise): it is
//! one of the identity keys. When the CI is also reported by an agent, that agent is asked for
//! its own inventory on its next batch, so the agent's view wins again.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use census_common::codec::Format;
use census_common::{
    Batch, ErrorBody, ErrorCode, INVENTORY_SCHEMA, Inventory, PROTOCOL_VERSION, Report, ReportBody,
    limits, shape,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::AdminPrincipal;
use super::ingest::{decompress, encoding_of, format_of, limit_error, too_large};
use super::{ApiError, AppState};
use crate::store::Source;

/// What an import did.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ImportResult)]
pub struct ImportView {
    /// The computer CI the inventory describes.
    pub ci_id: i64,
    /// Whether the import created the CI (no identification rule matched).
    pub created: bool,
    /// The identification rule that matched (`serial_uuid`, `hardware_uuid`, `machine_id`,
    /// `agent_id`, `mac_hostname`, `hostname`), or `new` when the CI was created.
    pub identified_by: String,
}

#[utoipa::path(
    post,
    path = "/api/v1/import",
    operation_id = "import_inventory",
    tag = "cis",
    summary = "Import an inventory document (from `census-agent inventory`).",
    request_body(
        description = "An inventory document, schema 1, as `census-agent inventory` writes it; \
            `application/json`, optionally `Content-Encoding: gzip` or `zstd`, at most \
            `max_body_bytes` as sent and decompressed.",
        content((Inventory = "application/json")),
    ),
    responses(
        (status = 201, description = "The inventory created a new computer CI.",
            body = ImportView,
            headers(("Location" = String, description = "`/api/v1/cis/{ci_id}`"))),
        (status = 200, description = "The inventory updated the computer CI it identified.",
            body = ImportView),
        (status = 400, body = ErrorBody, description = "`invalid_body`: not an inventory \
            document (the message names the field); `unsupported_protocol`: an inventory \
            schema this build does not read; `nesting_too_deep`."),
        (status = 413, body = ErrorBody, description = "`payload_too_large`, `field_too_long`, \
            `too_many_items`."),
        (status = 415, body = ErrorBody, description = "`unsupported_media_type`: not JSON; \
            `unsupported_encoding`."),
        (status = 422, body = ErrorBody, description = "`value_out_of_range`: a number or time \
            out of range (e.g. `collected_at` far in the future)."),
        (status = 500, body = ErrorBody, description = "`internal`."),
        (status = 503, body = ErrorBody, description = "`unavailable`: shutting down."),
    ),
    security(("admin_token" = [])),
)]
pub async fn post_import(
    State(state): State<AppState>,
    Extension(principal): Extension<AdminPrincipal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let limit = state.max_body_bytes;
    if format_of(&headers)? != Format::Json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::UnsupportedMediaType,
            "send the inventory as application/json, as `census-agent inventory` writes it",
        ));
    }
    let encoding = encoding_of(&headers)?;
    let body = body.map_err(|rejection| match rejection {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            too_large(limit)
        }
        other => ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("could not read the request body: {other}"),
        ),
    })?;
    let checks = state.limits;
    let inventory = tokio::task::spawn_blocking(move || -> Result<Inventory, ApiError> {
        let plain = decompress(&body, encoding, limit)?;
        shape::check_json_depth(&plain, checks.max_nesting_depth).map_err(limit_error)?;
        serde_json::from_slice(&plain).map_err(|e| {
            ApiError::bad_request(
                ErrorCode::InvalidBody,
                format!("the body is not an inventory document: {e}"),
            )
        })
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "import decoding task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; the collector log has the details",
        )
    })??;
    if inventory.schema != INVENTORY_SCHEMA {
        return Err(ApiError::bad_request(
            ErrorCode::UnsupportedProtocol,
            format!(
                "inventory schema {} is not supported (this build reads schema {INVENTORY_SCHEMA})",
                inventory.schema
            ),
        ));
    }
    if inventory.agent_id.trim().is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "agent_id is empty; give the machine a stable id (a UUID generated once)",
        ));
    }
    let received_at = state.clock.now();
    // The same bounds as an agent's batch of one inventory.
    let batch = Batch {
        protocol: PROTOCOL_VERSION,
        agent_id: inventory.agent_id.clone(),
        reports: vec![Report {
            seq: 1,
            body: ReportBody::Inventory(inventory),
        }],
    };
    limits::check_batch(&batch, &state.limits, received_at).map_err(limit_error)?;
    let Some(Report {
        body: ReportBody::Inventory(inventory),
        ..
    }) = batch.reports.into_iter().next()
    else {
        unreachable!("the batch was built with one inventory");
    };
    let outcome = state
        .store
        .import(inventory, Source::Import(principal.name), received_at)
        .await?;
    tracing::info!(ci_id = outcome.ci_id, created = outcome.created, identified_by = %outcome.identified_by, "inventory imported");
    let view = ImportView {
        ci_id: outcome.ci_id,
        created: outcome.created,
        identified_by: outcome.identified_by,
    };
    if view.created {
        let location = HeaderValue::from_str(&format!("/api/v1/cis/{}", view.ci_id))
            .expect("a path of ASCII digits is a header value");
        Ok((
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            Json(view),
        )
            .into_response())
    } else {
        Ok(Json(view).into_response())
    }
}

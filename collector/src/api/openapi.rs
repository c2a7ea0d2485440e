//! The OpenAPI 3.1 document of every route, served at `GET /api/v1/openapi.json` to any admin
//! token, like every `/api/v1` route.
//!
//! **Promise:** the document is generated from the code: each handler carries its own
//! `#[utoipa::path]` (parameters, answers, error statuses) next to the code that parses its
//! query, and each response schema is derived from the view struct the handler serialises, so a
//! renamed or added field changes the document in the same commit. `collector/tests/openapi.rs`
//! checks that every route `router()` serves is in the document and that real answers validate
//! against it; `.ci/schemathesis.sh` fuzzes the running collector against it.
//!
//! Written here by hand rather than next to a handler: the two security schemes, and the
//! answers of the token check (401, 403, 429), which a layer in front of the handlers gives, so
//! they are added to every operation that needs a token.

use std::sync::OnceLock;

use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use census_common::ErrorBody;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

// Absolute paths, so that the module compiles wherever it is declared.
use crate::api::{
    ApiError, ci_admin, cis, enroll, history, import, incidents, ingest, kpis, maintenance,
    metrics, ops, query_params, relationships, rules, sbom, secrets, software, webhooks,
};

/// The security scheme of the admin API: `Authorization: Bearer <admin token>`.
pub const ADMIN_TOKEN: &str = "admin_token";
/// The security scheme of the agent's reports: `Authorization: Bearer <agent token>`.
pub const AGENT_TOKEN: &str = "agent_token";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Census collector",
        description = "The collector's admin API (JSON under `/api/v1`, `Authorization: Bearer \
            <admin token>`), the agent routes and the operational probes. Lists answer \
            `{ \"items\": [...], \"next_cursor\": ... }` and take `limit` and an opaque \
            `cursor`; unknown query parameters are refused. Every error answers \
            `{ \"error\": { \"code\": \"snake_case\", \"message\": \"...\" } }`; scripts branch \
            on `code`."
    ),
    paths(
        cis::list,
        cis::get,
        cis::software,
        cis::health,
        history::ci_history,
        history::changes,
        import::post_import,
        ci_admin::create,
        ci_admin::update,
        ci_admin::delete,
        ci_admin::impact,
        ci_admin::dependencies,
        relationships::create,
        relationships::list,
        relationships::get,
        relationships::update,
        relationships::delete,
        webhooks::create,
        webhooks::list,
        webhooks::get,
        webhooks::update,
        webhooks::delete,
        webhooks::deliveries,
        webhooks::retry,
        software::list,
        software::catalog,
        rules::list,
        rules::get,
        rules::create,
        rules::update,
        rules::delete,
        maintenance::list,
        maintenance::get,
        maintenance::create,
        maintenance::update,
        maintenance::delete,
        sbom::get,
        incidents::list,
        incidents::get,
        incidents::acknowledge,
        incidents::assign,
        incidents::notes,
        incidents::resolve,
        incidents::close,
        incidents::reopen,
        incidents::set_priority,
        kpis::get,
        ingest::post_reports,
        enroll::post_enroll,
        secrets::list,
        metrics::get,
        ops::livez,
        ops::readyz,
        openapi,
    ),
    modifiers(&TokenCheck),
    tags(
        (name = "cis", description = "Configuration items and what belongs to them."),
        (name = "relationships", description = "Relationships between CIs: \"source type \
            target\", e.g. an application depends_on a database."),
        (name = "software", description = "The software catalog across the fleet."),
        (name = "rules", description = "Threshold rules the incident engine judges every \
            health sample by."),
        (name = "maintenance", description = "Maintenance windows: no incident opens for a CI \
            inside one."),
        (name = "incidents", description = "Incidents the engine opened from health samples \
            and silences, the work on them (acknowledge, assign, notes, resolve, close, reopen, \
            priority: operator role) and their KPIs."),
        (name = "webhooks", description = "Incident events posted to receivers, signed, from \
            a durable outbox; their deliveries and failures."),
        (name = "agent", description = "What agents call."),
        (name = "operations", description = "Probes, metrics, enrollment secrets and this document."),
    )
)]
struct ApiDoc;

/// The document, built anew.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as JSON.
pub fn openapi_json() -> String {
    document()
        .to_json()
        .expect("an OpenAPI document always serialises to JSON")
}

/// This document; any admin token.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses(
        (status = 200, description = "This document (OpenAPI 3.1).",
            body = serde_json::Value),
        (status = 400, body = ErrorBody,
            description = "`invalid_filter`: a query parameter (this route takes none)."),
    ),
    security(("admin_token" = [])),
)]
pub async fn openapi(uri: Uri) -> Result<Response, ApiError> {
    static JSON: OnceLock<String> = OnceLock::new();
    query_params(&uri, &[])?;
    let json = JSON.get_or_init(openapi_json).as_str();
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Declares the two bearer schemes and adds the token check's answers to every operation that
/// requires [`ADMIN_TOKEN`].
struct TokenCheck;

impl Modify for TokenCheck {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        for (name, description) in [
            (
                ADMIN_TOKEN,
                "An admin token from `census-collector token create --role \
                 viewer|operator|admin`.",
            ),
            (
                AGENT_TOKEN,
                "An agent's own token, from `POST /agent/v1/enroll`.",
            ),
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(description))
                        .build(),
                ),
            );
        }
        for item in doc.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if requires(operation, ADMIN_TOKEN) {
                    add_token_check_answers(operation);
                }
            }
        }
    }
}

fn requires(operation: &Operation, scheme: &str) -> bool {
    let Some(requirements) = &operation.security else {
        return false;
    };
    // A requirement serialises as `{ "scheme": [scopes] }`.
    requirements.iter().any(|r| {
        serde_json::to_value(r)
            .ok()
            .and_then(|v| v.as_object().map(|o| o.contains_key(scheme)))
            .unwrap_or(false)
    })
}

fn add_token_check_answers(operation: &mut Operation) {
    let error = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name(ErrorBody::name())))
            .build()
    };
    let answers = [
        (
            "401",
            "`token_invalid`: the admin token is missing, unknown or revoked.",
        ),
        (
            "403",
            "`forbidden`: the token is valid but its role may not do this.",
        ),
        (
            "429",
            "`rate_limited`: too many requests; `Retry-After` says when to try again.",
        ),
    ];
    for (status, description) in answers {
        let mut response = ResponseBuilder::new()
            .description(description)
            .content("application/json", error());
        if status == "429" {
            response = response.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(Some(u64::schema()))
                    .description(Some("Seconds to wait."))
                    .build(),
            );
        }
        operation
            .responses
            .responses
            .insert(status.to_owned(), RefOr::T(response.build()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_names_its_schemes() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for scheme in [ADMIN_TOKEN, AGENT_TOKEN] {
            assert_eq!(
                doc["components"]["securitySchemes"][scheme]["scheme"],
                "bearer"
            );
        }
    }

    #[test]
    fn a_health_sample_answered_has_every_field() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        let schemas = &doc["components"]["schemas"];
        for (view, wire) in [
            ("HealthSampleView", "HealthSample"),
            ("FilesystemUsageView", "FilesystemUsage"),
        ] {
            let properties: Vec<_> = schemas[wire]["properties"]
                .as_object()
                .unwrap()
                .keys()
                .collect();
            let required: Vec<_> = schemas[view]["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            assert_eq!(properties, required, "{view}");
        }
        assert_eq!(
            schemas["HealthSampleView"]["properties"]["filesystems"]["items"]["$ref"],
            "#/components/schemas/FilesystemUsageView"
        );
    }
}

//! The two parsers of untrusted input as fuzz entry points, shared by the cargo-fuzz targets
//! (`collector/fuzz`) and the bounded property tests CI runs (`collector/tests/fuzz`). Each
//! takes arbitrary bytes and panics only when the parser breaks its promise: an answer that is
//! neither a value nor a 4xx.

use axum::http::{StatusCode, Uri};
use census_common::Format;
use census_common::limits::{Limits, check_batch};

use super::cis::parse_ci_filter;
use super::ingest::{Encoding, decode_body};

/// The body limit the entry point decodes within.
pub const BODY_LIMIT: usize = 1 << 20;

/// The report decoder: the first byte selects the encoding (`% 3`: identity, gzip, zstd) and
/// the format (high bit: JSON, else MessagePack); the rest is the body.
pub fn report_decoder(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let encoding = match selector % 3 {
        0 => Encoding::Identity,
        1 => Encoding::Gzip,
        _ => Encoding::Zstd,
    };
    let format = if selector & 0x80 == 0 {
        Format::MessagePack
    } else {
        Format::Json
    };
    report_body(body, encoding, format);
}

/// The report decoder on a body of a known encoding and format.
pub fn report_body(body: &[u8], encoding: Encoding, format: Format) {
    let limits = Limits::default();
    match decode_body(body, encoding, format, BODY_LIMIT, &limits) {
        Ok(batch) => {
            let _ = check_batch(&batch, &limits, time::OffsetDateTime::now_utc());
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
}

/// The CI list's filter parser on a query string (bytes that are not UTF-8 or not a valid URI
/// never reach it): a filter or a 400.
pub fn ci_filter(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/api/v1/cis?{query}").parse::<Uri>() else {
        return;
    };
    if let Err(e) = parse_ci_filter(&uri) {
        assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{query:?}: {e:?}");
    }
}

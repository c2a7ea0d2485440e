//! The two parsers of untrusted input as fuzz entry points, shared by the cargo-fuzz targets
//! (`collector/fuzz`) and the bounded property tests CI runs (`collector/tests/fuzz`). Each
//! takes arbitrary bytes and panics only when the parser breaks its promise: an answer that is
//! neither a value nor a 4xx, or (for the CI filter) a filter that refuses its own cursor.

use axum::http::{StatusCode, Uri};
use census_common::Format;
use census_common::limits::{Limits, check_batch};

use super::cis::{next_cursor, parse_ci_filter};
use super::ingest::{Encoding, decode_body};
use crate::store::{CiPosition, SortKind, SortValue};

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
/// never reach it): a filter or a 400. A filter it accepts has its limit in range, and the
/// cursor the list would return for it (at a position made from the input) resumes exactly
/// there when sent back with the same query.
pub fn ci_filter(data: &[u8]) {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/api/v1/cis?{query}").parse::<Uri>() else {
        return;
    };
    let filter = match parse_ci_filter(&uri) {
        Ok(filter) => filter,
        Err(e) => {
            assert_eq!(e.status(), StatusCode::BAD_REQUEST, "{query:?}: {e:?}");
            return;
        }
    };
    assert!((1..=super::MAX_LIMIT).contains(&filter.limit), "{query:?}");
    if filter.after.is_some() {
        return;
    }
    let position = CiPosition {
        key: match filter.sort.key.kind() {
            SortKind::Integer => SortValue::Integer(data.len() as i64 - 3),
            SortKind::Text | SortKind::NullableText => SortValue::Text(query.to_owned()),
        },
        id: data.len() as i64,
    };
    let cursor = next_cursor(&filter, &position);
    let accepted = uri.query().unwrap_or_default();
    let separator = if accepted.is_empty() { "" } else { "&" };
    let resumed: Uri = format!("/api/v1/cis?{accepted}{separator}cursor={cursor}")
        .parse()
        .unwrap_or_else(|e| panic!("{query:?} with cursor {cursor:?}: {e}"));
    match parse_ci_filter(&resumed) {
        Ok(again) => assert_eq!(again.after, Some(position), "{query:?}"),
        Err(e) => panic!("{query:?}: its own cursor {cursor:?} is refused: {e:?}"),
    }
}

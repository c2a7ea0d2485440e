//! The CI list's filter parser on arbitrary query strings: a filter or a 400, never a panic.
#![no_main]

use census_collector::api::cis::parse_ci_filter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = format!("/api/v1/cis?{query}").parse::<axum::http::Uri>() else {
        return;
    };
    if let Err(e) = parse_ci_filter(&uri) {
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{e:?}");
    }
});

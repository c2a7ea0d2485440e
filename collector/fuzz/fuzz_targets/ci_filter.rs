//! The CI list's filter parser on arbitrary query strings (see
//! `census_collector::api::fuzz::ci_filter`): a filter or a 400, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| census_collector::api::fuzz::ci_filter(data));

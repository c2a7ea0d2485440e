//! The report decoder on arbitrary bytes (see `census_collector::api::fuzz::report_decoder`):
//! a batch or a 4xx, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| census_collector::api::fuzz::report_decoder(data));

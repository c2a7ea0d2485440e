//! The report decoder on arbitrary bytes: the first byte picks the encoding and the format,
//! the rest is the body. It must answer a batch or a 4xx, never panic, never allocate past the
//! limits.
#![no_main]

use census_collector::api::ingest::{Encoding, decode_body};
use census_common::Format;
use census_common::limits::{Limits, check_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
    let limits = Limits::default();
    match decode_body(body, encoding, format, 1 << 20, &limits) {
        Ok(batch) => {
            let _ = check_batch(&batch, &limits, time::OffsetDateTime::now_utc());
        }
        Err(e) => assert!(e.status().is_client_error(), "{e:?}"),
    }
});

//! Opaque list cursors. A cursor encodes the sort key of the last item of a page; clients pass
//! it back unchanged. The format (`k1.` then hex numbers joined by `.`) is not a contract and may
//! change with a new prefix.

use super::error::ApiError;
use census_common::ErrorCode;

const PREFIX: &str = "k1.";

pub fn encode(keys: &[i64]) -> String {
    let parts: Vec<String> = keys.iter().map(|k| format!("{k:x}")).collect();
    format!("{PREFIX}{}", parts.join("."))
}

/// Decodes a cursor of exactly `arity` non-negative keys.
pub fn decode(cursor: &str, arity: usize) -> Result<Vec<i64>, ApiError> {
    let invalid = || {
        ApiError::bad_request(
            ErrorCode::InvalidCursor,
            "cursor is not one this list returned; pass next_cursor unchanged or start without it",
        )
    };
    let body = cursor.strip_prefix(PREFIX).ok_or_else(invalid)?;
    let keys = body
        .split('.')
        .map(|part| {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            i64::from_str_radix(part, 16).map_err(|_| invalid())
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.len() != arity {
        return Err(invalid());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(decode(&encode(&[42]), 1).unwrap(), vec![42]);
        assert_eq!(
            decode(&encode(&[7, i64::MAX]), 2).unwrap(),
            vec![7, i64::MAX]
        );
    }

    #[test]
    fn garbage_is_rejected() {
        for bad in [
            "",
            "42",
            "k1.",
            "k1.zz",
            "k1.-1",
            "k1.1.2",
            "k2.1",
            "k1.+1",
            "k1.ffffffffffffffffff",
        ] {
            let err = decode(bad, 1).unwrap_err();
            assert_eq!(err.code(), "invalid_cursor", "{bad:?}");
        }
        assert!(decode(&encode(&[1]), 2).is_err());
    }
}

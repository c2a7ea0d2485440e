//! The shape of a body, checked on the raw bytes before a decoder sees them.
//!
//! **Promise:** [`check_msgpack`] and [`check_json_depth`] never panic, never recurse and
//! allocate nothing in proportion to a length the body declares: their only memory is one small
//! frame per open map or array, at most `max_nesting_depth` of them. A body they accept is
//! bounded the way the decoder needs: no deeper than `max_nesting_depth`, no string or binary
//! longer than `max_string_bytes`, no array or map with more entries than the longest list a
//! batch may hold, no more entries in all of them together than [`Limits::max_total_items`]
//! (so a small body cannot decode into many times its size), and no length that claims more bytes than the body has left (so a 20-byte
//! body cannot make the decoder reserve room for four billion entries).
//!
//! MessagePack gets the whole check. JSON gets the depth check only: its strings and lists
//! are bounded after decoding by [`crate::limits::check_batch`], since serde_json never trusts
//! a declared length (JSON has none).

use crate::limits::{LimitError, Limits};

/// How many bytes of a map key a message quotes.
const NAME_CHARS: usize = 64;

/// One open map or array.
struct Frame<'a> {
    /// Values still to read: entries of an array, keys plus values of a map.
    remaining: u64,
    map: bool,
    /// The map key that names the value being read (for an array: the key that named the
    /// array), for messages.
    name: &'a [u8],
}

enum Item {
    /// A value with this many bytes after its marker and length.
    Scalar(u64),
    /// A string, binary or extension of this many bytes.
    Bytes { len: u64, string: bool },
    /// An array or map of this many entries (a map entry is a key and a value).
    Container { len: u64, map: bool },
}

/// Checks that `bytes` is one MessagePack value within `limits`, without decoding it.
pub fn check_msgpack(bytes: &[u8], limits: &Limits) -> Result<(), LimitError> {
    let (max_items, items_key) = largest_list(limits);
    let max_total = limits.max_total_items() as u64;
    let mut total: u64 = 0;
    let mut stack = vec![Frame {
        remaining: 1,
        map: false,
        name: b"",
    }];
    let mut pos = 0usize;
    while let Some(frame) = stack.last_mut() {
        if frame.remaining == 0 {
            stack.pop();
            continue;
        }
        frame.remaining -= 1;
        // In a map, keys and values alternate and `remaining` counts both, so after the
        // decrement an odd count means a key is next.
        let is_key = frame.map && frame.remaining % 2 == 1;
        let name = frame.name;
        let depth = stack.len();
        let at = pos;
        let left = |pos: usize| (bytes.len() - pos) as u64;

        match item(bytes, &mut pos)? {
            Item::Scalar(len) => {
                if len > left(pos) {
                    return Err(truncated(at));
                }
                pos += len as usize;
            }
            Item::Bytes { len, string } => {
                if len > left(pos) {
                    return Err(truncated(at));
                }
                if len > limits.max_string_bytes as u64 {
                    let field = if is_key {
                        format!("a map key at byte {at}")
                    } else if name.is_empty() {
                        let what = if string { "a string" } else { "a binary" };
                        format!("{what} at byte {at}")
                    } else {
                        format!("`{}` at byte {at}", quote(name))
                    };
                    return Err(LimitError::FieldTooLong {
                        field,
                        len,
                        max: limits.max_string_bytes,
                    });
                }
                let value = &bytes[pos..pos + len as usize];
                pos += len as usize;
                if is_key && let Some(parent) = stack.last_mut() {
                    parent.name = value;
                }
            }
            Item::Container { len, map } => {
                // Every entry takes at least one byte, so a count above what is left is a lie.
                let values = if map { len.saturating_mul(2) } else { len };
                if values > left(pos) {
                    return Err(truncated(at));
                }
                if len > max_items as u64 {
                    let list = if name.is_empty() {
                        format!("the {} at byte {at}", if map { "map" } else { "array" })
                    } else {
                        format!("`{}` at byte {at}", quote(name))
                    };
                    return Err(LimitError::TooManyItems {
                        list,
                        len,
                        max: max_items,
                        key: items_key,
                    });
                }
                total = total.saturating_add(len);
                if total > max_total {
                    return Err(LimitError::TooManyItems {
                        list: format!("the lists of the batch together (at byte {at})"),
                        len: total,
                        max: max_total as usize,
                        key: "max_software_entries",
                    });
                }
                if depth > limits.max_nesting_depth {
                    return Err(LimitError::TooDeep {
                        at,
                        depth,
                        max: limits.max_nesting_depth,
                    });
                }
                if values > 0 {
                    stack.push(Frame {
                        remaining: values,
                        map,
                        name,
                    });
                }
            }
        }
    }
    if pos != bytes.len() {
        return Err(LimitError::Malformed {
            at: pos,
            reason: "more bytes after the end of the batch",
        });
    }
    Ok(())
}

/// Checks that JSON `bytes` nest arrays and objects no deeper than `max_depth`, counting
/// brackets outside strings. Anything else wrong with the JSON is left to the decoder.
pub fn check_json_depth(bytes: &[u8], max_depth: usize) -> Result<(), LimitError> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    // Multi-byte UTF-8 sequences never contain ASCII bytes, so a byte-wise scan is exact.
    for (at, &byte) in bytes.iter().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(LimitError::TooDeep {
                        at,
                        depth,
                        max: max_depth,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// The largest list limit, which bounds every array and map, and the key that sets it.
fn largest_list(limits: &Limits) -> (usize, &'static str) {
    [
        (limits.max_software_entries, "max_software_entries"),
        (limits.max_reports_per_batch, "max_reports_per_batch"),
        (limits.max_parts, "max_parts"),
    ]
    .into_iter()
    .max_by_key(|(max, _)| *max)
    .expect("three limits")
}

fn truncated(at: usize) -> LimitError {
    LimitError::Malformed {
        at,
        reason: "a length that runs past the end of the body",
    }
}

/// Reads one marker and its length field at `pos`, leaving `pos` at the value's content.
fn item(bytes: &[u8], pos: &mut usize) -> Result<Item, LimitError> {
    let at = *pos;
    let marker = *bytes.get(at).ok_or_else(|| truncated(at))?;
    *pos += 1;
    let mut length = |width: usize| -> Result<u64, LimitError> {
        let field = bytes.get(*pos..*pos + width).ok_or_else(|| truncated(at))?;
        *pos += width;
        Ok(field.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)))
    };
    Ok(match marker {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Item::Scalar(0),
        0x80..=0x8f => Item::Container {
            len: u64::from(marker & 0x0f),
            map: true,
        },
        0x90..=0x9f => Item::Container {
            len: u64::from(marker & 0x0f),
            map: false,
        },
        0xa0..=0xbf => Item::Bytes {
            len: u64::from(marker & 0x1f),
            string: true,
        },
        0xc1 => {
            return Err(LimitError::Malformed {
                at,
                reason: "the reserved marker 0xc1",
            });
        }
        0xc4..=0xc6 => Item::Bytes {
            len: length(1 << (marker - 0xc4))?,
            string: false,
        },
        // An extension: a length, a type byte, then the data.
        0xc7..=0xc9 => Item::Bytes {
            len: length(1 << (marker - 0xc7))?.saturating_add(1),
            string: false,
        },
        0xca | 0xce | 0xd2 => Item::Scalar(4),
        0xcb | 0xcf | 0xd3 => Item::Scalar(8),
        0xcc | 0xd0 => Item::Scalar(1),
        0xcd | 0xd1 => Item::Scalar(2),
        // fixext 1, 2, 4, 8, 16: a type byte and that many bytes of data.
        0xd4..=0xd8 => Item::Scalar(1 + (1 << (marker - 0xd4))),
        0xd9..=0xdb => Item::Bytes {
            len: length(1 << (marker - 0xd9))?,
            string: true,
        },
        0xdc | 0xdd => Item::Container {
            len: length(if marker == 0xdc { 2 } else { 4 })?,
            map: false,
        },
        0xde | 0xdf => Item::Container {
            len: length(if marker == 0xde { 2 } else { 4 })?,
            map: true,
        },
    })
}

fn quote(name: &[u8]) -> String {
    String::from_utf8_lossy(name)
        .chars()
        .take(NAME_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn check(bytes: &[u8]) -> Result<(), LimitError> {
        check_msgpack(bytes, &Limits::default())
    }

    #[test]
    fn scalars_strings_and_containers_pass() {
        // {"a": [1, -1, 0.5, nil, true, "xy", bin[2], fixext1]}
        let bytes = [
            0x81, 0xa1, b'a', 0x98, 0x01, 0xff, 0xcb, 0, 0, 0, 0, 0, 0, 0xe0, 0x3f, 0xc0, 0xc3,
            0xa2, b'x', b'y', 0xc4, 2, 9, 9, 0xd4, 1, 7,
        ];
        check(&bytes).unwrap();
        check(&[0x90]).unwrap();
        check(&[0x80]).unwrap();
    }

    #[test]
    fn lying_lengths_are_truncated_bodies() {
        for bytes in [
            &[][..],
            // array32 claiming four billion entries in a 5-byte body.
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            // map16 of 3 entries with 2 bytes left.
            &[0xde, 0x00, 0x03, 0xc0, 0xc0],
            // str32 of 4 GiB.
            &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
            // A float64 cut short, a length field cut short.
            &[0xcb, 0, 0],
            &[0xda, 0x01],
            // An array missing its last entry.
            &[0x92, 0x01],
        ] {
            let err = check(bytes).unwrap_err();
            assert_eq!(err.code(), ErrorCode::InvalidBody, "{bytes:x?}: {err}");
        }
        let err = check(&[0x91, 0x01, 0x02]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the body is not valid MessagePack: more bytes after the end of the batch at byte 2"
        );
        assert!(check(&[0xc1]).unwrap_err().to_string().contains("0xc1"));
    }

    #[test]
    fn depth_is_bounded() {
        let limits = Limits {
            max_nesting_depth: 3,
            ..Limits::default()
        };
        check_msgpack(&[0x91, 0x91, 0x90], &limits).unwrap();
        let err = check_msgpack(&[0x91, 0x91, 0x91, 0x90], &limits).unwrap_err();
        assert_eq!(
            err,
            LimitError::TooDeep {
                at: 3,
                depth: 4,
                max: 3
            }
        );
        assert_eq!(err.code(), ErrorCode::NestingTooDeep);
        assert!(err.to_string().contains("max_nesting_depth = 3"), "{err}");
        // A million nested arrays: no recursion, and refused at the limit.
        let deep = vec![0x91u8; 1 << 20];
        assert_eq!(check(&deep).unwrap_err().code(), ErrorCode::NestingTooDeep);
    }

    #[test]
    fn long_strings_name_the_key() {
        let limits = Limits {
            max_string_bytes: 4,
            ..Limits::default()
        };
        // {"name": "abcde"}
        let err = check_msgpack(b"\x81\xa4name\xa5abcde", &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`name` at byte 6 is 5 bytes long, longer than the collector accepts \
             (max_string_bytes = 4)"
        );
        assert_eq!(err.code(), ErrorCode::FieldTooLong);
        check_msgpack(b"\x81\xa4name\xa4abcd", &limits).unwrap();
        // {"tags": ["abcde"]}: an array entry is named by the array's key.
        let err = check_msgpack(b"\x81\xa4tags\x91\xa5abcde", &limits).unwrap_err();
        assert!(err.to_string().starts_with("`tags` at byte 7"), "{err}");
        let err = check_msgpack(b"\x81\xa5names\xc0", &limits).unwrap_err();
        assert!(err.to_string().starts_with("a map key at byte 1"), "{err}");
        // A binary too long, at the top level.
        let err = check_msgpack(b"\xc4\x05abcde", &limits).unwrap_err();
        assert!(err.to_string().starts_with("a binary at byte 0"), "{err}");
    }

    #[test]
    fn long_lists_are_refused_before_their_entries() {
        let limits = Limits {
            max_software_entries: 3,
            max_parts: 2,
            max_reports_per_batch: 1,
            ..Limits::default()
        };
        // {"software": [nil, nil, nil, nil]}
        let mut bytes = vec![0x81, 0xa8];
        bytes.extend_from_slice(b"software");
        bytes.extend_from_slice(&[0x94, 0xc0, 0xc0, 0xc0, 0xc0]);
        let err = check_msgpack(&bytes, &limits).unwrap_err();
        assert_eq!(
            err.to_string(),
            "`software` at byte 10 has 4 entries, more than the collector accepts \
             (max_software_entries = 3)"
        );
        assert_eq!(err.code(), ErrorCode::TooManyItems);
    }

    #[test]
    fn many_small_lists_are_bounded_together() {
        // The review's amplification: software entries of six bytes each (an array of five
        // fields: "", nil, nil, nil, ""), each list within max_software_entries, many lists.
        let limits = Limits::default();
        let entry = [0x95u8, 0xa0, 0xc0, 0xc0, 0xc0, 0xa0];
        let per_list = limits.max_software_entries;
        let lists = limits.max_total_items() / (per_list * 6) + 1;
        let mut bytes = vec![0xdd];
        bytes.extend_from_slice(&(lists as u32).to_be_bytes());
        for _ in 0..lists {
            bytes.push(0xdd);
            bytes.extend_from_slice(&(per_list as u32).to_be_bytes());
            for _ in 0..per_list {
                bytes.extend_from_slice(&entry);
            }
        }
        let err = check_msgpack(&bytes, &limits).unwrap_err();
        assert_eq!(err.code(), ErrorCode::TooManyItems);
        assert!(err.to_string().contains("together"), "{err}");
        // One such list alone passes.
        let one = &bytes[5..5 + 5 + per_list * entry.len()];
        check_msgpack(one, &limits).unwrap();
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        check_json_depth(br#"{"a": [[1]], "b": "[[[[[[", "c": "\"[[[["}"#, 3).unwrap();
        let err = check_json_depth(br#"{"a": [[[1]]]}"#, 3).unwrap_err();
        assert_eq!(
            err,
            LimitError::TooDeep {
                at: 8,
                depth: 4,
                max: 3
            }
        );
        check_json_depth(&vec![b'['; 1 << 20], 1 << 21).unwrap();
        assert!(check_json_depth(&vec![b'['; 1 << 20], 32).is_err());
    }
}

//! `Deserialize` for [`Report`], written by hand.
//!
//! A report is one map that holds `seq`, `kind` and its body's fields side by side. Derived
//! code for that shape (`#[serde(flatten)]` over an internally tagged enum) first copies the
//! whole map into serde's generic buffer, then decodes the body from a copy of that buffer:
//! for an 800-package inventory, three allocations per string instead of one, and 60 % of the
//! collector's decoding time (BENCHMARKS.md, `decode_msgpack` against
//! `decode_inventory_without_envelope`).
//!
//! **Promises:**
//! - Keys may come in any order, as before. Census agents write `seq` and `kind` first (the
//!   order the types serialize in), and then the body is decoded straight from the wire.
//! - A body field that comes before `kind` (another writer's order) is kept as a
//!   `serde_json::Value` until `kind` tells which body it belongs to, then decoded from it.
//!   Every value a report can hold (strings, integers, finite floats, booleans, lists, maps)
//!   survives that unchanged.
//! - Errors name the field, as derived code does: a missing `seq` or `kind`, a repeated one, an
//!   unknown kind.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::value::{BorrowedStrDeserializer, MapAccessDeserializer, StringDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::{Report, ReportBody};
use crate::{HealthSample, Inventory};

impl<'de> Deserialize<'de> for Report {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Report, D::Error> {
        deserializer.deserialize_map(ReportVisitor)
    }
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Inventory,
    Health,
}

/// A key of a report's map: one of the report's own, or a body field's name.
enum Key<'de> {
    Seq,
    Kind,
    Body(Cow<'de, str>),
}

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Key<'de>, D::Error> {
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E: de::Error>(self, name: &'de str) -> Result<Key<'de>, E> {
        Ok(Key::named(Cow::Borrowed(name)))
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Key<'de>, E> {
        Ok(Key::named(Cow::Owned(name.to_owned())))
    }

    fn visit_string<E: de::Error>(self, name: String) -> Result<Key<'de>, E> {
        Ok(Key::named(Cow::Owned(name)))
    }
}

impl<'de> Key<'de> {
    fn named(name: Cow<'de, str>) -> Key<'de> {
        match name.as_ref() {
            "seq" => Key::Seq,
            "kind" => Key::Kind,
            _ => Key::Body(name),
        }
    }
}

struct ReportVisitor;

impl<'de> Visitor<'de> for ReportVisitor {
    type Value = Report;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a report: a map with seq, kind and the body's fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Report, A::Error> {
        let mut seq = None;
        // Body fields seen before `kind`, kept until it says which body they belong to.
        let mut early: Vec<(String, serde_json::Value)> = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key {
                Key::Seq => set_seq(&mut seq, map.next_value()?)?,
                Key::Body(name) => early.push((name.into_owned(), map.next_value()?)),
                Key::Kind => {
                    let kind: Kind = map.next_value()?;
                    let rest = BodyFields {
                        early: early.into_iter(),
                        early_value: None,
                        map,
                        seq: &mut seq,
                    };
                    let fields = MapAccessDeserializer::new(rest);
                    let body = match kind {
                        Kind::Inventory => ReportBody::Inventory(Inventory::deserialize(fields)?),
                        Kind::Health => ReportBody::Health(HealthSample::deserialize(fields)?),
                    };
                    let seq = seq.ok_or_else(|| de::Error::missing_field("seq"))?;
                    return Ok(Report { seq, body });
                }
            }
        }
        Err(de::Error::missing_field("kind"))
    }
}

fn set_seq<E: de::Error>(seq: &mut Option<u64>, value: u64) -> Result<(), E> {
    if seq.replace(value).is_some() {
        return Err(E::duplicate_field("seq"));
    }
    Ok(())
}

/// The body's fields: those kept from before `kind`, then the rest of the report's map, with
/// a `seq` among them taken out for the report.
struct BodyFields<'s, A> {
    early: std::vec::IntoIter<(String, serde_json::Value)>,
    early_value: Option<serde_json::Value>,
    map: A,
    seq: &'s mut Option<u64>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for BodyFields<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        if let Some((name, value)) = self.early.next() {
            self.early_value = Some(value);
            return seed.deserialize(StringDeserializer::new(name)).map(Some);
        }
        while let Some(key) = self.map.next_key::<Key<'de>>()? {
            match key {
                Key::Seq => set_seq(self.seq, self.map.next_value()?)?,
                Key::Kind => return Err(de::Error::duplicate_field("kind")),
                Key::Body(Cow::Borrowed(name)) => {
                    return seed
                        .deserialize(BorrowedStrDeserializer::new(name))
                        .map(Some);
                }
                Key::Body(Cow::Owned(name)) => {
                    return seed.deserialize(StringDeserializer::new(name)).map(Some);
                }
            }
        }
        Ok(None)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        match self.early_value.take() {
            Some(value) => seed.deserialize(value).map_err(de::Error::custom),
            None => self.map.next_value_seed(seed),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde::ser::{SerializeMap, Serializer};

    use super::*;
    use crate::codec::{self, Format};

    type Field = (String, serde_json::Value);

    /// A report's map with its keys in the given order.
    struct Ordered(Vec<Field>);

    impl Serialize for Ordered {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let mut map = s.serialize_map(Some(self.0.len()))?;
            for (k, v) in &self.0 {
                map.serialize_entry(k, v)?;
            }
            map.end()
        }
    }

    fn field(name: &str, value: serde_json::Value) -> Field {
        (name.to_owned(), value)
    }

    /// A health sample's fields, in the order they serialize in.
    fn health_fields() -> Vec<Field> {
        vec![
            field("agent_id", serde_json::json!("a-1")),
            field("collected_at", serde_json::json!("2026-11-25T10:00:00Z")),
            field("cpu_percent", serde_json::json!(12.5)),
            field("load", serde_json::json!([0.5, 0.25, 0.125])),
            field(
                "filesystems",
                serde_json::json!([{"mount": "/", "used_percent": 40.0, "total_bytes": 1000}]),
            ),
        ]
    }

    fn decode_both(report: &Ordered) -> Vec<Result<Report, String>> {
        [Format::MessagePack, Format::Json]
            .into_iter()
            .map(|format| {
                codec::decode::<Report>(&codec::encode(report, format), format)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }

    #[test]
    fn a_report_decodes_whatever_the_order_of_its_keys() {
        let sample: serde_json::Map<_, _> = health_fields().into_iter().collect();
        let expected = Report {
            seq: 7,
            body: ReportBody::Health(serde_json::from_value(sample.into()).unwrap()),
        };
        let seq = field("seq", serde_json::json!(7));
        let kind = field("kind", serde_json::json!("health"));
        let body = health_fields();
        let (first, rest) = body.split_at(2);
        let orders = [
            // As census agents write it: seq and kind first.
            [vec![seq.clone(), kind.clone()], body.clone()].concat(),
            // kind first, seq last.
            [vec![kind.clone()], body.clone(), vec![seq.clone()]].concat(),
            // kind and seq among the body fields.
            [
                first.to_vec(),
                vec![kind.clone()],
                rest.to_vec(),
                vec![seq.clone()],
            ]
            .concat(),
            // everything before kind.
            [body.clone(), vec![seq.clone(), kind.clone()]].concat(),
        ];
        for order in orders {
            let keys: Vec<String> = order.iter().map(|(k, _)| k.clone()).collect();
            for decoded in decode_both(&Ordered(order)) {
                assert_eq!(decoded.as_ref(), Ok(&expected), "key order {keys:?}");
            }
        }
    }

    #[test]
    fn a_report_without_seq_or_kind_or_with_either_twice_is_refused() {
        let seq = field("seq", serde_json::json!(7));
        let kind = field("kind", serde_json::json!("health"));
        let body = health_fields();
        let cases = [
            (
                [vec![kind.clone()], body.clone()].concat(),
                "missing field `seq`",
            ),
            (
                [vec![seq.clone()], body.clone()].concat(),
                "missing field `kind`",
            ),
            (
                [vec![seq.clone(), kind.clone(), seq.clone()], body.clone()].concat(),
                "duplicate field `seq`",
            ),
            (
                [
                    vec![seq.clone(), kind.clone()],
                    body.clone(),
                    vec![kind.clone()],
                ]
                .concat(),
                "duplicate field `kind`",
            ),
            (
                [
                    vec![seq.clone(), field("kind", serde_json::json!("gpu"))],
                    body.clone(),
                ]
                .concat(),
                "unknown variant `gpu`, expected `inventory` or `health`",
            ),
        ];
        for (order, message) in cases {
            for decoded in decode_both(&Ordered(order)) {
                let error = decoded.expect_err(message);
                assert!(error.contains(message), "{error:?} should say {message:?}");
            }
        }
    }
}

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
//! - A body field that comes before `kind` (another writer's order, e.g. JSON with sorted keys)
//!   is kept as an [`Early`] value, exactly as decoded (NaN, bytes and repeated keys
//!   included), until `kind` tells which body it belongs to, then decoded from it: the
//!   checks after decoding (`limits::check_batch`) see what the sender sent.
//! - Errors name the field, as derived code does: a missing `seq` or `kind`, a repeated one, an
//!   unknown kind. The report's own keys must be strings (Census encodes named fields).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::{
    BorrowedStrDeserializer, MapAccessDeserializer, MapDeserializer, SeqDeserializer,
    StringDeserializer,
};
use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, Visitor};

use super::{Report, ReportBody};
use crate::{HealthSample, Inventory};

impl<'de> Deserialize<'de> for Report {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Report, D::Error> {
        deserializer.deserialize_map(ReportVisitor)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Inventory,
    Health,
}

const KINDS: &[&str] = &["inventory", "health"];

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Kind, D::Error> {
        deserializer.deserialize_identifier(KindVisitor)
    }
}

struct KindVisitor;

impl Visitor<'_> for KindVisitor {
    type Value = Kind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a report kind")
    }

    fn visit_str<E: de::Error>(self, kind: &str) -> Result<Kind, E> {
        match kind {
            "inventory" => Ok(Kind::Inventory),
            "health" => Ok(Kind::Health),
            _ => Err(E::unknown_variant(kind, KINDS)),
        }
    }
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
        let mut early: Vec<(String, Early)> = Vec::new();
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
    early: std::vec::IntoIter<(String, Early)>,
    early_value: Option<Early>,
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
            Some(value) => seed.deserialize(value.into_deserializer()),
            None => self.map.next_value_seed(seed),
        }
    }
}

/// Most entries a list or map kept before `kind` reserves room for up front.
const EARLY_HINT_MAX: usize = 1024;

/// A value decoded before the report's `kind` said what it is: kept as the decoder gave it,
/// and replayed to the body's own `Deserialize` once `kind` is known.
enum Early {
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(String),
    Bytes(Vec<u8>),
    /// nil, null, or a missing optional value.
    Unit,
    Some(Box<Early>),
    Seq(Vec<Early>),
    /// Pairs, not a map: a repeated key reaches the body's decoder, which refuses it.
    Map(Vec<(Early, Early)>),
}

impl<'de> Deserialize<'de> for Early {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Early, D::Error> {
        deserializer.deserialize_any(EarlyVisitor)
    }
}

struct EarlyVisitor;

impl<'de> Visitor<'de> for EarlyVisitor {
    type Value = Early;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Early, E> {
        Ok(Early::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Early, E> {
        Ok(Early::I64(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Early, E> {
        Ok(Early::U64(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Early, E> {
        Ok(Early::F64(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Early, E> {
        Ok(Early::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Early, E> {
        Ok(Early::Str(v))
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<Early, E> {
        Ok(Early::Bytes(v.to_owned()))
    }

    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Early, E> {
        Ok(Early::Bytes(v))
    }

    fn visit_unit<E>(self) -> Result<Early, E> {
        Ok(Early::Unit)
    }

    fn visit_none<E>(self) -> Result<Early, E> {
        Ok(Early::Unit)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Early, D::Error> {
        Ok(Early::Some(Box::new(Early::deserialize(d)?)))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Early, A::Error> {
        // The hint is the sender's, so it is capped; MessagePack's is exact and already
        // bounded by the shape check, which keeps small lists small.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(EARLY_HINT_MAX));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Early::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Early, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(EARLY_HINT_MAX));
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Early::Map(entries))
    }
}

/// Replays an [`Early`] value; errors are the report decoder's own type `E`.
struct EarlyDeserializer<E> {
    value: Early,
    error: PhantomData<E>,
}

impl<'de, E: de::Error> IntoDeserializer<'de, E> for Early {
    type Deserializer = EarlyDeserializer<E>;

    fn into_deserializer(self) -> EarlyDeserializer<E> {
        EarlyDeserializer {
            value: self,
            error: PhantomData,
        }
    }
}

impl<'de, E: de::Error> Deserializer<'de> for EarlyDeserializer<E> {
    type Error = E;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        match self.value {
            Early::Bool(v) => visitor.visit_bool(v),
            Early::U64(v) => visitor.visit_u64(v),
            Early::I64(v) => visitor.visit_i64(v),
            Early::F64(v) => visitor.visit_f64(v),
            Early::Str(v) => visitor.visit_string(v),
            Early::Bytes(v) => visitor.visit_byte_buf(v),
            Early::Unit => visitor.visit_unit(),
            Early::Some(v) => visitor.visit_some(v.into_deserializer()),
            Early::Seq(items) => {
                let mut seq = SeqDeserializer::new(items.into_iter());
                let value = visitor.visit_seq(&mut seq)?;
                seq.end()?;
                Ok(value)
            }
            Early::Map(entries) => {
                let mut map = MapDeserializer::new(entries.into_iter());
                let value = visitor.visit_map(&mut map)?;
                map.end()?;
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, E> {
        match self.value {
            Early::Unit => visitor.visit_none(),
            Early::Some(v) => visitor.visit_some(v.into_deserializer()),
            value => visitor.visit_some(value.into_deserializer()),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, E> {
        match self.value {
            // A unit variant by name, as the wire writes one.
            Early::Str(variant) => visitor.visit_enum(StringDeserializer::<E>::new(variant)),
            value => value
                .into_deserializer()
                .deserialize_any(visitor)
                .map_err(|e: E| E::custom(format_args!("{name} (one of {variants:?}): {e}"))),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use serde::Serialize;
    use serde::ser::{SerializeMap, Serializer};

    use super::*;
    use crate::codec::{self, Format};

    /// A value of a test report: JSON, or a float JSON cannot hold (NaN).
    #[derive(Clone)]
    enum Val {
        Json(serde_json::Value),
        Float(f64),
    }

    impl Serialize for Val {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self {
                Val::Json(v) => v.serialize(s),
                Val::Float(f) => s.serialize_f64(*f),
            }
        }
    }

    type Field = (String, Val);

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
        (name.to_owned(), Val::Json(value))
    }

    fn json_of(fields: Vec<Field>) -> serde_json::Value {
        fields
            .into_iter()
            .map(|(k, v)| match v {
                Val::Json(v) => (k, v),
                Val::Float(f) => (k, f.into()),
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
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
        let expected = Report {
            seq: 7,
            body: ReportBody::Health(serde_json::from_value(json_of(health_fields())).unwrap()),
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

    #[test]
    fn a_value_before_kind_reaches_the_body_as_sent() {
        let seq = field("seq", serde_json::json!(7));
        let kind = field("kind", serde_json::json!("health"));
        // NaN, which the limits refuse, must not turn into "unknown" on the way.
        let nan = ("cpu_percent".to_owned(), Val::Float(f64::NAN));
        let mut body = health_fields();
        body.retain(|(k, _)| k != "cpu_percent");
        let order = [vec![seq, nan], body, vec![kind]].concat();
        let bytes = codec::encode(&Ordered(order), Format::MessagePack);
        let report: Report = codec::decode(&bytes, Format::MessagePack).unwrap();
        let ReportBody::Health(sample) = report.body else {
            panic!("a health report")
        };
        assert!(sample.cpu_percent.is_some_and(f64::is_nan), "{sample:?}");
        assert_eq!(sample.load, Some([0.5, 0.25, 0.125]));

        // A key repeated inside a value before kind is refused, as it is after kind.
        for kind_first in [false, true] {
            let (before, after) = if kind_first {
                (r#""kind":"health","#, "")
            } else {
                ("", r#","kind":"health""#)
            };
            let text = format!(
                r#"{{"seq":1,{before}"agent_id":"a","collected_at":"2026-11-25T10:00:00Z",
                    "filesystems":[{{"mount":"/","mount":"/srv"}}]{after}}}"#
            );
            let error = codec::decode::<Report>(text.as_bytes(), Format::Json).unwrap_err();
            assert!(
                error.to_string().contains("duplicate field `mount`"),
                "kind first: {kind_first}: {error}"
            );
        }
    }
}

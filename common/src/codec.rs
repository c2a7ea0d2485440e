//! Encoding and decoding of batches: MessagePack with named fields (the agent's default) and
//! JSON (for scripts and imports).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::limits::{LimitError, Limits};
use crate::{Ack, Batch, PROTOCOL_VERSION, shape};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    MessagePack,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("malformed MessagePack: {0}")]
    MessagePack(#[from] rmp_serde::decode::Error),
    #[error("malformed JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("protocol version {found} is not supported (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedProtocol { found: u32 },
    /// The bytes are deeper, longer or larger than [`Limits`] allow, or lie about a length;
    /// found before decoding by [`decode_batch_within`].
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("report {seq} names agent {found}, but the batch is from agent {expected}")]
    AgentMismatch {
        seq: u64,
        expected: String,
        found: String,
    },
}

pub fn encode<T: Serialize>(value: &T, format: Format) -> Vec<u8> {
    match format {
        // Named fields keep the encoding self-describing, so fields can be added later.
        Format::MessagePack => {
            rmp_serde::to_vec_named(value).expect("census wire types always encode")
        }
        Format::Json => serde_json::to_vec(value).expect("census wire types always encode"),
    }
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8], format: Format) -> Result<T, DecodeError> {
    Ok(match format {
        Format::MessagePack => rmp_serde::from_slice(bytes)?,
        Format::Json => serde_json::from_slice(bytes)?,
    })
}

/// Decodes a batch and checks what a well-formed batch must satisfy whatever the transport:
/// a protocol this build speaks, and every report from the batch's own agent.
pub fn decode_batch(bytes: &[u8], format: Format) -> Result<Batch, DecodeError> {
    let batch: Batch = decode(bytes, format)?;
    if batch.protocol != PROTOCOL_VERSION {
        return Err(DecodeError::UnsupportedProtocol {
            found: batch.protocol,
        });
    }
    if let Some(report) = batch
        .reports
        .iter()
        .find(|r| r.body.agent_id() != batch.agent_id)
    {
        return Err(DecodeError::AgentMismatch {
            seq: report.seq,
            expected: batch.agent_id.clone(),
            found: report.body.agent_id().to_owned(),
        });
    }
    Ok(batch)
}

/// [`decode_batch`] for untrusted bytes: first checks their shape against `limits` (see
/// [`crate::shape`]), so the decoder never sees a body nested past `max_nesting_depth` or,
/// for MessagePack, a string, list or length beyond the limits. The decoded batch still needs
/// [`crate::limits::check_batch`].
pub fn decode_batch_within(
    bytes: &[u8],
    format: Format,
    limits: &Limits,
) -> Result<Batch, DecodeError> {
    match format {
        Format::MessagePack => shape::check_msgpack(bytes, limits)?,
        Format::Json => shape::check_json_depth(bytes, limits.max_nesting_depth)?,
    }
    decode_batch(bytes, format)
}

pub fn decode_ack(bytes: &[u8], format: Format) -> Result<Ack, DecodeError> {
    decode(bytes, format)
}

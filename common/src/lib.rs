//! Everything that crosses the wire between `census-agent` and `census-collector`, and nothing
//! else: report types, the protocol version, encode/decode, the limits a batch must keep and the
//! stable error codes.
//!
//! **Promise:** field names here are the contract of `DESIGN.md`. A field may be added (with
//! `#[serde(default)]` so older senders still decode); none is renamed or removed without a new
//! schema number. The golden file `fixtures/batch-v1.msgpack` is decoded in a test so that an
//! incompatible change fails CI.

pub mod codec;
pub mod enroll;
pub mod error;
pub mod health;
pub mod inventory;
pub mod limits;
pub mod report;
pub mod shape;

pub use codec::{DecodeError, Format};
pub use enroll::{ENROLL_PATH, EnrollRequest, EnrollResponse};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use health::{FilesystemUsage, HealthSample};
pub use inventory::{
    Cpu, Filesystem, Hardware, Host, Inventory, Memory, NetworkInterface, Os, Software,
};
pub use limits::{LimitError, Limits};
pub use report::{Ack, Batch, Report, ReportBody};

/// Version of the agent-to-collector protocol carried in every batch.
pub const PROTOCOL_VERSION: u32 = 1;

/// Version of the inventory document; see `DESIGN.md`, "Inventory JSON (schema 1)".
pub const INVENTORY_SCHEMA: u32 = 1;

/// Media type of MessagePack bodies.
pub const MSGPACK_CONTENT_TYPE: &str = "application/msgpack";

//! The Census collector as a library: `main.rs` only parses the command line and calls
//! [`cli::run`]; tests start [`server::serve`] on port 0.
//!
//! Code map:
//! - [`cli`], [`config`]: the command line and the configuration file.
//! - [`server`]: serving on a bound listener until shutdown; the `collector.addr` file.
//! - [`api`]: every route, the error body, cursors; handlers per resource.
//! - [`store`]: SQLite behind one interface: writer thread, read pool, migrations, queries.
//! - [`cmdb`]: pure reconciliation logic: identification rules, attributes, diffs.
//! - [`incidents`]: the incident engine's pure logic: rules, scopes, alert states, priority.
//! - [`heartbeat`]: the silence check timer (`unreachable` incidents, ended maintenance).
//! - [`retention`]: the background compaction and pruning of health samples.
//! - [`webhooks`]: the background delivery of incident events from the outbox, signed.
//! - [`auth`]: credentials (enrollment secrets, agent and admin tokens) and roles.
//! - [`clock`]: injected time.
//! - [`ratelimit`]: keyed token buckets (per agent, per client address).
//! - [`tls`]: HTTPS: the certificate and the listener that runs TLS handshakes.

pub mod api;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod cmdb;
pub mod config;
pub mod heartbeat;
pub mod incidents;
pub mod ratelimit;
pub mod retention;
pub mod server;
pub mod store;
pub mod tls;
pub mod webhooks;

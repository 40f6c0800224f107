//! stowage: a self-hosted object store that speaks QuantConnect's Object Store API.
//!
//! Layers, top to bottom (nothing imports upward):
//! - [`http`]: the front door: routing under `/api/v2`, request decoding, the wire's JSON names,
//!   streamed uploads, operating endpoints (`/healthz`, `/readyz`, `/metrics`).
//! - [`service`]: the use cases and their rules (authentication, permissions, quotas, set,
//!   properties, list, delete, download jobs and zips, garbage collection) and the typed errors
//!   with their sentences.
//! - [`meta`]: the metadata store as four traits by concern ([`meta::Identities`],
//!   [`meta::Objects`], [`meta::Jobs`], [`meta::Maintenance`]; `MetaStore` is their union), the
//!   backend-neutral rules, and two backends: SQLite (embedded) and PostgreSQL (several servers).
//! - [`blob`]: the body store ([`blob::BlobStore`]) with two backends: files in the data
//!   directory with a small-body table beside them ([`blob::local`], [`blob::small`]), and any
//!   S3-compatible bucket ([`blob::s3`]).
//!
//! Beside them: [`server`] opens a data directory and runs `stowage serve`, whose connections
//! `conn` bounds (a cap, idle and stall timeouts); [`admin`] is
//! `stowage admin`; [`client`] is `stowage login` and `stowage object`, a client of the API;
//! [`fsck`] checks metadata against blobs; [`migrate`] copies a store from one configuration to
//! another; [`bench`] is a load generator; [`config`] reads the configuration; [`key`] turns
//! client strings into object keys and folder paths; [`ids`] holds the identifier types;
//! `content` derives size, md5, MIME type and preview from a streaming body; [`crypto`] holds the
//! server key, token sealing and signed download URLs.
//!
//! Items are `pub` only where `src/main.rs` or the integration tests in `tests/` need them;
//! everything else is `pub(crate)` (`unreachable_pub` keeps it so).

#![warn(unreachable_pub)]

pub mod admin;
pub mod backup;
pub mod bench;
pub mod blob;
pub mod client;
pub mod config;
pub(crate) mod conn;
pub(crate) mod content;
pub mod crypto;
pub mod fsck;
pub mod http;
pub mod ids;
pub mod key;
pub mod meta;
pub mod migrate;
pub mod modes;
pub mod net;
pub mod s3;
pub mod schema;
pub mod server;
pub mod service;
pub mod tls;

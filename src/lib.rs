//! stowage: a self-hosted object store that speaks QuantConnect's Object Store API.
//!
//! Layers, top to bottom: [`http`] (routing, decoding, wire types) → [`service`] (the use cases and
//! every rule) → [`meta`] (the metadata trait and its SQLite implementation) and [`blob`] (the
//! body-store trait and its filesystem implementation). [`server`] and [`admin`] wire them up
//! for the binary's subcommands; [`client`] is `stowage login` and `stowage object`, a client of
//! the API.

#![warn(unreachable_pub)]

pub mod admin;
pub mod bench;
pub mod blob;
pub mod client;
pub mod config;
pub(crate) mod content;
pub mod crypto;
pub mod fsck;
pub mod http;
pub mod ids;
pub mod key;
pub mod meta;
pub mod migrate;
pub mod server;
pub mod service;

//! Qala coordinator: the one address agents talk to.
//!
//! It compiles the rules once and ships them to workers, places each file on
//! a worker by rendezvous hashing of its sha256, coalesces concurrent scans
//! of the same content, checks every upload's sha256, and keeps verdicts in
//! a store keyed by ruleset id + sha256. Clients prove who they are with
//! tokens, workers with certificates of the cluster CA; everything a client
//! or worker can ask for goes through one [`core::Core`], with gRPC
//! ([`grpc`]), REST ([`http`]) and clamd ([`clamd`]) as thin front doors.
//! [`server::run`] wires them together.

pub mod audit;
pub mod auth;
pub mod clamd;
mod cluster;
pub mod config;
pub mod core;
pub mod error;
mod fair;
mod grpc;
pub mod http;
pub mod metrics;
pub mod placement;
mod rules;
pub mod server;
pub mod siem;
pub mod store;

pub use config::{Cli, Config};
pub use core::digests::valid_sha256;
pub use error::Error;
pub use server::{Listeners, STORE_HEALTH_SERVICE, run};

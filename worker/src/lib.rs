//! Qala worker: a gRPC server the coordinator streams files to, and a fixed
//! pool of scan threads, each handing files to a sandboxed child process
//! that runs the synchronous engine ([`sandbox`]).
//!
//! The worker registers with its coordinator (or with each of several) and
//! heartbeats; a coordinator pushes compiled rules with `LoadRules` and files
//! with `ScanFile`. Each file names the ruleset it must be scanned with, so a
//! verdict is always labelled with the rules that produced it, even while
//! rules change.

pub mod config;
mod convert;
pub mod error;
mod health;
mod identity;
mod latency;
mod metrics;
mod pool;
mod register;
mod rules;
pub mod sandbox;
mod server;
mod service;

pub use config::Config;
pub use error::Error;
pub use server::run;

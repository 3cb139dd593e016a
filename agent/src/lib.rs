//! Qala endpoint agent: walk paths, hash, ask the cluster what it already
//! knows, upload only unknown content, and report a verdict per file.
//!
//! The agent never links the scan engine: all it does locally is read and
//! hash files, and check file names (which stay on the endpoint). Uploads are streamed from disk in chunks, never held whole in
//! memory, and content that several files share is uploaded once.

pub mod cache;
pub mod cli;
pub mod client;
pub mod config;
pub mod fsutil;
pub mod held;
pub mod limits;
pub mod local;
pub mod os;
pub mod output;
pub mod progress;
pub mod quarantine;
pub mod scan;
pub mod service;
pub mod walk;

/// Exit codes, as ClamAV's `clamscan` and ripgrep use them.
pub mod exit {
    /// Everything scanned and clean.
    pub const CLEAN: i32 = 0;
    /// At least one file malicious or suspicious.
    pub const DETECTED: i32 = 1;
    /// Nothing detected, but some file could not be read, sent or scanned.
    pub const ERROR: i32 = 2;
}

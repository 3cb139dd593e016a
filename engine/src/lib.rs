//! Qala's scan engine: everything that happens to the bytes of one submission.
//!
//! The engine is synchronous and knows nothing of networks, async runtimes or
//! stores, so it can be tested and fuzzed on its own. The flow mirrors
//! yara-x's: [`compile_rules`] (once, on the coordinator) produces a
//! [`Ruleset`], which is shipped as bytes and loaded with
//! [`Ruleset::from_bytes`]; each scan thread then keeps one [`Engine`] per
//! ruleset and reuses it for every submission.
//!
//! One call to [`Engine::scan`] hashes the root (sha256, md5, sha1 in one pass),
//! detects its type by magic, runs the rules over it, summarises executables
//! and recursively unpacks containers under [`Limits`], scanning every
//! extracted object. Everything that goes wrong inside a submission (a corrupt
//! member, a limit, a parser panic) becomes part of the [`Report`], never an
//! error of the call.
//!
//! The yara-x half sits behind the default `rules` feature: without it the
//! crate is the unpackers, the executable summaries and the limits alone,
//! which is what the fuzz targets (`fuzz/`, see [`fuzzing`]) build.

mod emu;
mod entropy;
mod exe;
mod filetype;
mod formats;
mod hash;
mod limits;
mod report;
#[cfg(feature = "rules")]
mod rules;
#[cfg(feature = "rules")]
mod scan;
mod tally;
mod version;
mod walk;

pub mod fuzzing;

pub use exe::{ExecutableSummary, SectionSummary, summarize_executable};
pub use filetype::FileType;
pub use formats::detect;
pub use hash::{DigestKinds, Digests, Hasher, ObjectDigests};
pub use limits::{Limit, Limits};
pub use report::{Detection, LimitHit, ObjectMeta, Report, Severity};
#[cfg(feature = "rules")]
pub use rules::{RuleFileError, RulesError, Ruleset, compile_rules, rules_fingerprint};
#[cfg(feature = "rules")]
pub use scan::Engine;

pub use version::ENGINE_VERSION;

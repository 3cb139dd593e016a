//! The engine's version, in every verdict and hashed into every ruleset id.

/// Version of the engine, reported in every verdict and hashed into every
/// ruleset id, so a verdict stored by an older engine is not served as
/// current. It names the yara-x build (compiled rules only load into the
/// same build) and the revision of what the unpackers see through:
/// `formats.N` goes up whenever a format module is added or finds more, so
/// files judged before are scanned again rather than answered from the cache.
pub const ENGINE_VERSION: &str = concat!("qala-engine/", env!("CARGO_PKG_VERSION"), "+formats.9 yara-x/1.22");

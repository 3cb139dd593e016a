//! The rules side of a scan: a reused yara-x scanner inspecting every object
//! the walk ([`crate::walk`]) reaches, with the per-object globals set.

use crate::exe::panic_message;
use crate::filetype::FileType;
use crate::formats::at;
use crate::hash::DigestKinds;
use crate::limits::{Limit, Limits};
use crate::report::{Detection, Report, Severity};
use crate::rules::{
    GLOBAL_DEPTH, GLOBAL_EXE_FACTS, GLOBAL_EXE_OVERLAY, GLOBAL_EXE_SIGNED, GLOBAL_FILE_TYPE, GLOBAL_FILENAME, GLOBAL_PARENT_TYPE,
    Ruleset,
};
use crate::tally::Tally;
use crate::walk::{Inspect, Object, Root, walk};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// yara-x keeps up to a million matches per pattern by default; a long run of
/// one byte against public rule sets then costs seconds and tens of MB. We
/// only need to know that a rule matched.
const MAX_MATCHES_PER_PATTERN: usize = 1_000;

/// The scan state of one thread: a reused yara-x scanner bound to one
/// ruleset, and the limits. Create one per thread and per ruleset (creating a
/// scanner costs ~0.5 ms); `scan` it many times.
pub struct Engine<'r> {
    rules: Rules<'r>,
    limits: Limits,
    /// Digests of nested objects computed besides sha256.
    kinds: DigestKinds,
}

/// The yara-x half of an engine: what [`Inspect`]s each object.
struct Rules<'r> {
    ruleset: &'r Ruleset,
    scanner: yara_x::Scanner<'r>,
    /// The scanner's timeout for the object being scanned.
    timeout: Duration,
}

fn new_scanner<'r>(ruleset: &'r Ruleset, timeout: Duration) -> yara_x::Scanner<'r> {
    let mut s = yara_x::Scanner::new(&ruleset.rules);
    s.max_matches_per_pattern(MAX_MATCHES_PER_PATTERN);
    s.set_timeout(timeout);
    s
}

impl<'r> Engine<'r> {
    pub fn new(ruleset: &'r Ruleset, limits: Limits) -> Self {
        let timeout = limits.object_timeout;
        Self { rules: Rules { scanner: new_scanner(ruleset, timeout), ruleset, timeout }, limits, kinds: DigestKinds::default() }
    }

    /// Which digests of the objects inside a submission the following
    /// scans compute besides sha256 (md5 and sha1 only while IOC lists of
    /// that kind exist; they do not change what a scan finds).
    pub fn set_object_digests(&mut self, kinds: DigestKinds) {
        self.kinds = kinds;
    }

    pub fn ruleset_id(&self) -> &str {
        &self.rules.ruleset.id
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Scan one submission held in memory. `name` is the root object's name
    /// (the file name the agent gave), the first element of object paths.
    pub fn scan(&mut self, data: &[u8], name: &str) -> Report {
        walk(&mut self.rules, &self.limits, data, name, None, None, Root::Hash, self.kinds)
    }

    /// [`Engine::scan`] that stops at its next check (between objects and
    /// inside long decodes) once `cancel` is set from another thread; the
    /// report then has a `cancelled` limit hit.
    pub fn scan_cancellable(&mut self, data: &[u8], name: &str, cancel: Arc<AtomicBool>) -> Report {
        walk(&mut self.rules, &self.limits, data, name, None, Some(cancel), Root::Hash, self.kinds)
    }

    /// [`Engine::scan_cancellable`] of bytes whose sha256 the caller has
    /// already computed and verified (a worker is sent it by the
    /// coordinator that checked the upload): the root is not hashed with
    /// sha256 again, and the report carries `sha256` as given. Everything
    /// else (md5, sha1, nested objects' digests) is computed as usual.
    pub fn scan_verified(&mut self, data: &[u8], sha256: &str, cancel: Arc<AtomicBool>) -> Report {
        walk(&mut self.rules, &self.limits, data, "", None, Some(cancel), Root::Verified(sha256), self.kinds)
    }

    /// [`Engine::scan_verified`] that does not read the root for its
    /// digests at all: the report carries `sha256` as given and leaves
    /// `md5` and `sha1` empty for the caller, who has them (the coordinator
    /// computes them while it receives an upload, where the bytes already
    /// pass for its sha256). Nested objects are hashed as usual.
    pub fn scan_unhashed(&mut self, data: &[u8], sha256: &str, cancel: Arc<AtomicBool>) -> Report {
        walk(&mut self.rules, &self.limits, data, "", None, Some(cancel), Root::HashedByCaller(sha256), self.kinds)
    }
}

impl Inspect for Rules<'_> {
    fn inspect(&mut self, walk: &mut Tally, o: &Object<'_>) {
        self.scanner.set_timeout(o.timeout);
        self.timeout = o.timeout;
        let facts: Vec<&str> = o.exe.iter().flat_map(|e| e.facts.iter().map(String::as_str)).collect();
        let _ = self.scanner.set_global(GLOBAL_EXE_FACTS, facts.join(",").as_str());
        let _ = self.scanner.set_global(GLOBAL_EXE_SIGNED, o.exe.iter().any(|e| e.signed));
        let _ = self.scanner.set_global(GLOBAL_EXE_OVERLAY, o.exe.iter().map(|e| e.overlay_size as i64).max().unwrap_or(0));
        if o.ty == FileType::Elf && self.ruleset.trim_elf_symbols {
            // Same output as the module computes, minus the symbol tables
            // no rule looks at (their counts stay).
            if let Some(mut elf) = yara_x::mods::invoke::<yara_x::mods::ELF>(o.data) {
                elf.symtab.clear();
                elf.dynsym.clear();
                let _ = self.scanner.set_module_output(elf);
            }
        }
        self.run_rules(walk, o.data, o.ty, o.path, o.depth, o.parent_type);
    }
}

impl Rules<'_> {
    fn run_rules(&mut self, walk: &mut Tally, data: &[u8], ty: FileType, path: &str, depth: u32, parent_type: &str) {
        let file_name = path.rsplit('/').next().unwrap_or(path);
        // The globals were declared with these types at compile time, so
        // setting them cannot fail.
        let _ = self.scanner.set_global(GLOBAL_FILENAME, file_name);
        let _ = self.scanner.set_global(GLOBAL_DEPTH, depth as i64);
        let _ = self.scanner.set_global(GLOBAL_PARENT_TYPE, parent_type);
        let _ = self.scanner.set_global(GLOBAL_FILE_TYPE, ty.as_str());

        let scanner = &mut self.scanner;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            scanner.scan(data).map(|results| results.matching_rules().map(|r| detection(&r, path)).collect::<Vec<_>>())
        }));
        match outcome {
            Ok(Ok(found)) => walk.detections.extend(found),
            Ok(Err(yara_x::ScanError::Timeout)) => {
                walk.limit(Limit::ObjectTimeout, path, format!("rules did not finish in {:?}", self.timeout));
                walk.root_unscanned |= depth == 0;
            }
            Ok(Err(e)) => {
                walk.errors.push(at(path, format_args!("rules failed: {e}")));
                walk.root_unscanned |= depth == 0;
            }
            Err(panic) => {
                walk.errors.push(at(path, format_args!("rule engine panicked: {}", panic_message(&panic))));
                walk.root_unscanned |= depth == 0;
                // The scanner's state is unknown after a panic: start afresh.
                self.scanner = new_scanner(self.ruleset, self.timeout);
            }
        }
    }
}

/// Copy a match out of the scanner's borrowed results.
fn detection(rule: &yara_x::Rule, object: &str) -> Detection {
    let tags: Vec<String> = rule.tags().map(|t| t.identifier().to_string()).collect();
    let meta: Vec<(String, String)> = rule
        .metadata()
        .map(|(k, v)| {
            let v = match v {
                yara_x::MetaValue::Integer(i) => i.to_string(),
                yara_x::MetaValue::Float(f) => f.to_string(),
                yara_x::MetaValue::Bool(b) => b.to_string(),
                yara_x::MetaValue::String(s) => s.to_string(),
                yara_x::MetaValue::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            };
            (k.to_string(), v)
        })
        .collect();
    let severity = severity(&tags, &meta);
    let techniques = techniques(&meta);
    Detection {
        rule: rule.identifier().to_string(),
        namespace: rule.namespace().to_string(),
        tags,
        meta,
        object: object.to_string(),
        severity,
        techniques,
    }
}

/// Meta keys naming ATT&CK techniques, as rule authors spell them.
const ATTACK_KEYS: [&str; 3] = ["mitre_attack", "attack", "mitre_att"];

/// The ATT&CK technique ids in a rule's meta: `T` and four digits,
/// optionally `.` and three (a sub-technique), separated by commas or
/// spaces; upper-cased, each once, in order. Anything else is ignored.
pub(crate) fn techniques(meta: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (_, v) in meta.iter().filter(|(k, _)| ATTACK_KEYS.iter().any(|a| k.eq_ignore_ascii_case(a))) {
        for id in v.split(|c: char| c == ',' || c == ';' || c.is_whitespace()).map(str::to_ascii_uppercase) {
            let b = id.as_bytes();
            let technique = b.len() == 5 && b[0] == b'T' && b[1..].iter().all(u8::is_ascii_digit);
            let sub = b.len() == 9
                && b[0] == b'T'
                && b[1..5].iter().all(u8::is_ascii_digit)
                && b[5] == b'.'
                && b[6..].iter().all(u8::is_ascii_digit);
            if (technique || sub) && !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// What one matching rule says about the file: the `severity` meta if the
/// rule has one, else its `malicious` / `suspicious` tag, else informational
/// categories count as suspicious and anything else as malicious.
pub(crate) fn severity(tags: &[String], meta: &[(String, String)]) -> Severity {
    let get = |key: &str| meta.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.to_ascii_lowercase());
    if let Some(s) = get("severity") {
        return match s.as_str() {
            "info" | "informational" | "none" | "clean" => Severity::Clean,
            "suspicious" | "low" | "medium" => Severity::Suspicious,
            _ => Severity::Malicious,
        };
    }
    if tags.iter().any(|t| t.eq_ignore_ascii_case("malicious")) {
        return Severity::Malicious;
    }
    if tags.iter().any(|t| t.eq_ignore_ascii_case("suspicious")) {
        return Severity::Suspicious;
    }
    match get("category").as_deref() {
        Some("info") => Severity::Suspicious,
        _ => Severity::Malicious,
    }
}

#[cfg(test)]
mod attack_tests {
    #[test]
    fn technique_ids_are_taken_from_the_three_meta_spellings() {
        let meta = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(
            super::techniques(&meta(&[("mitre_attack", "T1059.001, t1027 T1059.001"), ("author", "T9999")])),
            ["T1059.001", "T1027"]
        );
        assert_eq!(super::techniques(&meta(&[("ATTACK", "T1204.002;T1566")])), ["T1204.002", "T1566"]);
        assert_eq!(super::techniques(&meta(&[("mitre_att", "TA0002 T12 T1059.1 execution T1105")])), ["T1105"]);
        assert!(super::techniques(&meta(&[("description", "T1059")])).is_empty());
    }
}

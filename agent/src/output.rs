//! What the agent prints: one line per file (text or JSON), then a summary.
//! Lines are written whole through one locked stdout, so they never
//! interleave.

use qala_proto::v1::{self as pb, VerdictKind};
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;

/// The outcome for one file.
pub struct FileResult {
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    pub outcome: Result<pb::Verdict, String>,
    /// Answered without uploading this file's content.
    pub cached: bool,
    /// Content bytes sent for this file.
    pub uploaded: u64,
}

pub fn kind(v: &pb::Verdict) -> VerdictKind {
    VerdictKind::try_from(v.verdict).unwrap_or(VerdictKind::Unspecified)
}

/// Verdict fields as JSON, shared by `scan` and `lookup` output.
pub fn verdict_json(v: &pb::Verdict) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("verdict".into(), json!(kind(v).label()));
    m.insert(
        "detections".into(),
        Value::Array(
            v.detections
                .iter()
                .map(|d| {
                    json!({
                        "rule": d.rule,
                        "namespace": d.namespace,
                        "object": d.object,
                        "tags": d.tags,
                        "meta": d.meta,
                        "severity": VerdictKind::try_from(d.severity).unwrap_or_default().label(),
                        "techniques": d.techniques,
                    })
                })
                .collect(),
        ),
    );
    m.insert(
        "limits_hit".into(),
        Value::Array(v.limits_hit.iter().map(|l| json!({"limit": l.limit, "object": l.object, "detail": l.detail})).collect()),
    );
    m.insert(
        "executables".into(),
        Value::Array(
            v.executables
                .iter()
                .map(|e| {
                    json!({
                        "object": e.object, "format": e.format, "arch": e.arch, "is_64": e.is_64,
                        "entry_point": e.entry_point, "entry_section": e.entry_section,
                        "imports": e.imports, "exports": e.exports,
                        "import_names": e.import_names, "export_names": e.export_names,
                        "overlay_size": e.overlay_size, "resources": e.resources, "signed": e.signed, "facts": e.facts,
                        "sections": e.sections.iter().map(|s| json!({
                            "name": s.name, "virtual_address": s.virtual_address, "virtual_size": s.virtual_size,
                            "raw_size": s.raw_size, "entropy": (s.entropy * 1000.0).round() / 1000.0, "flags": s.flags,
                        })).collect::<Vec<_>>(),
                        "error": if e.error.is_empty() { Value::Null } else { json!(e.error) },
                    })
                })
                .collect(),
        ),
    );
    m.insert("errors".into(), json!(v.errors));
    m.insert("encrypted".into(), json!(v.encrypted));
    m.insert(
        "object_meta".into(),
        Value::Array(v.object_meta.iter().map(|o| json!({"object": o.object, "meta": o.meta})).collect()),
    );
    if let Some(i) = &v.ioc {
        m.insert("ioc".into(), json!({"list": i.list, "kind": i.kind, "digest": i.digest, "name": i.name, "object": i.object}));
    }
    if !v.objects.is_empty() {
        m.insert(
            "objects".into(),
            Value::Array(
                v.objects
                    .iter()
                    .map(|o| {
                        json!({"object": o.object, "parent": o.parent, "sha256": o.sha256, "md5": o.md5,
                               "sha1": o.sha1, "truncated": o.truncated})
                    })
                    .collect(),
            ),
        );
        m.insert("objects_truncated".into(), json!(v.objects_truncated));
    }
    m.insert("partial".into(), json!(v.partial));
    m.insert("md5".into(), json!(v.md5));
    m.insert("sha1".into(), json!(v.sha1));
    m.insert("file_type".into(), json!(v.file_type));
    m.insert("objects_scanned".into(), json!(v.objects_scanned));
    m.insert("ruleset_id".into(), json!(v.ruleset_id));
    m.insert("engine_version".into(), json!(v.engine_version));
    m.insert("worker_id".into(), json!(v.worker_id));
    m.insert("scan_duration_us".into(), json!(v.scan_duration_us));
    m.insert("scanned_at_ms".into(), json!(v.scanned_at_ms));
    m
}

/// `s` safe to print on a terminal or in a log: control characters (C0,
/// DEL, C1: escape sequences start with them) and the bidirectional
/// overrides that make text read other than it is are written as `\u{..}`.
/// Paths, member names, rule names and errors all come from files or
/// servers the agent does not control.
pub fn safe(s: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if !s.chars().any(bad) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if bad(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Short text description of a verdict: `malicious: Rule (object), ...`,
/// every part from the verdict made [`safe`].
pub fn verdict_text(v: &pb::Verdict) -> String {
    let mut s = kind(v).label().to_string();
    if !v.detections.is_empty() {
        let list: Vec<String> = v
            .detections
            .iter()
            .map(|d| {
                let mut s = match d.object.as_str() {
                    "" => format!("{}/{}", safe(&d.namespace), safe(&d.rule)),
                    object => format!("{}/{} [{}]", safe(&d.namespace), safe(&d.rule), safe(object)),
                };
                if !d.techniques.is_empty() {
                    s.push_str(&format!(" {{{}}}", safe(&d.techniques.join(","))));
                }
                s
            })
            .collect();
        s.push_str(": ");
        s.push_str(&list.join(", "));
    }
    if !v.limits_hit.is_empty() {
        let list: Vec<String> = v.limits_hit.iter().map(|l| format!("{} at {}", safe(&l.limit), safe(&l.object))).collect();
        s.push_str(&format!(" (limits hit: {})", list.join(", ")));
    }
    if let Some(i) = v.ioc.as_ref().filter(|i| i.list == "allow") {
        let name = if i.name.is_empty() { String::new() } else { format!(" {:?}", safe(&i.name)) };
        let at = if i.object.is_empty() { String::new() } else { format!(" for {}", safe(&i.object)) };
        s.push_str(&format!(" (allow list{name}{at})"));
    }
    if kind(v) == VerdictKind::Unscannable && !v.errors.is_empty() {
        s.push_str(&format!(" ({})", safe(&v.errors.join("; "))));
    }
    s
}

#[derive(Default, Debug)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    pub clean: u64,
    pub suspicious: u64,
    pub malicious: u64,
    pub unscannable: u64,
    pub errors: u64,
    pub cached: u64,
    pub uploaded_files: u64,
    pub uploaded_bytes: u64,
    /// Left out by a rule of the walk (exclusions, size cap, not a file).
    pub skipped: u64,
    /// Not known to the cluster and not uploaded (`--lookup-only`, private paths).
    pub unknown: u64,
    /// File content read to hash (not counting uploads).
    pub read_bytes: u64,
    /// Files whose digest came from the hash cache (stat unchanged).
    pub from_hash_cache: u64,
    /// `rchar` of `/proc/self/io` at the end: every byte read(2) returned.
    pub rchar: u64,
}

impl Summary {
    pub fn add(&mut self, r: &FileResult) {
        self.files += 1;
        self.bytes += r.size;
        match &r.outcome {
            Err(_) => self.errors += 1,
            Ok(v) => match kind(v) {
                VerdictKind::Clean => self.clean += 1,
                VerdictKind::Suspicious => self.suspicious += 1,
                VerdictKind::Malicious => self.malicious += 1,
                _ => self.unscannable += 1,
            },
        }
        if r.cached {
            self.cached += 1;
        }
        if r.uploaded > 0 {
            self.uploaded_files += 1;
            self.uploaded_bytes += r.uploaded;
        }
    }

    pub fn exit_code(&self) -> i32 {
        if self.malicious + self.suspicious > 0 {
            crate::exit::DETECTED
        } else if self.errors + self.unscannable > 0 {
            crate::exit::ERROR
        } else {
            crate::exit::CLEAN
        }
    }

    pub fn line(&self, secs: f64) -> String {
        format!(
            "scanned {} files ({} bytes) in {:.2}s: {} clean, {} suspicious, {} malicious, {} unscannable, {} errors; {} answered from cache, {} uploaded ({} bytes); {} skipped, {} unknown (not uploaded); read {} bytes of file content ({} files from the hash cache; rchar {})",
            self.files,
            self.bytes,
            secs,
            self.clean,
            self.suspicious,
            self.malicious,
            self.unscannable,
            self.errors,
            self.cached,
            self.uploaded_files,
            self.uploaded_bytes,
            self.skipped,
            self.unknown,
            self.read_bytes,
            self.from_hash_cache,
            self.rchar
        )
    }
}

/// A file the walk left out on purpose, and why.
pub fn print_skipped(path: &std::path::Path, reason: &str, json: bool) {
    let line = if json {
        json!({"path": path.display().to_string(), "verdict": "skipped", "reason": reason}).to_string()
    } else {
        format!("{}: skipped ({})", safe(&path.display().to_string()), safe(reason))
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// A file the cluster does not know and the agent may not upload.
pub fn print_unknown(path: &std::path::Path, sha256: &str, size: u64, json: bool) {
    let line = if json {
        json!({"path": path.display().to_string(), "sha256": sha256, "size": size, "verdict": "unknown", "uploaded": 0})
            .to_string()
    } else {
        format!("{}: unknown (not uploaded)", safe(&path.display().to_string()))
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

pub fn print_result(r: &FileResult, json: bool) {
    let line = if json {
        let mut m = serde_json::Map::new();
        m.insert("path".into(), json!(r.path.display().to_string()));
        m.insert("sha256".into(), json!(r.sha256));
        m.insert("size".into(), json!(r.size));
        match &r.outcome {
            Ok(v) => m.extend(verdict_json(v)),
            Err(e) => {
                m.insert("verdict".into(), json!("error"));
                m.insert("error".into(), json!(e));
                m.insert("detections".into(), json!([]));
                m.insert("limits_hit".into(), json!([]));
            }
        }
        m.insert("cached".into(), json!(r.cached));
        m.insert("uploaded".into(), json!(r.uploaded));
        Value::Object(m).to_string()
    } else {
        match &r.outcome {
            Ok(v) => {
                let note = match (r.cached, v.partial) {
                    (true, true) => " (cached, partial)",
                    (true, false) => " (cached)",
                    _ => "",
                };
                format!("{}: {}{note}", safe(&r.path.display().to_string()), verdict_text(v))
            }
            Err(e) => format!("{}: error: {}", safe(&r.path.display().to_string()), safe(e)),
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_output_escapes_control_characters_and_bidi_overrides() {
        assert_eq!(safe("plain/path.txt"), "plain/path.txt");
        assert_eq!(safe("a\x1b[31mred\x07"), "a\\u{1b}[31mred\\u{7}");
        assert_eq!(safe("inv\u{202E}fdp.exe"), "inv\\u{202e}fdp.exe");
        assert_eq!(safe("csi\u{9b}2J"), "csi\\u{9b}2J");
        let v = pb::Verdict {
            verdict: VerdictKind::Malicious as i32,
            detections: vec![pb::Detection {
                rule: "R\x1b]0;owned\x07".into(),
                namespace: "ns".into(),
                object: "x.zip/\x1b[2Jevil".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let text = verdict_text(&v);
        assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
        assert!(text.contains("\\u{1b}[2Jevil"), "{text}");
    }
}

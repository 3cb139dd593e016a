//! Engine report -> wire verdict.

use qala_engine::{Report, Severity};
use qala_proto::v1 as pb;
use qala_proto::{Unscannable, limits};

fn kind(s: Option<Severity>) -> pb::VerdictKind {
    match s {
        None => pb::VerdictKind::Unscannable,
        Some(Severity::Clean) => pb::VerdictKind::Clean,
        Some(Severity::Suspicious) => pb::VerdictKind::Suspicious,
        Some(Severity::Malicious) => pb::VerdictKind::Malicious,
    }
}

pub fn verdict(report: Report, ruleset_id: &str, worker_id: &str) -> pb::Verdict {
    let mut v = pb::Verdict {
        sha256: report.sha256,
        md5: report.md5,
        sha1: report.sha1,
        size: report.size,
        verdict: kind(report.verdict) as i32,
        detections: report
            .detections
            .into_iter()
            .map(|d| pb::Detection {
                rule: d.rule,
                namespace: d.namespace,
                tags: d.tags,
                meta: d.meta.into_iter().collect(),
                object: d.object,
                severity: kind(Some(d.severity)) as i32,
                techniques: d.techniques,
            })
            .collect(),
        executables: report
            .executables
            .into_iter()
            .map(|e| pb::ExecutableSummary {
                object: e.object,
                format: e.format.to_string(),
                arch: e.arch,
                is_64: e.is_64,
                entry_point: e.entry_point,
                sections: e
                    .sections
                    .into_iter()
                    .map(|s| pb::Section {
                        name: s.name,
                        virtual_address: s.virtual_address,
                        virtual_size: s.virtual_size,
                        raw_size: s.raw_size,
                        entropy: s.entropy,
                        flags: s.flags,
                    })
                    .collect(),
                imports: e.imports,
                exports: e.exports,
                error: e.error.unwrap_or_default(),
                entry_section: e.entry_section.unwrap_or_default(),
                import_names: e.import_names,
                export_names: e.export_names,
                overlay_size: e.overlay_size,
                resources: e.resources,
                signed: e.signed,
                facts: e.facts,
            })
            .collect(),
        limits_hit: report
            .limits_hit
            .into_iter()
            .map(|l| pb::LimitHit { limit: l.limit.as_str().to_string(), object: l.object, detail: l.detail })
            .collect(),
        ruleset_id: ruleset_id.to_string(),
        engine_version: qala_engine::ENGINE_VERSION.to_string(),
        scan_duration_us: report.duration.as_micros() as u64,
        scanned_at_ms: qala_common::now_ms(),
        file_type: report.file_type.to_string(),
        objects_scanned: report.objects_scanned,
        errors: report.errors,
        encrypted: report.encrypted,
        object_meta: report
            .object_meta
            .into_iter()
            .map(|m| pb::ObjectMeta { object: m.object, meta: m.meta.into_iter().collect() })
            .collect(),
        objects: report
            .objects
            .into_iter()
            .map(|o| pb::ObjectDigests {
                object: o.object,
                parent: o.parent,
                sha256: hex::encode(o.sha256),
                md5: o.md5.map(hex::encode).unwrap_or_default(),
                sha1: o.sha1.map(hex::encode).unwrap_or_default(),
                truncated: o.truncated,
            })
            .collect(),
        objects_md5: report.object_digest_kinds.md5,
        objects_sha1: report.object_digest_kinds.sha1,
        worker_id: worker_id.to_string(),
        ..Default::default()
    };
    bound(&mut v);
    v
}

/// The verdict of a file that killed its scan child each time it was
/// scanned alone: unscannable, limit `worker_crash`. The coordinator puts
/// its sha256 on the poison list and sends it to no other worker.
pub fn crashed(sha256: String, size: u64, ruleset_id: &str, worker_id: &str, detail: &str) -> pb::Verdict {
    let error = format!("the scan process died on this file each time: {detail}");
    let unscannable = Unscannable { limit: limits::WORKER_CRASH, detail: detail.to_string(), error };
    let mut v = unscannable.verdict(&sha256, size, ruleset_id, qala_engine::ENGINE_VERSION, worker_id);
    bound(&mut v);
    v
}

/// Longest string kept in a verdict (names, paths, meta values, errors).
const MAX_TEXT: usize = 1024;
/// Most entries kept in each list of a verdict.
const MAX_LIST: usize = 1000;
/// Most objects listed with their digests (the engine's own default
/// object limit).
const MAX_OBJECTS: usize = 10_000;
/// A verdict's encoded size is kept under this, well below the 16 MiB
/// message cap, so it always encodes (and leaves room in a `Lookup`).
pub const MAX_VERDICT_BYTES: usize = 4 << 20;

fn cut(s: &mut String) -> bool {
    if s.len() <= MAX_TEXT {
        return false;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push_str("...[truncated]");
    true
}

fn cap<T>(list: &mut Vec<T>, max: usize) -> usize {
    let dropped = list.len().saturating_sub(max);
    list.truncate(max);
    dropped
}

/// Drop the second half of `list`; how many were dropped.
fn halve<T>(list: &mut Vec<T>) -> usize {
    let keep = list.len() / 2;
    cap(list, keep)
}

/// Cap every name, path, list and the whole verdict's size, so that a file
/// with huge names or countless sections, members or detections still gets
/// a verdict that encodes; what was cut is said in `errors`.
pub fn bound(v: &mut pb::Verdict) {
    let mut notes = Vec::new();
    let listed = v.objects.len();
    let mut texts = 0;
    for d in &mut v.detections {
        for s in [&mut d.rule, &mut d.namespace, &mut d.object].into_iter().chain(d.tags.iter_mut()).chain(d.meta.values_mut()) {
            texts += cut(s) as usize;
        }
        let extra: Vec<String> = d.meta.keys().skip(64).cloned().collect();
        for k in extra {
            d.meta.remove(&k);
        }
    }
    for e in &mut v.executables {
        texts += cut(&mut e.object) as usize + cut(&mut e.error) as usize + cut(&mut e.entry_section) as usize;
        for s in e.import_names.iter_mut().chain(e.export_names.iter_mut()).chain(e.facts.iter_mut()) {
            texts += cut(s) as usize;
        }
        for sec in &mut e.sections {
            texts += cut(&mut sec.name) as usize;
        }
        cap(&mut e.sections, MAX_LIST);
        cap(&mut e.facts, MAX_LIST);
    }
    for l in &mut v.limits_hit {
        texts += cut(&mut l.object) as usize + cut(&mut l.detail) as usize;
    }
    for s in v.errors.iter_mut().chain(v.encrypted.iter_mut()) {
        texts += cut(s) as usize;
    }
    for m in &mut v.object_meta {
        texts += cut(&mut m.object) as usize;
        for s in m.meta.values_mut() {
            texts += cut(s) as usize;
        }
    }
    for o in &mut v.objects {
        texts += cut(&mut o.object) as usize;
    }
    if texts > 0 {
        notes.push(format!("{texts} names or messages cut at {MAX_TEXT} bytes"));
    }
    for (what, dropped) in [
        ("detections", cap(&mut v.detections, MAX_LIST)),
        ("executable summaries", cap(&mut v.executables, MAX_LIST)),
        ("limits hit", cap(&mut v.limits_hit, MAX_LIST)),
        ("errors", cap(&mut v.errors, MAX_LIST)),
        ("encrypted members", cap(&mut v.encrypted, MAX_LIST)),
        ("object metadata", cap(&mut v.object_meta, MAX_LIST)),
        ("object digests", cap(&mut v.objects, MAX_OBJECTS)),
    ] {
        if dropped > 0 {
            notes.push(format!("{dropped} {what} left out"));
        }
    }
    // Still too large (many long entries): halve the largest list until it fits.
    use prost::Message;
    while v.encoded_len() > MAX_VERDICT_BYTES {
        let sizes = [
            v.detections.iter().map(Message::encoded_len).sum::<usize>(),
            v.executables.iter().map(Message::encoded_len).sum::<usize>(),
            v.object_meta.iter().map(Message::encoded_len).sum::<usize>(),
            v.encrypted.iter().map(String::len).sum::<usize>() + v.errors.iter().map(String::len).sum::<usize>(),
            v.objects.iter().map(Message::encoded_len).sum::<usize>(),
        ];
        let largest = (0..5).max_by_key(|&i| sizes[i]).unwrap_or(0);
        let n = match largest {
            0 => halve(&mut v.detections),
            1 => halve(&mut v.executables),
            2 => halve(&mut v.object_meta),
            4 => halve(&mut v.objects),
            _ => halve(&mut v.encrypted) + halve(&mut v.errors),
        };
        if n == 0 {
            break;
        }
        notes.push(format!("{n} more entries left out to keep the verdict under {MAX_VERDICT_BYTES} bytes"));
    }
    // Some objects unlisted: IOC allow entries no longer apply inside.
    v.objects_truncated |= v.objects.len() < listed;
    if !notes.is_empty() {
        v.errors.push(format!("verdict truncated: {}", notes.join("; ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn a_huge_verdict_is_bounded_and_says_so() {
        let long = "x".repeat(100_000);
        let mut v = pb::Verdict {
            verdict: pb::VerdictKind::Malicious as i32,
            detections: (0..20_000)
                .map(|i| pb::Detection {
                    rule: format!("R{i}"),
                    object: long.clone(),
                    meta: (0..100).map(|k| (format!("k{k}"), long[..500].to_string())).collect(),
                    ..Default::default()
                })
                .collect(),
            executables: vec![pb::ExecutableSummary {
                sections: (0..65_535).map(|i| pb::Section { name: format!("s{i}"), ..Default::default() }).collect(),
                ..Default::default()
            }],
            errors: vec![long.clone(); 5000],
            ..Default::default()
        };
        assert!(v.encoded_len() > qala_proto::MAX_MESSAGE_BYTES);
        bound(&mut v);
        assert!(v.encoded_len() <= MAX_VERDICT_BYTES, "{}", v.encoded_len());
        assert!(v.detections.len() <= MAX_LIST && !v.detections.is_empty());
        assert!(v.detections[0].object.ends_with("[truncated]") && v.detections[0].meta.len() <= 64);
        assert!(v.executables[0].sections.len() <= MAX_LIST);
        assert!(v.errors.last().unwrap().starts_with("verdict truncated:"), "{:?}", v.errors.last());
        // An archive of countless members with long names: its object list
        // is cut (10,000 at most, then to fit) and says so.
        let object = |i: usize| pb::ObjectDigests {
            object: format!("{i}/{}", &long[..2000]),
            sha256: "a".repeat(64),
            ..Default::default()
        };
        let mut v = pb::Verdict { objects: (0..20_000).map(object).collect(), ..Default::default() };
        bound(&mut v);
        assert!(v.encoded_len() <= MAX_VERDICT_BYTES && !v.objects.is_empty() && v.objects.len() <= MAX_OBJECTS);
        assert!(v.objects_truncated && v.objects[0].object.ends_with("[truncated]"));
        let mut v = pb::Verdict { objects: (0..10).map(object).collect(), ..Default::default() };
        v.objects.iter_mut().for_each(|o| o.object.truncate(10));
        bound(&mut v);
        assert!(!v.objects_truncated && v.objects.len() == 10);
        // A small verdict is left alone.
        let mut small = pb::Verdict { errors: vec!["one".into()], ..Default::default() };
        bound(&mut small);
        assert_eq!(small.errors, ["one"]);
    }
}

//! Engine report -> wire verdict.

use qala_engine::{Report, Severity};
use qala_proto::v1 as pb;

fn kind(s: Option<Severity>) -> pb::VerdictKind {
    match s {
        None => pb::VerdictKind::Unscannable,
        Some(Severity::Clean) => pb::VerdictKind::Clean,
        Some(Severity::Suspicious) => pb::VerdictKind::Suspicious,
        Some(Severity::Malicious) => pb::VerdictKind::Malicious,
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

pub fn verdict(report: Report, ruleset_id: &str, worker_id: &str) -> pb::Verdict {
    pb::Verdict {
        sha256: report.sha256,
        blake3: report.blake3,
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
        scanned_at_ms: now_ms(),
        file_type: report.file_type.to_string(),
        objects_scanned: report.objects_scanned,
        errors: report.errors,
        encrypted: report.encrypted,
        object_meta: report
            .object_meta
            .into_iter()
            .map(|m| pb::ObjectMeta { object: m.object, meta: m.meta.into_iter().collect() })
            .collect(),
        worker_id: worker_id.to_string(),
    }
}

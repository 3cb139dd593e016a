//! The REST API's JSON documents: what an analyst's script reads. Built
//! from the protobuf records, with names and levels spelled out
//! (`"malicious"`, not 3), and described in the OpenAPI document.

use qala_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// An error: a stable machine-readable `code` and a message for people.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    /// `invalid_argument`, `unauthenticated`, `permission_denied`,
    /// `not_found`, `too_large`, `busy`, `unavailable`, `timeout`,
    /// `cancelled`, `internal`.
    pub code: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Detection {
    pub rule: String,
    pub namespace: String,
    /// Path of the object inside the submission ("" for the file itself).
    pub object: String,
    /// `clean`, `suspicious` or `malicious`: what this detection alone implies.
    pub severity: String,
    pub tags: Vec<String>,
    /// MITRE ATT&CK technique ids from the rule's meta.
    pub techniques: Vec<String>,
    pub meta: BTreeMap<String, String>,
}

impl From<&pb::Detection> for Detection {
    fn from(d: &pb::Detection) -> Self {
        Detection {
            rule: d.rule.clone(),
            namespace: d.namespace.clone(),
            object: d.object.clone(),
            severity: pb::VerdictKind::try_from(d.severity).unwrap_or_default().label().into(),
            tags: d.tags.clone(),
            techniques: d.techniques.clone(),
            meta: d.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LimitHit {
    pub limit: String,
    pub object: String,
    pub detail: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Verdict {
    pub sha256: String,
    pub sha1: String,
    pub md5: String,
    pub size: u64,
    /// `clean`, `suspicious`, `malicious` or `unscannable`.
    pub verdict: String,
    pub detections: Vec<Detection>,
    pub limits_hit: Vec<LimitHit>,
    pub errors: Vec<String>,
    pub encrypted: Vec<String>,
    pub file_type: String,
    pub objects_scanned: u32,
    pub ruleset_id: String,
    pub engine_version: String,
    pub worker_id: String,
    pub scanned_at_ms: i64,
    /// Kept only until `expires_at_ms` (0: for good); `partial`: some part
    /// was not looked at.
    pub partial: bool,
    pub expires_at_ms: i64,
    /// Set when a hash IOC list decided this answer.
    pub ioc: Option<IocMatch>,
    /// Every distinct object inside the file, with its digests (md5/sha1
    /// only while block lists of that kind exist).
    pub objects: Vec<ObjectDigests>,
    /// Some objects were left out of `objects` (more than 10,000).
    pub objects_truncated: bool,
    /// What the engine read of each executable object.
    pub executables: Vec<Executable>,
    /// Metadata of objects that carry some (a message's headers).
    pub object_meta: Vec<ObjectMeta>,
    /// Microseconds the worker spent on it.
    pub scan_duration_us: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Section {
    pub name: String,
    pub virtual_address: u64,
    pub virtual_size: u64,
    pub raw_size: u64,
    pub entropy: f64,
    /// `r`, `w`, `x` or `-` for each.
    pub flags: String,
}

/// One executable object of the submission.
#[derive(Debug, Serialize, ToSchema)]
pub struct Executable {
    pub object: String,
    /// `pe`, `elf`, `macho`.
    pub format: String,
    pub arch: String,
    pub is_64: bool,
    pub entry_point: u64,
    pub entry_section: String,
    pub sections: Vec<Section>,
    pub imports: u32,
    pub exports: u32,
    /// `library!name`, at most 1,000.
    pub import_names: Vec<String>,
    pub export_names: Vec<String>,
    pub overlay_size: u64,
    pub resources: u32,
    /// An Authenticode directory is present (not verified).
    pub signed: bool,
    pub facts: Vec<String>,
    /// Set when the object could not be parsed.
    pub error: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectMeta {
    pub object: String,
    pub meta: BTreeMap<String, String>,
}

impl From<&pb::ExecutableSummary> for Executable {
    fn from(e: &pb::ExecutableSummary) -> Self {
        Executable {
            object: e.object.clone(),
            format: e.format.clone(),
            arch: e.arch.clone(),
            is_64: e.is_64,
            entry_point: e.entry_point,
            entry_section: e.entry_section.clone(),
            sections: e
                .sections
                .iter()
                .map(|s| Section {
                    name: s.name.clone(),
                    virtual_address: s.virtual_address,
                    virtual_size: s.virtual_size,
                    raw_size: s.raw_size,
                    entropy: s.entropy,
                    flags: s.flags.clone(),
                })
                .collect(),
            imports: e.imports,
            exports: e.exports,
            import_names: e.import_names.clone(),
            export_names: e.export_names.clone(),
            overlay_size: e.overlay_size,
            resources: e.resources,
            signed: e.signed,
            facts: e.facts.clone(),
            error: e.error.clone(),
        }
    }
}

/// The IOC list entry that decided a verdict.
#[derive(Debug, Serialize, ToSchema)]
pub struct IocMatch {
    /// `block` (answered malicious) or `allow` (false-positive override).
    pub list: String,
    /// `sha256`, `sha1` or `md5`.
    pub kind: String,
    pub digest: String,
    pub name: String,
    /// The object inside the file it names; "" for the file itself.
    pub object: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ObjectDigests {
    /// Path inside the file.
    pub object: String,
    /// 1-based index in `objects` of its container; 0: the file itself.
    pub parent: u32,
    pub sha256: String,
    pub md5: String,
    pub sha1: String,
    /// Read only in part (a limit): digests of the bytes read.
    pub truncated: bool,
}

impl From<&pb::Verdict> for Verdict {
    fn from(v: &pb::Verdict) -> Self {
        Verdict {
            sha256: v.sha256.clone(),
            sha1: v.sha1.clone(),
            md5: v.md5.clone(),
            size: v.size,
            verdict: qala_proto::VerdictKind::of(v).label().into(),
            detections: v.detections.iter().map(Detection::from).collect(),
            limits_hit: v
                .limits_hit
                .iter()
                .map(|l| LimitHit { limit: l.limit.clone(), object: l.object.clone(), detail: l.detail.clone() })
                .collect(),
            errors: v.errors.clone(),
            encrypted: v.encrypted.clone(),
            file_type: v.file_type.clone(),
            objects_scanned: v.objects_scanned,
            ruleset_id: v.ruleset_id.clone(),
            engine_version: v.engine_version.clone(),
            worker_id: v.worker_id.clone(),
            scanned_at_ms: v.scanned_at_ms,
            partial: v.partial,
            expires_at_ms: v.expires_at_ms,
            ioc: v.ioc.as_ref().map(|m| IocMatch {
                list: m.list.clone(),
                kind: m.kind.clone(),
                digest: m.digest.clone(),
                name: m.name.clone(),
                object: m.object.clone(),
            }),
            objects: v
                .objects
                .iter()
                .map(|o| ObjectDigests {
                    object: o.object.clone(),
                    parent: o.parent,
                    sha256: o.sha256.clone(),
                    md5: o.md5.clone(),
                    sha1: o.sha1.clone(),
                    truncated: o.truncated,
                })
                .collect(),
            objects_truncated: v.objects_truncated,
            executables: v.executables.iter().map(Executable::from).collect(),
            object_meta: v
                .object_meta
                .iter()
                .map(|m| ObjectMeta {
                    object: m.object.clone(),
                    meta: m.meta.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                })
                .collect(),
            scan_duration_us: v.scan_duration_us,
        }
    }
}

/// `GET /v1/verdicts/{hash}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct VerdictsByHash {
    pub hash: String,
    /// `sha256`, `sha1` or `md5`.
    pub kind: String,
    pub ruleset_id: String,
    /// Every file with that digest (an md5 or sha1 may name several).
    pub verdicts: Vec<Verdict>,
}

/// `POST /v1/lookup`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct LookupRequest {
    /// sha256, sha1 or md5 digests (hex), at most 10,000.
    pub hashes: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LookupResult {
    pub hash: String,
    pub kind: String,
    /// Empty when the file is unknown under the current rules.
    pub verdicts: Vec<Verdict>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LookupResponse {
    pub ruleset_id: String,
    pub results: Vec<LookupResult>,
}

/// `POST /v1/scan`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScanResponse {
    /// Answered from the store or another scan of the same content.
    pub cached: bool,
    pub verdict: Verdict,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DetectionEvent {
    pub at_ms: i64,
    pub sha256: String,
    pub sha1: String,
    pub md5: String,
    pub verdict: String,
    pub size: u64,
    pub file_type: String,
    pub ruleset_id: String,
    pub worker_id: String,
    pub detections: Vec<Detection>,
}

impl From<&pb::DetectionEvent> for DetectionEvent {
    fn from(e: &pb::DetectionEvent) -> Self {
        DetectionEvent {
            at_ms: e.at_ms,
            sha256: e.sha256.clone(),
            sha1: e.sha1.clone(),
            md5: e.md5.clone(),
            verdict: pb::VerdictKind::try_from(e.verdict).unwrap_or_default().label().into(),
            size: e.size,
            file_type: e.file_type.clone(),
            ruleset_id: e.ruleset_id.clone(),
            worker_id: e.worker_id.clone(),
            detections: e.detections.iter().map(Detection::from).collect(),
        }
    }
}

/// `GET /v1/detections`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DetectionsPage {
    pub events: Vec<DetectionEvent>,
    /// Pass as `since` for the next page; absent on the last page.
    pub next_since: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Worker {
    pub worker_id: String,
    pub address: String,
    pub threads: u32,
    /// Scans in progress on it.
    pub in_flight: u64,
    pub scanned: u64,
    /// Bytes it scanned since it started.
    pub bytes_scanned: u64,
    /// Its 99th percentile scan time over the last five minutes (ms).
    pub p99_ms: f64,
    pub ruleset_id: String,
    pub last_heartbeat_ms: i64,
}

/// `GET /v1/cluster`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterStatus {
    pub version: String,
    pub ruleset_id: String,
    pub workers: Vec<Worker>,
    /// Scan threads in all, and busy.
    pub threads: u64,
    pub busy_threads: u64,
    pub store: String,
    pub store_healthy: bool,
    pub store_error: String,
    pub busy_rejections: u64,
    /// Scan calls this coordinator answered from the store (or another scan
    /// in flight), and those a worker scanned, since it started.
    pub cache_hits: u64,
    pub cache_misses: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleFile {
    pub path: String,
    pub bytes: u64,
}

/// A compile error or warning of one rule file.
#[derive(Debug, Serialize, ToSchema)]
pub struct RuleError {
    pub path: String,
    /// The line it points at (0: none given).
    pub line: u32,
    pub message: String,
}

impl RuleError {
    /// From a compiler report, whose ` --> file:line:col` names the line.
    pub fn of(path: String, message: String) -> Self {
        RuleError { line: line_of(&message), path, message }
    }
}

/// The line in a yara-x report's first ` --> origin:line:col`.
pub fn line_of(message: &str) -> u32 {
    message
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("--> "))
        .and_then(|loc| {
            let mut parts = loc.rsplitn(3, ':');
            let _col = parts.next()?;
            parts.next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// `GET /v1/rules`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RulesStatus {
    pub ruleset_id: String,
    pub rule_count: u32,
    pub file_count: u32,
    pub loaded_at_ms: i64,
    pub files: Vec<RuleFile>,
    /// Errors of the last reload that failed (the ruleset above stays in force).
    pub last_errors: Vec<RuleError>,
    pub last_error_at_ms: i64,
    /// The compiler's warnings on the rules in force.
    pub warnings: Vec<RuleError>,
}

/// One agent holding a content (`GET /v1/sightings/{hash}`).
#[derive(Debug, Serialize, ToSchema)]
pub struct Holder {
    pub agent_id: String,
    pub hostname: String,
    pub sha256: String,
    pub first_seen_ms: i64,
    /// The agent held it as of this time.
    pub last_seen_ms: i64,
    /// The agent's last check-in (0: none recorded).
    pub last_checkin_ms: i64,
    /// False once the agent no longer holds it (listed for its action).
    pub holds: bool,
    /// The agent's last action on it (`quarantine`, `delete`, ...), if any.
    pub action: Option<String>,
    pub action_ms: Option<i64>,
}

/// `GET /v1/sightings/{hash}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Sightings {
    pub hash: String,
    /// The sha256s the hash names (an md5 or sha1 may name several).
    pub sha256s: Vec<String>,
    pub holders: Vec<Holder>,
}

impl Sightings {
    pub fn from(hash: String, r: &pb::SightingsResponse) -> Self {
        let holders = r
            .holders
            .iter()
            .map(|h| Holder {
                agent_id: h.agent_id.clone(),
                hostname: h.hostname.clone(),
                sha256: h.sha256.clone(),
                first_seen_ms: h.first_seen_ms,
                last_seen_ms: h.last_seen_ms,
                last_checkin_ms: h.last_checkin_ms,
                holds: h.holds,
                action: (!h.action.is_empty()).then(|| h.action.clone()),
                action_ms: (!h.action.is_empty()).then_some(h.action_ms),
            })
            .collect();
        Sightings { hash, sha256s: r.sha256s.clone(), holders }
    }
}

/// A content an agent holds that is a detection now.
#[derive(Debug, Serialize, ToSchema)]
pub struct Held {
    pub sha256: String,
    pub verdict: String,
    pub rules: Vec<String>,
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

/// An agent's inventory record.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentRecord {
    pub agent_id: String,
    pub hostname: String,
    pub os: String,
    pub version: String,
    pub enrolled_ms: i64,
    pub last_checkin_ms: i64,
    pub actions: u64,
    pub last_action_ms: i64,
}

impl From<pb::AgentRecord> for AgentRecord {
    fn from(a: pb::AgentRecord) -> Self {
        AgentRecord {
            agent_id: a.agent_id,
            hostname: a.hostname,
            os: a.os,
            version: a.version,
            enrolled_ms: a.enrolled_ms,
            last_checkin_ms: a.last_seen_ms,
            actions: a.actions,
            last_action_ms: a.last_action_ms,
        }
    }
}

/// `GET /v1/agents/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Agent {
    #[serde(flatten)]
    pub record: AgentRecord,
    /// Sightings of this agent read (most recent first).
    pub sightings: u64,
    /// The per-agent cap dropped some of its sightings.
    pub truncated: bool,
    pub detections: Vec<Held>,
}

/// One agent of the fleet (`GET /v1/agents`).
#[derive(Debug, Serialize, ToSchema)]
pub struct FleetAgent {
    #[serde(flatten)]
    pub record: AgentRecord,
    /// Contents it holds that are detections now (absent when not counted:
    /// fleets of over 500 agents; open the agent).
    pub detections: Option<u64>,
}

/// `GET /v1/agents`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Fleet {
    pub agents: Vec<FleetAgent>,
}

impl From<&pb::GetAgentResponse> for Agent {
    fn from(r: &pb::GetAgentResponse) -> Self {
        Agent {
            record: AgentRecord::from(r.agent.clone().unwrap_or_default()),
            sightings: r.sightings,
            truncated: r.truncated,
            detections: r
                .detections
                .iter()
                .map(|h| Held {
                    sha256: h.sha256.clone(),
                    verdict: pb::VerdictKind::try_from(h.verdict).unwrap_or_default().label().into(),
                    rules: h.rules.clone(),
                    first_seen_ms: h.first_seen_ms,
                    last_seen_ms: h.last_seen_ms,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_read_from_the_report() {
        let m = "warning[slow_pattern]: slow pattern\n --> /etc/qala/rules/a b:c.yar:12:5\n  |\n12 | $a";
        assert_eq!(line_of(m), 12);
        assert_eq!(line_of("no location"), 0);
        assert_eq!(RuleError::of("x".into(), m.into()).line, 12);
    }
}

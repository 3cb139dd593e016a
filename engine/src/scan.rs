//! One submission, start to end: hashing, type detection, rules, executable
//! summaries and recursive unpacking under limits.

use crate::archive::{Slot, ar_members, cpio_members, iso_members};
use crate::docs;
use crate::exe::{panic_message, summarize_executable};
use crate::filetype::FileType;
use crate::hash::Hasher;
use crate::limits::{Limit, Limits};
use crate::mail;
use crate::report::{Detection, LimitHit, ObjectMeta, Report, Severity};
use crate::rules::{
    GLOBAL_DEPTH, GLOBAL_EXE_FACTS, GLOBAL_EXE_OVERLAY, GLOBAL_EXE_SIGNED, GLOBAL_FILE_TYPE, GLOBAL_FILENAME, GLOBAL_PARENT_TYPE,
    Ruleset,
};
use crate::unpack::{Codec, Ole2, read_capped, tar_members};
use crate::unzip::{MemberData, ZipReader};
use std::borrow::Cow;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

/// yara-x keeps up to a million matches per pattern by default; a long run of
/// one byte against public rule sets then costs seconds and tens of MB. We
/// only need to know that a rule matched.
const MAX_MATCHES_PER_PATTERN: usize = 1_000;

/// The compression-ratio cap only bites above this many extracted bytes:
/// small, very repetitive members (a few KiB of spaces) are normal and cheap.
const RATIO_FLOOR: u64 = 1024 * 1024;

/// The scan state of one thread: a reused yara-x scanner bound to one
/// ruleset, and the limits. Create one per thread and per ruleset (creating a
/// scanner costs ~0.5 ms); `scan` it many times.
pub struct Engine<'r> {
    ruleset: &'r Ruleset,
    scanner: yara_x::Scanner<'r>,
    limits: Limits,
    /// The scanner's timeout for the object being scanned.
    timeout: Duration,
}

/// Per-submission bookkeeping.
struct Walk {
    started: Instant,
    /// Set when the submission's time budget ran out: nothing more is read.
    out_of_time: bool,
    objects: u32,
    extracted: u64,
    /// blake3 of every object already scanned in this submission.
    seen: HashSet<[u8; 32]>,
    detections: Vec<Detection>,
    executables: Vec<crate::exe::ExecutableSummary>,
    limits_hit: Vec<LimitHit>,
    errors: Vec<String>,
    encrypted: Vec<String>,
    object_meta: Vec<ObjectMeta>,
    root_unscanned: bool,
}

impl Walk {
    fn limit(&mut self, limit: Limit, object: &str, detail: String) {
        self.limits_hit.push(LimitHit { limit, object: object.to_string(), detail });
    }
}

fn new_scanner<'r>(ruleset: &'r Ruleset, limits: &Limits) -> yara_x::Scanner<'r> {
    let mut s = yara_x::Scanner::new(&ruleset.rules);
    s.max_matches_per_pattern(MAX_MATCHES_PER_PATTERN);
    s.set_timeout(limits.object_timeout);
    s
}

impl<'r> Engine<'r> {
    pub fn new(ruleset: &'r Ruleset, limits: Limits) -> Self {
        Self { scanner: new_scanner(ruleset, &limits), ruleset, timeout: limits.object_timeout, limits }
    }

    pub fn ruleset_id(&self) -> &str {
        &self.ruleset.id
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Scan one submission held in memory. `name` is the root object's name
    /// (the file name the agent gave), the first element of object paths.
    pub fn scan(&mut self, data: &[u8], name: &str) -> Report {
        let start = Instant::now();
        let digests = Hasher::digest(data);
        let root_type = FileType::detect(data);
        let mut walk = Walk {
            objects: 0,
            extracted: 0,
            started: start,
            out_of_time: false,
            seen: HashSet::new(),
            detections: Vec::new(),
            executables: Vec::new(),
            limits_hit: Vec::new(),
            errors: Vec::new(),
            encrypted: Vec::new(),
            object_meta: Vec::new(),
            root_unscanned: false,
        };
        let name = if name.is_empty() { "<root>" } else { name };
        // The root's blake3 is already in the digests: no second pass.
        if let Ok(h) = blake3::Hash::from_hex(&digests.blake3) {
            walk.seen.insert(*h.as_bytes());
        }
        self.scan_object(&mut walk, data, root_type, name, 0, "");

        let verdict = if walk.root_unscanned && walk.detections.is_empty() {
            None
        } else {
            let mut v = walk.detections.iter().map(|d| d.severity).max().unwrap_or(Severity::Clean);
            // Policy: what was not looked at may count against the file.
            if (self.limits.alert_exceeded && !walk.limits_hit.is_empty())
                || (self.limits.alert_encrypted && !walk.encrypted.is_empty())
            {
                v = v.max(Severity::Suspicious);
            }
            Some(v)
        };
        Report {
            sha256: digests.sha256,
            blake3: digests.blake3,
            size: data.len() as u64,
            file_type: root_type.as_str(),
            verdict,
            detections: walk.detections,
            executables: walk.executables,
            limits_hit: walk.limits_hit,
            errors: walk.errors,
            encrypted: walk.encrypted,
            object_meta: walk.object_meta,
            objects_scanned: walk.objects,
            duration: start.elapsed(),
        }
    }

    fn scan_object(&mut self, walk: &mut Walk, data: &[u8], ty: FileType, path: &str, depth: u32, parent_type: &str) {
        let left = self.limits.max_scan_time.saturating_sub(walk.started.elapsed());
        if left.is_zero() {
            if !walk.out_of_time {
                walk.out_of_time = true;
                let detail = format!("submission took longer than {:?}", self.limits.max_scan_time);
                walk.limit(Limit::MaxScanTime, path, detail);
            }
            walk.root_unscanned |= depth == 0;
            return;
        }
        // yara-x counts whole seconds: round the rest of the budget up.
        let timeout = self.limits.object_timeout.min(Duration::from_secs(left.as_secs() + 1));
        self.scanner.set_timeout(timeout);
        self.timeout = timeout;
        walk.objects += 1;
        // The executable report goes first: rules see it through globals.
        let exe = if ty.is_executable() { summarize_executable(data, ty, path) } else { Vec::new() };
        let facts: Vec<&str> = exe.iter().flat_map(|e| e.facts.iter().map(String::as_str)).collect();
        let _ = self.scanner.set_global(GLOBAL_EXE_FACTS, facts.join(",").as_str());
        let _ = self.scanner.set_global(GLOBAL_EXE_SIGNED, exe.iter().any(|e| e.signed));
        let _ = self.scanner.set_global(GLOBAL_EXE_OVERLAY, exe.iter().map(|e| e.overlay_size as i64).max().unwrap_or(0));
        self.run_rules(walk, data, ty, path, depth, parent_type);
        walk.executables.extend(exe);
        if ty.is_container() {
            // A parser panic loses this container's children, not the
            // submission: everything found so far stays in the report.
            let unpacked = catch_unwind(AssertUnwindSafe(|| self.unpack(walk, data, ty, path, depth)));
            if let Err(panic) = unpacked {
                walk.errors.push(format!("{path}: {} unpacker panicked: {}", ty.as_str(), panic_message(&panic)));
            }
        }
    }

    fn run_rules(&mut self, walk: &mut Walk, data: &[u8], ty: FileType, path: &str, depth: u32, parent_type: &str) {
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
                walk.errors.push(format!("{path}: rules failed: {e}"));
                walk.root_unscanned |= depth == 0;
            }
            Err(panic) => {
                walk.errors.push(format!("{path}: rule engine panicked: {}", panic_message(&panic)));
                walk.root_unscanned |= depth == 0;
                // The scanner's state is unknown after a panic: start afresh.
                self.scanner = new_scanner(self.ruleset, &self.limits);
            }
        }
    }

    /// Unpack a container and scan what comes out.
    fn unpack(&mut self, walk: &mut Walk, data: &[u8], ty: FileType, path: &str, depth: u32) {
        let codec = match ty {
            FileType::Zip => return self.unpack_zip(walk, data, path, depth),
            FileType::Tar => return self.unpack_tar(walk, data, path, depth),
            FileType::Mail => return self.unpack_mail(walk, data, path, depth),
            FileType::Mbox => return self.unpack_mbox(walk, data, path, depth),
            FileType::Ole2 => return self.unpack_ole2(walk, data, path, depth),
            FileType::SevenZip => return self.unpack_7z(walk, data, path, depth),
            FileType::Cab => return self.unpack_cab(walk, data, path, depth),
            FileType::Pdf => return self.unpack_pdf(walk, data, path, depth),
            FileType::Rtf => return self.unpack_rtf(walk, data, path, depth),
            FileType::Ar => {
                let (slots, error) = ar_members(data);
                return self.unpack_slots(walk, data, path, depth, ty, slots, error);
            }
            FileType::Cpio => {
                let (slots, error) = cpio_members(data);
                return self.unpack_slots(walk, data, path, depth, ty, slots, error);
            }
            FileType::Iso => {
                let (slots, error) = iso_members(data);
                return self.unpack_slots(walk, data, path, depth, ty, slots, error);
            }
            FileType::Gzip => Codec::Gzip,
            FileType::Bzip2 => Codec::Bzip2,
            FileType::Xz => Codec::Xz,
            FileType::Zstd => Codec::Zstd,
            _ => return,
        };
        let name = codec.child_name(path.rsplit('/').next().unwrap_or(path));
        let child = format!("{path}/{name}");
        self.extract(walk, &child, data.len() as u64, depth, ty, |cap| Ok(codec.decode(data, cap)));
    }

    fn unpack_zip(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        let mut zip = match ZipReader::open(data) {
            Ok(z) => z,
            Err(e) => {
                walk.errors.push(format!("{path}: {e}"));
                return;
            }
        };
        if zip.has_overlapping_files() {
            walk.errors.push(format!("{path}: zip members overlap (possible zip bomb)"));
        }
        for index in 0..zip.len() {
            let info = match zip.info(index) {
                Ok(i) => i,
                Err(e) => {
                    walk.errors.push(format!("{path}: {e}"));
                    continue;
                }
            };
            if info.is_dir {
                continue;
            }
            let child = format!("{path}/{}", info.name);
            if info.encrypted {
                walk.encrypted.push(child);
                continue;
            }
            let flow = self.extract(walk, &child, info.compressed_size, depth, FileType::Zip, |cap| zip.read(index, cap));
            if flow == Flow::Stop {
                return;
            }
        }
    }

    fn unpack_tar(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        let (members, error) = tar_members(data);
        let slots = members.into_iter().map(|m| Slot { name: m.name, offset: m.offset, size: m.size }).collect();
        self.unpack_slots(walk, data, path, depth, FileType::Tar, slots, error);
    }

    /// Scan the members of an uncompressed archive, read straight from the
    /// input slice.
    #[allow(clippy::too_many_arguments)]
    fn unpack_slots(
        &mut self,
        walk: &mut Walk,
        data: &[u8],
        path: &str,
        depth: u32,
        ty: FileType,
        slots: Vec<Slot>,
        error: Option<String>,
    ) {
        if let Some(e) = error {
            walk.errors.push(format!("{path}: {e}"));
        }
        for m in slots {
            let child = format!("{path}/{}", m.name);
            let flow = self.extract(walk, &child, m.size, depth, ty, |cap| {
                let start = (m.offset as usize).min(data.len());
                let end = start.saturating_add(m.size as usize).min(data.len());
                let mut member = read_capped(&data[start..end], cap, m.size);
                if ((end - start) as u64) < m.size && member.error.is_none() {
                    member.error = Some(format!("truncated: {} of {} bytes present", end - start, m.size));
                }
                Ok(member)
            });
            if flow == Flow::Stop {
                return;
            }
        }
    }

    fn unpack_mail(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        let Some(parsed) = mail::parse(data) else {
            walk.errors.push(format!("{path}: not a parsable message"));
            return;
        };
        if !parsed.headers.is_empty() {
            walk.object_meta.push(ObjectMeta { object: path.to_string(), meta: parsed.headers });
        }
        let parts = parsed.parts.into_iter().map(|p| (p.name, Cow::Owned(p.data)));
        self.extract_buffers(walk, path, depth, FileType::Mail, parts);
    }

    /// Scan children that are already whole in memory (decoded mail parts,
    /// RTF objects, mbox messages). Their footprint in the parent is their
    /// own size, so the ratio cap never bites; the other limits do.
    fn extract_buffers<'b>(
        &mut self,
        walk: &mut Walk,
        path: &str,
        depth: u32,
        ty: FileType,
        children: impl IntoIterator<Item = (String, Cow<'b, [u8]>)>,
    ) {
        for (name, data) in children {
            let child = format!("{path}/{name}");
            let len = data.len() as u64;
            let flow = self.extract(walk, &child, len, depth, ty, |cap| {
                Ok(match data {
                    // An owned buffer that fits is moved, not copied.
                    Cow::Owned(v) if v.len() as u64 <= cap => MemberData { data: v, truncated: false, error: None },
                    other => read_capped(&other[..], cap, len),
                })
            });
            if flow == Flow::Stop {
                return;
            }
        }
    }

    fn unpack_7z(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        let mut archive = match sevenz_rust2::ArchiveReader::new(std::io::Cursor::new(data), sevenz_rust2::Password::default()) {
            Ok(a) => a,
            Err(sevenz_rust2::Error::PasswordRequired) => {
                // Encrypted headers: not even the names can be read.
                walk.encrypted.push(path.to_string());
                return;
            }
            Err(e) => {
                walk.errors.push(format!("{path}: 7z: {e}"));
                return;
            }
        };
        let result = archive.for_each_entries(|entry, reader| {
            if entry.is_directory() || !entry.has_stream() {
                return Ok(true);
            }
            let child = format!("{path}/{}", entry.name());
            let size = entry.size();
            // 7z compresses blocks, not members: the ratio cap uses the
            // whole archive as the member's footprint.
            let flow = self
                .extract(walk, &child, data.len() as u64, depth, FileType::SevenZip, |cap| Ok(read_capped(reader, cap, size)));
            Ok(flow == Flow::Continue)
        });
        match result {
            Ok(()) => {}
            Err(sevenz_rust2::Error::PasswordRequired | sevenz_rust2::Error::MaybeBadPassword(_)) => {
                walk.encrypted.push(path.to_string())
            }
            Err(e) => walk.errors.push(format!("{path}: 7z: {e}")),
        }
    }

    fn unpack_cab(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        let mut cab = match cab::Cabinet::new(std::io::Cursor::new(data)) {
            Ok(c) => c,
            Err(e) => {
                walk.errors.push(format!("{path}: cab: {e}"));
                return;
            }
        };
        let names: Vec<(String, u64)> = cab
            .folder_entries()
            .flat_map(|f| f.file_entries().map(|e| (e.name().to_string(), e.uncompressed_size() as u64)).collect::<Vec<_>>())
            .collect();
        for (name, size) in names {
            let child = format!("{path}/{}", name.replace('\\', "/"));
            // Folders compress many files together: the ratio cap uses the
            // whole cabinet as the member's footprint.
            let flow = self.extract(walk, &child, data.len() as u64, depth, FileType::Cab, |cap| {
                cab.read_file(&name).map(|r| read_capped(r, cap, size)).map_err(|e| format!("cab: {e}"))
            });
            if flow == Flow::Stop {
                return;
            }
        }
    }

    fn unpack_ole2(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        let mut ole = match Ole2::open(data) {
            Ok(o) => o,
            Err(e) => {
                walk.errors.push(format!("{path}: {e}"));
                return;
            }
        };
        for (name, len) in ole.streams() {
            let child = format!("{path}/{name}");
            // Streams are stored uncompressed: their size is their footprint.
            let flow = self.extract(walk, &child, len, depth, FileType::Ole2, |cap| ole.read(&name, cap, len));
            if flow == Flow::Stop {
                return;
            }
        }
    }

    fn unpack_pdf(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        if docs::pdf_encrypted(data) {
            walk.encrypted.push(path.to_string());
        }
        for stream in docs::pdf_streams(data) {
            let child = format!("{path}/{}", stream.name);
            let flow = self
                .extract(walk, &child, stream.raw.len() as u64, depth, FileType::Pdf, |cap| Ok(docs::pdf_decode(&stream, cap)));
            if flow == Flow::Stop {
                return;
            }
        }
    }

    fn unpack_rtf(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        let objects = docs::rtf_objects(data, self.limits.max_objects as usize);
        self.extract_buffers(walk, path, depth, FileType::Rtf, objects.into_iter().map(|o| (o.name, Cow::Owned(o.data))));
    }

    fn unpack_mbox(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        let messages = mail::split_mbox(data).into_iter().enumerate();
        self.extract_buffers(
            walk,
            path,
            depth,
            FileType::Mbox,
            messages.map(|(i, m)| (format!("message-{}.eml", i + 1), Cow::Borrowed(m))),
        );
    }

    /// Admit one child of a container under the limits, read it with the
    /// tightest cap, and scan it. `stored_size` is what the child occupies
    /// in its parent (for the ratio cap). Returns `Stop` when a
    /// submission-wide limit means no further sibling may be read.
    fn extract(
        &mut self,
        walk: &mut Walk,
        child: &str,
        stored_size: u64,
        depth: u32,
        parent_type: FileType,
        read: impl FnOnce(u64) -> Result<MemberData, String>,
    ) -> Flow {
        let limits = &self.limits;
        if depth + 1 > limits.max_depth {
            walk.limit(Limit::MaxDepth, child, format!("nesting deeper than {}", limits.max_depth));
            return Flow::Stop;
        }
        if walk.objects >= limits.max_objects {
            walk.limit(Limit::MaxObjects, child, format!("more than {} objects", limits.max_objects));
            return Flow::Stop;
        }
        let budget = limits.max_total_bytes.saturating_sub(walk.extracted);
        if budget == 0 {
            walk.limit(Limit::MaxTotalBytes, child, format!("more than {} bytes extracted", limits.max_total_bytes));
            return Flow::Stop;
        }
        // The tightest bound wins, and names the limit if it truncates.
        let ratio_cap = stored_size.saturating_mul(limits.max_ratio).max(RATIO_FLOOR);
        let (cap, limit) =
            [(limits.max_object_size, Limit::MaxObjectSize), (budget, Limit::MaxTotalBytes), (ratio_cap, Limit::MaxRatio)]
                .into_iter()
                .min_by_key(|(cap, _)| *cap)
                .expect("three candidates");
        let member = match read(cap) {
            Ok(m) => m,
            Err(e) => {
                walk.errors.push(format!("{child}: {e}"));
                return Flow::Continue;
            }
        };
        walk.extracted += member.data.len() as u64;
        if member.truncated {
            walk.limit(limit, child, format!("scanned the first {cap} bytes only"));
        }
        if let Some(e) = member.error {
            walk.errors.push(format!("{child}: {e}"));
        }
        if member.data.is_empty() && !member.truncated {
            return Flow::Continue;
        }
        if !walk.seen.insert(*blake3::hash(&member.data).as_bytes()) {
            return Flow::Continue;
        }
        let ty = FileType::detect(&member.data);
        self.scan_object(walk, &member.data, ty, child, depth + 1, parent_type.as_str());
        Flow::Continue
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
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
    Detection {
        rule: rule.identifier().to_string(),
        namespace: rule.namespace().to_string(),
        tags,
        meta,
        object: object.to_string(),
        severity,
    }
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

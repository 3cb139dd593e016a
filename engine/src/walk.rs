//! The walk through one submission: type detection, executable summaries,
//! recursive unpacking under [`Limits`], and the bookkeeping of what was
//! found. What looks at each object's bytes (the yara-x rules) plugs in
//! through [`Inspect`], so the unpackers build, run and fuzz without yara-x.

use crate::archive::{Slot, ar_members, cpio_members, iso_members};
use crate::docs;
use crate::exe::{ExecutableSummary, panic_message, summarize_executable};
use crate::filetype::FileType;
use crate::hash::Hasher;
use crate::limits::{Limit, Limits};
use crate::mail;
use crate::report::{Detection, LimitHit, ObjectMeta, Report, Severity};
use crate::unpack::{Codec, Ole2, read_capped, tar_members};
use crate::unzip::{MemberData, ZipReader};
use std::borrow::Cow;
use std::collections::HashSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The compression-ratio cap only bites above this many extracted bytes:
/// small, very repetitive members (a few KiB of spaces) are normal and cheap.
const RATIO_FLOOR: u64 = 1024 * 1024;

/// One object about to be inspected, with what the walk knows of it.
#[cfg_attr(not(feature = "rules"), allow(dead_code))]
pub(crate) struct Object<'a> {
    pub data: &'a [u8],
    pub ty: FileType,
    /// Object path inside the submission (`mail.eml/a.zip/x.exe`).
    pub path: &'a str,
    pub depth: u32,
    pub parent_type: &'a str,
    /// Executable summaries of this object (empty if it is not one).
    pub exe: &'a [ExecutableSummary],
    /// What is left of the submission's time budget for this object.
    pub timeout: Duration,
}

/// Looks at the bytes of every object of a submission (root and extracted)
/// and records what it finds in the walk.
pub(crate) trait Inspect {
    fn inspect(&mut self, walk: &mut Walk, object: &Object<'_>);
}

/// Inspects nothing: unpacking and executable summaries only (fuzzing, and
/// measuring the unpackers alone).
pub(crate) struct NoInspection;

/// The path of a child object: `parent/name`, or just `name` under the root,
/// whose path is empty (a submission's own name is the client's, not part of
/// its content).
pub(crate) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") }
}

impl Inspect for NoInspection {
    fn inspect(&mut self, _: &mut Walk, _: &Object<'_>) {}
}

/// Per-submission bookkeeping.
pub(crate) struct Walk {
    pub(crate) started: Instant,
    /// Set when the submission's time budget ran out: nothing more is read.
    pub(crate) out_of_time: bool,
    pub(crate) objects: u32,
    /// Bytes of the objects counted in `objects`.
    pub(crate) bytes: u64,
    pub(crate) extracted: u64,
    /// Bytes of decoded objects alive now: the submission and the objects
    /// on the way down to the one being scanned.
    pub(crate) live: u64,
    /// blake3 of every object already scanned in this submission.
    pub(crate) seen: HashSet<[u8; 32]>,
    pub(crate) detections: Vec<Detection>,
    pub(crate) executables: Vec<crate::exe::ExecutableSummary>,
    pub(crate) limits_hit: Vec<LimitHit>,
    pub(crate) errors: Vec<String>,
    pub(crate) encrypted: Vec<String>,
    pub(crate) object_meta: Vec<ObjectMeta>,
    pub(crate) root_unscanned: bool,
}

impl Walk {
    pub(crate) fn limit(&mut self, limit: Limit, object: &str, detail: String) {
        self.limits_hit.push(LimitHit { limit, object: object.to_string(), detail });
    }
}

/// Walk one submission held in memory: `name` is the root object's name,
/// the first element of object paths. `root_type` overrides detection (the
/// fuzz targets force each unpacker on arbitrary bytes).
pub(crate) fn walk(
    inspector: &mut impl Inspect,
    limits: &Limits,
    data: &[u8],
    name: &str,
    root_type: Option<FileType>,
    cancel: Option<&AtomicBool>,
) -> Report {
    let start = Instant::now();
    let digests = Hasher::digest(data);
    let root_type = root_type.unwrap_or_else(|| FileType::detect(data));
    let mut walk = Walk {
        live: data.len() as u64,
        objects: 0,
        bytes: 0,
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
    // An empty name is the submission itself (the worker never has the
    // client's name): object paths are then relative to it, the root "".
    // The root's blake3 is already in the digests: no second pass.
    if let Ok(h) = blake3::Hash::from_hex(&digests.blake3) {
        walk.seen.insert(*h.as_bytes());
    }
    Unpacker { inspector, limits, cancel }.scan_object(&mut walk, data, root_type, name, 0, "");

    let verdict = if walk.root_unscanned && walk.detections.is_empty() {
        None
    } else {
        let mut v = walk.detections.iter().map(|d| d.severity).max().unwrap_or(Severity::Clean);
        // Policy: what was not looked at may count against the file.
        if (limits.alert_exceeded && !walk.limits_hit.is_empty()) || (limits.alert_encrypted && !walk.encrypted.is_empty()) {
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
        bytes_scanned: walk.bytes,
        duration: start.elapsed(),
    }
}

struct Unpacker<'a, I> {
    inspector: &'a mut I,
    limits: &'a Limits,
    /// Set from another thread when the scan's result is no longer wanted.
    cancel: Option<&'a AtomicBool>,
}

impl<I: Inspect> Unpacker<'_, I> {
    fn scan_object(&mut self, walk: &mut Walk, data: &[u8], ty: FileType, path: &str, depth: u32, parent_type: &str) {
        let cancelled = self.cancel.is_some_and(|c| c.load(Ordering::Relaxed));
        let left = if cancelled { Duration::ZERO } else { self.limits.max_scan_time.saturating_sub(walk.started.elapsed()) };
        if left.is_zero() {
            if !walk.out_of_time {
                walk.out_of_time = true;
                if cancelled {
                    walk.limit(Limit::Cancelled, path, "the scan was cancelled by its caller".into());
                } else {
                    let detail = format!("submission took longer than {:?}", self.limits.max_scan_time);
                    walk.limit(Limit::MaxScanTime, path, detail);
                }
            }
            walk.root_unscanned |= depth == 0;
            return;
        }
        // yara-x counts whole seconds: round the rest of the budget up.
        let timeout = self.limits.object_timeout.min(Duration::from_secs(left.as_secs() + 1));
        walk.objects += 1;
        walk.bytes += data.len() as u64;
        // The executable report goes first: rules see it through globals.
        let exe = if ty.is_executable() { summarize_executable(data, ty, path) } else { Vec::new() };
        self.inspector.inspect(walk, &Object { data, ty, path, depth, parent_type, exe: &exe, timeout });
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
            FileType::Lzma => Codec::Lzma,
            FileType::Zstd => Codec::Zstd,
            _ => return,
        };
        let name = codec.child_name(path.rsplit('/').next().unwrap_or(path));
        let child = join(path, &name);
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
        // Members already read, by where their bytes sit: a member whose
        // bytes overlap one of them is the shape of an overlapping-entry bomb
        // (many names for one stream) and is not followed.
        let mut spans = Spans::default();
        let mut overlapping = 0usize;
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
            let child = join(path, &info.name);
            if !spans.insert(info.data_start, info.compressed_size) {
                overlapping += 1;
                continue;
            }
            if info.encrypted {
                walk.encrypted.push(child);
                continue;
            }
            let flow = self.extract(walk, &child, info.compressed_size, depth, FileType::Zip, |cap| zip.read(index, cap));
            if flow == Flow::Stop {
                break;
            }
        }
        if overlapping > 0 {
            walk.detections.push(heuristic(
                "Heuristics_Zip_OverlappingFiles",
                path,
                &format!("{overlapping} member(s) share bytes with another member (zip bomb shape); not extracted"),
            ));
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
            let child = join(path, &m.name);
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
            let child = join(path, &name);
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
            let child = join(path, entry.name());
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
            let child = join(path, &name.replace('\\', "/"));
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
        let streams = ole.streams();
        for (name, len) in &streams {
            let child = join(path, name);
            // Streams are stored uncompressed: their size is their footprint.
            let flow = self.extract(walk, &child, *len, depth, FileType::Ole2, |cap| ole.read(name, cap, *len));
            if flow == Flow::Stop {
                return;
            }
        }
        // A VBA project (a storage with `dir` and `_VBA_PROJECT`) lists its
        // modules in `dir`: scan their decompressed source too, as
        // `<storage>/<module>.vba`.
        let is_vba = |storage: &str| streams.iter().any(|(n, _)| *n == format!("{storage}_VBA_PROJECT"));
        for (name, _) in streams.iter().filter(|(n, _)| n == "dir" || n.ends_with("/dir")) {
            let storage = name.strip_suffix("dir").unwrap_or("");
            if !is_vba(storage) {
                continue;
            }
            if self.unpack_vba(walk, &mut ole, &streams, path, storage, depth) == Flow::Stop {
                return;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn unpack_vba(
        &mut self,
        walk: &mut Walk,
        ole: &mut Ole2,
        streams: &[(String, u64)],
        path: &str,
        storage: &str,
        depth: u32,
    ) -> Flow {
        let max = self.limits.max_object_size;
        let dir = match ole.read(&format!("{storage}dir"), max, 0) {
            Ok(raw) => crate::vba::decompress(&raw.data, max as usize),
            Err(e) => {
                walk.errors.push(format!("{}: {e}", join(path, &format!("{storage}dir"))));
                return Flow::Continue;
            }
        };
        if let Some(e) = &dir.error {
            walk.errors.push(format!("{}: {e}", join(path, &format!("{storage}dir"))));
        }
        for module in crate::vba::modules(&dir.data) {
            let stream = format!("{storage}{}", module.stream);
            let child = join(path, &format!("{storage}{}.vba", module.name));
            // The compressed stream is the source's footprint (ratio cap).
            let stored = streams.iter().find(|(n, _)| *n == stream).map_or(0, |(_, len)| *len);
            let flow = self.extract(walk, &child, stored, depth, FileType::Ole2, |cap| {
                let raw = ole.read(&stream, max, 0)?;
                let source = raw.data.get(module.offset as usize..).unwrap_or_default();
                Ok(crate::vba::decompress(source, cap as usize))
            });
            if flow == Flow::Stop {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn unpack_pdf(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        if docs::pdf_encrypted(data) {
            walk.encrypted.push(path.to_string());
        }
        for stream in docs::pdf_streams(data) {
            let child = join(path, &stream.name);
            let flow = self
                .extract(walk, &child, stream.raw.len() as u64, depth, FileType::Pdf, |cap| Ok(docs::pdf_decode(&stream, cap)));
            if flow == Flow::Stop {
                return;
            }
        }
    }

    fn unpack_rtf(&mut self, walk: &mut Walk, data: &[u8], path: &str, depth: u32) {
        let max = usize::try_from(self.limits.max_object_size.saturating_add(1)).unwrap_or(usize::MAX);
        let objects = docs::rtf_objects(data, max);
        self.extract_buffers(walk, path, depth, FileType::Rtf, objects.map(|o| (o.name, Cow::Owned(o.data))));
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
        let memory = limits.max_scan_memory.saturating_sub(walk.live);
        if memory == 0 {
            walk.limit(Limit::MaxScanMemory, child, format!("{} bytes of decoded objects held already", walk.live));
            return Flow::Stop;
        }
        // The tightest bound wins, and names the limit if it truncates.
        let ratio_cap = stored_size.saturating_mul(limits.max_ratio).max(RATIO_FLOOR);
        let (cap, limit) = [
            (limits.max_object_size, Limit::MaxObjectSize),
            (budget, Limit::MaxTotalBytes),
            (ratio_cap, Limit::MaxRatio),
            (memory, Limit::MaxScanMemory),
        ]
        .into_iter()
        .min_by_key(|(cap, _)| *cap)
        .expect("four candidates");
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
        let held = member.data.len() as u64;
        walk.live += held;
        self.scan_object(walk, &member.data, ty, child, depth + 1, parent_type.as_str());
        walk.live -= held;
        Flow::Continue
    }
}

/// Disjoint byte ranges of a container, to tell members that share bytes.
#[derive(Default)]
struct Spans(std::collections::BTreeMap<u64, u64>);

impl Spans {
    /// Record `[start, start + len)`; false (and nothing recorded) if it
    /// overlaps a range already there. Empty ranges never overlap.
    fn insert(&mut self, start: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let end = start.saturating_add(len);
        let before = self.0.range(..end).next_back();
        if before.is_some_and(|(_, &e)| e > start) {
            return false;
        }
        self.0.insert(start, end);
        true
    }
}

/// A finding of the engine itself rather than of a rule: a container built
/// like an attack on scanners. Suspicious, in the `qala` namespace.
fn heuristic(rule: &str, object: &str, description: &str) -> Detection {
    Detection {
        rule: rule.to_string(),
        namespace: "qala".to_string(),
        tags: vec!["heuristic".to_string()],
        meta: vec![("description".to_string(), description.to_string())],
        object: object.to_string(),
        severity: Severity::Suspicious,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

//! Round trip through every tool that writes an archive: a sample
//! executable goes into each tool in [`tools::TOOLS`] and must come out of
//! Qala byte for byte from the tool's output, nested three deep through
//! other formats, and appended to an executable (the self-extractor
//! layout). Formats Qala does not read are named in [`tools::GAPS`] with
//! the reason, and checked to still be unread (a gap closed shows up).
//!
//! Which tools: 7-Zip's own list (`7zz i`: every format, every 7z method
//! and filter) and `apt-cache search` for archivers, compressors,
//! installer and help compilers ([`APT_TERMS`]), each package found
//! either run here or named in [`NOT_WRITERS`]. Both enumerations print.
//!
//! Beside it, the oracle: for every format 7-Zip lists that a tool here
//! writes, the members Qala yields from a three-file sample (names, sizes,
//! contents) against `7zz l -slt` and `7zz x`.
//!
//! The tools are Debian packages that `scripts/test.sh` installs.

mod builders;
#[path = "roundtrip/tools.rs"]
mod tools;

use qala_engine::{Engine, Limits, Report, Ruleset, compile_rules};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use tools::{TOOLS, Tool, appended_gap, gap};

/// The sample executable: a real PE (ClamAV's harmless `clam.exe`, or a
/// headers-only PE without it) and 300 KB of overlay, part text and part
/// noise, so each compressor's blocks and windows are crossed.
fn sample() -> &'static [u8] {
    static S: OnceLock<Vec<u8>> = OnceLock::new();
    S.get_or_init(|| {
        let mut s = std::fs::read("/usr/share/clamav-testfiles/clam.exe").unwrap_or_else(|_| builders::headers_only_pe());
        let mut x: u32 = 0x9E37_79B9;
        let mut line = 0;
        while s.len() < 300_000 {
            line += 1;
            s.extend_from_slice(format!("qala round trip overlay line {line}: the quick brown fox\n").as_bytes());
            if line % 8 == 0 {
                for _ in 0..256 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    s.push(x as u8);
                }
            }
        }
        s
    })
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn rules() -> &'static Ruleset {
    static R: OnceLock<Ruleset> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let rule = format!(
            "import \"hash\"\nrule sample {{ condition: filesize == {} and hash.sha256(0, filesize) == \"{}\" }}\n",
            sample().len(),
            sha256_hex(sample())
        );
        std::fs::write(dir.path().join("sample.yar"), rule).unwrap();
        compile_rules(dir.path(), &Limits::default()).unwrap()
    })
}

fn scan(data: &[u8]) -> Report {
    Engine::new(rules(), Limits::default()).scan(data, "")
}

/// Where the sample came out, byte for byte.
fn found(r: &Report) -> Vec<String> {
    r.detections.iter().filter(|d| d.rule == "sample").map(|d| d.object.clone()).collect()
}

/// Run `tool` in `dir` on the files named in `inputs`; its output's bytes.
fn run(tool: &Tool, dir: &Path, inputs: &str) -> Result<Vec<u8>, String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("set -e\n{}", tool.sh))
        .current_dir(dir)
        .env("IN", inputs)
        .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", dir)
        .output()
        .map_err(|e| format!("{}: {e}", tool.id))?;
    if !out.status.success() {
        return Err(format!("{} failed ({}): {}", tool.id, out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    std::fs::read(dir.join(tool.out)).map_err(|e| format!("{}: no {}: {e}", tool.id, tool.out))
}

/// `tool`'s output with `data` as its one input file `sample.exe`.
fn wrap(tool: &Tool, data: &[u8]) -> Result<Vec<u8>, String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sample.exe"), data).unwrap();
    run(tool, dir.path(), "sample.exe")
}

/// A format's family, for nesting through different ones: the id up to its
/// first `-` (`7z-ppmd` is 7z), with the zip-based and tar-based kept apart.
fn family(id: &str) -> &str {
    id.split('-').next().unwrap()
}

/// The formats nests are built from (fast tools, different families).
const WRAPPERS: &[&str] = &[
    "zip-deflate",
    "tar-gnu",
    "gzip",
    "7z-lzma2",
    "cab-gcab-mszip",
    "xz",
    "cpio-newc",
    "bzip2",
    "arj",
    "iso-genisoimage",
    "zstd",
    "lha-lh5",
];

fn tool(id: &str) -> &'static Tool {
    TOOLS.iter().find(|t| t.id == id).unwrap_or_else(|| panic!("no tool {id}"))
}

/// An executable to append archives to, as self-extractors are made: a
/// real PE (ClamAV's `clam.exe`, or a headers-only PE and 4 KiB of code).
fn stub() -> Vec<u8> {
    std::fs::read("/usr/share/clamav-testfiles/clam.exe").unwrap_or_else(|_| {
        let mut s = builders::headers_only_pe();
        s.resize(s.len() + 4096, 0xCC);
        s
    })
}

/// The terms `apt-cache search` is asked, and how its answer is cut down:
/// libraries, bindings, documentation and plugins are not tools.
const APT_TERMS: &[&str] = &[
    "archiver",
    "compressor",
    "compression utility",
    "file archiver",
    "archive utility",
    "compression program",
    "installer generator",
    "install system",
    "help compiler",
    "self-extract",
];

fn not_a_tool(package: &str, description: &str) -> bool {
    let p = package;
    let d = description.to_lowercase();
    ["lib", "python", "node-", "ruby-", "golang-", "r-cran", "php-", "elpa-"].iter().any(|x| p.starts_with(x))
        || ["-dev", "-doc", "-java", "-perl", "-l10n", "-dbg", "-data", "-common"].iter().any(|x| p.ends_with(x))
        || [
            "librar",
            "plugin",
            "front",
            "javascript",
            "css",
            "audio",
            "mail",
            "comic",
            "speech",
            "documentation",
            "gtk",
            "qt",
            "minif",
        ]
        .iter()
        .any(|x| d.contains(x))
}

/// Packages the search finds that make nothing to round-trip here.
const NOT_WRITERS: &[(&str, &str)] = &[
    ("amanda-client", "network backup system; writes tar/dump streams through tar (tried)"),
    ("amanda-server", "network backup system; writes tar/dump streams through tar (tried)"),
    ("archmage", "reads CHM only"),
    ("ark", "KDE front end over the tools tried here"),
    ("clzip", "lzip format, tried with lzip and plzip"),
    ("debarchiver", "manages Debian repositories, writes no archive format"),
    ("dictzip", "gzip with a random-access header: gzip format, tried"),
    ("dynamite", "decompresses PKWARE DCL only"),
    ("flwrap", "amateur-radio text wrapper, not a file container"),
    ("fsarchiver", "own file-system archive format; needs a mounted or block-device file system to read"),
    ("gzip-win32", "gzip.exe for Windows: gzip format, tried"),
    ("h5ar", "HDF5 archives of scientific data"),
    ("lhasa", "reads LHA only"),
    ("lunzip", "decompresses lzip only"),
    ("lzd", "decompresses lzip only"),
    ("lziprecover", "repairs lzip files"),
    ("p7zip", "7zr: the 7z format, tried with 7zz"),
    ("p7zip-full", "7z and 7za: formats tried with 7zz"),
    ("pdlzip", "lzip format, tried with lzip and plzip"),
    ("pyppd", "compresses printer PPD files into a Python script"),
    ("tarlz", "tar.lz: tar inside lzip, both tried"),
    ("terser", "JavaScript minifier"),
    ("unalz", "reads ALZip only"),
    ("unar", "reads only"),
    ("unrar-free", "reads RAR only (no Debian tool writes RAR: rar is non-free and absent)"),
    ("unzip", "reads zip only"),
    ("xdms", "reads Amiga DMS only"),
    ("xlunzip", "decompresses lzip only"),
    ("xzdec", "decompresses xz only"),
    ("zita-dc1", "audio dynamics compressor"),
];

/// 7-Zip formats no tool here writes, and why.
const SEVENZIP_UNWRITTEN: &[(&str, &str)] = &[
    ("APFS", "no Debian tool makes an APFS image"),
    ("APM", "no Debian tool writes an Apple partition map"),
    ("COFF", "an object file, not a container: its sections are code"),
    ("Dmg", "no Debian tool writes a DMG"),
    ("ELF", "an executable, not a container (its sections are scanned as the executable)"),
    ("FLV", "Flash video: audio and video streams, not files"),
    ("GPT", "sgdisk (gdisk) writes it; MBR tried, GPT left (see GAPS)"),
    ("HFS", "hfsprogs is not in Debian 12; no tool here makes HFS"),
    ("Hxs", "Microsoft Help 2: no Debian compiler"),
    ("LP", "Android logical partitions: lpmake is not in Debian 12"),
    ("MachO", "an executable, not a container"),
    ("Mub", "Mach-O universal binaries: no Debian tool writes them (lipo is absent)"),
    ("PE", "an executable, not a container (resources, overlay and installers are read by their own modules)"),
    ("Ppmd", "no Debian tool writes a bare PPMd stream"),
    ("SWF", "no Debian tool in 12 writes Flash"),
    ("SWFc", "no Debian tool in 12 writes Flash"),
    ("Sparse", "img2simg (android-sdk-libsparse-utils) writes it: see GAPS"),
    ("Split", "volumes split across files: one submission is one file"),
    ("TE", "UEFI terse executables: an executable, no Debian writer"),
    ("UEFIc", "UEFI capsules: no Debian writer"),
    ("UEFIf", "UEFI firmware volumes: no Debian writer"),
    ("Udf", "mkudffs makes only an empty file system (writing files needs a mount); genisoimage -udf tried as Iso"),
    ("Xar", "xar is not in Debian 12"),
    ("lzma86", "no Debian tool writes lzma86"),
    ("Hash", "checksum files, not a container"),
];

/// Every format `7zz i` lists, and every codec.
fn sevenzip_lists() -> (Vec<String>, Vec<String>) {
    let out = Command::new("7zz").arg("i").output().expect("7zz (Debian package 7zip; scripts/test.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let (mut formats, mut codecs) = (Vec::new(), Vec::new());
    let mut section = "";
    for line in text.lines() {
        if line.ends_with(':') && !line.starts_with(' ') {
            section = line;
            continue;
        }
        let cols: Vec<&str> = line.split_whitespace().collect();
        match section {
            "Formats:" if cols.len() >= 2 => formats.push(cols[1].to_string()),
            "Codecs:" if cols.len() >= 3 => codecs.push(cols.last().unwrap().to_string()),
            _ => {}
        }
    }
    (formats, codecs)
}

/// The tool a 7-Zip codec is tried with.
fn codec_tool(codec: &str) -> Option<&'static str> {
    Some(match codec {
        "7zAES" => "7z-aes",
        "LZMA2" => "7z-lzma2",
        "AES256CBC" => return None,
        c => return TOOLS.iter().find(|t| t.id.eq_ignore_ascii_case(&format!("7z-{c}"))).map(|t| t.id),
    })
}

fn print_enumeration() -> Vec<String> {
    let mut problems = Vec::new();
    let (formats, codecs) = sevenzip_lists();
    println!("== 7-Zip's formats ({} in `7zz i`)", formats.len());
    for f in &formats {
        let tried: Vec<&str> = TOOLS.iter().filter(|t| t.sevenzip == Some(f.as_str())).map(|t| t.id).collect();
        match SEVENZIP_UNWRITTEN.iter().find(|(n, _)| n == f) {
            _ if !tried.is_empty() => println!("  {f:10} tried: {}", tried.join(" ")),
            Some((_, why)) => println!("  {f:10} not tried: {why}"),
            None => problems.push(format!("7-Zip format {f} neither tried nor explained")),
        }
    }
    println!("== 7-Zip's codecs ({})", codecs.len());
    for c in &codecs {
        match codec_tool(c) {
            Some(id) => println!("  {c:10} tried: {id}"),
            None if c == "AES256CBC" => {
                println!("  {c:10} not tried: 7-Zip's AES-CBC for encrypted disk images, no 7z or zip method")
            }
            None => problems.push(format!("7-Zip codec {c} not tried")),
        }
    }
    let Ok(_) = Command::new("apt-cache").arg("--version").output() else {
        println!("== apt-cache absent: the package search is skipped");
        return problems;
    };
    let mut found = BTreeMap::new();
    for term in APT_TERMS {
        let out = Command::new("apt-cache").args(["search", term]).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some((p, d)) = line.split_once(" - ")
                && !not_a_tool(p, d)
            {
                found.insert(p.to_string(), d.to_string());
            }
        }
    }
    println!(
        "== apt-cache search {APT_TERMS:?}: {} tools (libraries, bindings, docs, plugins and front ends dropped)",
        found.len()
    );
    for (p, d) in &found {
        let tried: Vec<&str> = TOOLS.iter().filter(|t| t.package == p).map(|t| t.id).collect();
        match NOT_WRITERS.iter().find(|(n, _)| n == p) {
            _ if !tried.is_empty() => println!("  {p:16} tried: {}", tried.join(" ")),
            Some((_, why)) => println!("  {p:16} not tried: {why}"),
            None => problems.push(format!("package {p} ({d}) found by the search but neither tried nor explained")),
        }
    }
    let hand: std::collections::BTreeSet<&str> = TOOLS.iter().map(|t| t.package).filter(|p| !found.contains_key(*p)).collect();
    let hand: Vec<&str> = hand.into_iter().collect();
    println!("== added by hand (writers of formats 7-Zip or ClamAV read, the search's words miss them): {}", hand.join(" "));
    problems
}

#[derive(Default)]
struct Row {
    direct: String,
    nested: String,
    appended: String,
}

/// Where a missed tool output is kept for a look: the build directory's
/// `qala-artifacts/roundtrip/`.
fn keep(name: &str, data: &[u8]) -> String {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../qala-artifacts/roundtrip");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("sample.exe"), sample());
    let path = dir.join(name);
    let _ = std::fs::write(&path, data);
    path.display().to_string()
}

fn outcome(r: &Report) -> Result<String, String> {
    let at = found(r);
    if !r.limits_hit.is_empty() {
        return Err(format!("limits hit: {:?}", r.limits_hit));
    }
    match at.first() {
        Some(at) => Ok(format!("byte-exact at {at}")),
        None => Err(format!("not found (type {}, errors {:?})", r.file_type, r.errors)),
    }
}

#[test]
fn round_trip_through_every_tool() {
    let mut problems = print_enumeration();
    let limits = Limits::default();
    println!(
        "== work budget per submission (the worker's defaults): depth {}, {} objects, {} MiB decoded, {} MiB per object, \
         ratio {}, {} s, emulation {} instructions per byte (at least {}); a limit hit counts as a miss here",
        limits.max_depth,
        limits.max_objects,
        limits.max_total_bytes >> 20,
        limits.max_object_size >> 20,
        limits.max_ratio,
        limits.max_scan_time.as_secs(),
        limits.work_per_byte,
        limits.work_floor
    );
    let mut heaviest = (0u64, 0u32, "");
    println!("== sample: {} bytes, sha256 {}", sample().len(), sha256_hex(sample()));
    let mut rows = Vec::new();
    for (i, t) in TOOLS.iter().enumerate() {
        let mut row = Row::default();
        let direct = match wrap(t, sample()) {
            Ok(out) => out,
            Err(e) => {
                problems.push(e.clone());
                row.direct = e;
                rows.push((t, row));
                continue;
            }
        };
        let r = scan(&direct);
        let gap = gap(t.id);
        match (outcome(&r), gap) {
            (Ok(o), None) => row.direct = o,
            (Err(e), None) => {
                let kept = keep(t.id, &direct);
                problems.push(format!("{}: {e} (kept in {kept})", t.id));
                row.direct = format!("MISSED: {e}");
            }
            (Ok(o), Some(_)) => {
                problems.push(format!("{}: listed as a gap but read ({o}): take it out of GAPS", t.id));
                row.direct = o;
            }
            (Err(_), Some(why)) if why.starts_with("encrypted") && r.encrypted.is_empty() => {
                problems.push(format!("{}: encrypted but not listed as encrypted", t.id));
                row.direct = format!("MISSED: not listed as encrypted ({why})");
            }
            (Err(_), Some(why)) => row.direct = format!("gap: {why}"),
        }
        if gap.is_none() {
            // Three deep: the sample in two other families' formats, then this one.
            let inner: Vec<&Tool> = WRAPPERS
                .iter()
                .cycle()
                .skip(i % WRAPPERS.len())
                .take(WRAPPERS.len())
                .map(|id| tool(id))
                .filter(|w| family(w.id) != family(t.id))
                .take(2)
                .collect();
            let nested = wrap(inner[0], sample()).and_then(|a| wrap(inner[1], &a)).and_then(|b| wrap(t, &b));
            let nested = nested.map(|n| scan(&n)).inspect(|r| {
                if r.bytes_scanned > heaviest.0 {
                    heaviest = (r.bytes_scanned, r.objects_scanned, t.id);
                }
            });
            row.nested = match nested.map(|r| outcome(&r)) {
                Ok(Ok(o)) => format!("{} > {} > {}: {o}", t.id, inner[1].id, inner[0].id),
                Ok(Err(e)) | Err(e) => {
                    problems.push(format!("{} > {} > {}: {e}", t.id, inner[1].id, inner[0].id));
                    format!("MISSED {} > {} > {}: {e}", t.id, inner[1].id, inner[0].id)
                }
            };
            let mut sfx = stub();
            sfx.extend_from_slice(&direct);
            row.appended = match (outcome(&scan(&sfx)), appended_gap(t.id)) {
                (Ok(o), None) => o,
                (Ok(o), Some(_)) => {
                    problems.push(format!("{} appended: listed as a gap but read ({o}): take it out of APPENDED_GAPS", t.id));
                    o
                }
                (Err(_), Some(why)) => format!("gap: {why}"),
                (Err(e), None) => {
                    problems.push(format!("{} appended to an executable: {e}", t.id));
                    format!("MISSED: {e}")
                }
            };
        }
        rows.push((t, row));
    }
    let exact = rows.iter().filter(|(t, _)| gap(t.id).is_none()).count();
    println!(
        "== round trip: {} tool outputs, {exact} read byte-exact (alone, three deep, and after a program but for {} listed), {} gaps",
        rows.len(),
        tools::APPENDED_GAPS.len(),
        tools::GAPS.len()
    );
    for (t, row) in &rows {
        println!("  {:22} {:16} {}", t.id, t.package, row.direct);
        if !row.nested.is_empty() {
            println!("  {:22} {:16} nested: {}", "", "", row.nested);
            println!("  {:22} {:16} appended: {}", "", "", row.appended);
        }
    }
    println!(
        "== the heaviest three-deep nest: {} ({} objects, {:.1} MiB scanned), no limit hit in any",
        heaviest.2,
        heaviest.1,
        heaviest.0 as f64 / (1 << 20) as f64
    );
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

/// Single streams: 7-Zip names their one member after the stream's own
/// header or the file name, Qala after the codec; sizes and contents are
/// compared, names not.
const STREAMS: &[&str] = &["gzip", "bzip2", "xz", "lzma", "zstd", "Z", "MsLZ", "Base64", "IHex"];

/// Whether Qala's name of a member is 7-Zip's (NTFS metadata files and
/// ext's journal, which 7-Zip shows under `[SYSTEM]` and `[SYS]`, are not
/// compared). Two differences are by
/// design and allowed: NSIS members are named `nsis/<file name>` (the
/// installer's output directories are not followed), and ISO 9660 names
/// are the primary volume's (upper case, where 7-Zip shows the Joliet or
/// UDF names of the same files).
fn same_name(format: &str, mine: &str, sevenzip: &str) -> bool {
    let mine = mine.trim_start_matches("./");
    match format {
        "Nsis" => mine.strip_prefix("nsis/").is_some_and(|m| sevenzip.rsplit('/').next() == Some(m)),
        "Iso" => mine.eq_ignore_ascii_case(sevenzip),
        _ => mine == sevenzip,
    }
}

/// The oracle's input: three files of different contents, one in a directory.
fn oracle_tree(dir: &Path) {
    std::fs::write(dir.join("sample.exe"), sample()).unwrap();
    std::fs::create_dir(dir.join("docs")).unwrap();
    let notes: String = (0..2000).map(|i| format!("note {i}: members must match 7-Zip's listing\n")).collect();
    std::fs::write(dir.join("docs/notes.txt"), notes).unwrap();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let data: Vec<u8> = (0..65_536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("data.bin"), data).unwrap();
}

/// One file in a `7zz l -slt` listing.
#[derive(Debug)]
struct Listed {
    path: String,
    size: u64,
    crc: Option<String>,
}

fn sevenzip_listing(file: &Path) -> Result<Vec<Listed>, String> {
    let out = Command::new("7zz").args(["l", "-slt", "-pnone"]).arg(file).output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some((_, body)) = text.split_once("----------\n") else {
        return Err(format!("7zz l: {}", String::from_utf8_lossy(&out.stderr).trim()));
    };
    let mut listed = Vec::new();
    for block in body.split("\n\n") {
        let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name).map(str::to_string));
        let Some(path) = field("Path = ").filter(|p| !p.is_empty()) else { continue };
        let folder = field("Folder = ").is_some_and(|f| f == "+") || field("Attributes = ").is_some_and(|a| a.starts_with('D'));
        let size = field("Size = ").and_then(|s| s.parse().ok()).unwrap_or(0);
        if !folder && size > 0 {
            listed.push(Listed { path, size, crc: field("CRC = ").filter(|c| !c.is_empty()) });
        }
    }
    Ok(listed)
}

#[test]
fn members_match_sevenzips_listing() {
    let mut problems = Vec::new();
    let mut compared = BTreeMap::<&str, Vec<String>>::new();
    for t in TOOLS.iter().filter(|t| t.sevenzip.is_some()) {
        let format = t.sevenzip.unwrap();
        if let Some(why) = gap(t.id) {
            compared.entry(format).or_default().push(format!("{} skipped (a gap: {})", t.id, why.split(':').next().unwrap()));
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        oracle_tree(dir.path());
        let inputs = if t.multi { "sample.exe docs data.bin" } else { "sample.exe" };
        let out = match run(t, dir.path(), inputs) {
            Ok(out) => out,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let file = dir.path().join(t.out);
        let listed = match sevenzip_listing(&file) {
            Ok(l) => l,
            Err(e) if e.contains("E_NOTIMPL") => {
                compared.entry(format).or_default().push(format!(
                    "{}: 7-Zip does not open this variant ({})",
                    t.id,
                    e.lines().next().unwrap_or("")
                ));
                continue;
            }
            Err(e) => {
                problems.push(format!("{}: {e}", t.id));
                continue;
            }
        };
        let x = dir.path().join("x");
        let status = Command::new("7zz")
            .args(["x", "-y", "-bso0", "-bsp0", "-pnone"])
            .arg(format!("-o{}", x.display()))
            .arg(&file)
            .status()
            .unwrap();
        if !status.success() {
            problems.push(format!("{}: 7zz x failed", t.id));
            continue;
        }
        // The members: what `7zz x` wrote (streams have no path in the
        // listing), each with the listing's size and CRC where it has them.
        let mut members = Vec::new();
        for f in walkdir::WalkDir::new(&x).into_iter().filter_map(Result::ok).filter(|f| f.file_type().is_file()) {
            let path = f.path().strip_prefix(&x).unwrap().to_string_lossy().into_owned();
            let bytes = std::fs::read(f.path()).unwrap();
            if let Some(l) = listed.iter().find(|l| l.path == path)
                && l.size != bytes.len() as u64
            {
                problems.push(format!("{}: 7-Zip lists {path} at {} bytes and extracts {}", t.id, l.size, bytes.len()));
            }
            // NTFS metadata ($MFT, $LogFile, ...) and ext's journal: 7-Zip
            // shows them under `[SYSTEM]` and `[SYS]`; they are not members.
            if (format == "NTFS" && path.starts_with("[SYSTEM]")) || (format == "Ext" && path.starts_with("[SYS]")) {
                continue;
            }
            if !bytes.is_empty() {
                let crc = listed.iter().find(|l| l.path == path).and_then(|l| l.crc.clone());
                members.push((Listed { path, size: bytes.len() as u64, crc }, Sha256::digest(&bytes).to_vec()));
            }
        }
        members.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        if members.is_empty() {
            problems.push(format!("{}: 7-Zip extracts nothing", t.id));
            continue;
        }
        let r = scan(&out);
        let top: Vec<_> = r.objects.iter().filter(|o| o.parent == 0).collect();
        let mut diffs = Vec::new();
        let mut notes = Vec::new();
        for (l, want) in &members {
            let same = |o: &&qala_engine::ObjectDigests| o.size == l.size && o.sha256.as_slice() == want.as_slice();
            let named = |o: &&&qala_engine::ObjectDigests| STREAMS.contains(&format) || same_name(format, &o.object, &l.path);
            if let Some(o) = top.iter().find(named) {
                if o.size != l.size {
                    diffs.push(format!("{}: {} bytes, 7-Zip lists {}", l.path, o.size, l.size));
                } else if o.sha256.as_slice() != want.as_slice() {
                    diffs.push(format!("{}: contents differ from 7-Zip's", l.path));
                }
                continue;
            }
            // 7-Zip lists through a compression layer (a .deb's data.tar.gz
            // as data.tar, an RPM's payload as its cpio, an MSI's cabinet as
            // its files) that Qala keeps as an object of its own: the same
            // bytes one level down.
            let inside =
                r.objects.iter().find(|o| o.parent as usize >= 1 && r.objects[o.parent as usize - 1].parent == 0 && same(o));
            match inside {
                Some(o) => notes.push(format!("{} as {}", l.path, o.object)),
                None => diffs.push(format!("{} ({} bytes, CRC {}) not yielded", l.path, l.size, l.crc.as_deref().unwrap_or("-"))),
            }
        }
        if !diffs.is_empty() {
            let names: Vec<String> = top.iter().map(|o| format!("{} ({})", o.object, o.size)).collect();
            diffs.push(format!("Qala yields {}", names.join(", ")));
        }
        let line = if diffs.is_empty() {
            let notes = if notes.is_empty() { String::new() } else { format!(" (one layer down: {})", notes.join(", ")) };
            format!("{}: {} members, names, sizes and contents as 7-Zip's{notes}", t.id, members.len())
        } else {
            problems.push(format!("{}: {}", t.id, diffs.join("; ")));
            format!("{}: DIFFERENT: {}", t.id, diffs.join("; "))
        };
        compared.entry(format).or_default().push(line);
    }
    println!("== oracle: Qala's members against `7zz l -slt` and `7zz x`, by 7-Zip format");
    for (format, lines) in &compared {
        for line in lines {
            println!("  {format:9} {line}");
        }
    }
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

//! Engine behaviour on generated inputs: EICAR bare and nested, limits,
//! dedupe, corrupt containers, and the public rule sets.

mod builders;

use qala_engine::{Engine, Limit, Limits, Ruleset, Severity, compile_rules};
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

/// EICAR, assembled at run time so no file of the repository contains it.
fn eicar() -> Vec<u8> {
    let mut v = br"*H+H$!ELIF-TSET-SURIVITNA-DRADNATS-RACIE$}7)CC7)^P(45XZP\4[PA@%P!O5X".to_vec();
    v.reverse();
    v
}

fn bundled() -> &'static Ruleset {
    static R: OnceLock<Ruleset> = OnceLock::new();
    R.get_or_init(|| compile_rules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules"), &Limits::default()).unwrap())
}

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    zip_with(entries, zip::CompressionMethod::Deflated)
}

fn zip_with(entries: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(method).large_file(false);
    for (name, data) in entries {
        w.start_file(*name, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn eicar_bare_is_malicious_with_meta() {
    let mut e = Engine::new(bundled(), Limits::default());
    let r = e.scan(&eicar(), "eicar.com");
    assert_eq!(r.verdict, Some(Severity::Malicious));
    assert_eq!(r.detections.len(), 1, "{:?}", r.detections);
    let d = &r.detections[0];
    assert_eq!(d.rule, "EICAR_Test_File");
    assert_eq!(d.namespace, "eicar");
    assert_eq!(d.object, "eicar.com");
    assert!(d.meta.iter().any(|(k, v)| k == "description" && v.contains("EICAR")));
    assert_eq!(r.sha256, "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f");
    assert_eq!(r.file_type, "text");
    assert!(r.limits_hit.is_empty());
}

#[test]
fn eicar_in_zip_in_zip_reports_object_path() {
    let inner = zip_of(&[("readme.txt", b"hello"), ("eicar.com", &eicar())]);
    let outer = zip_of(&[("inner.zip", &inner)]);
    let mut e = Engine::new(bundled(), Limits::default());
    let r = e.scan(&outer, "outer.zip");
    assert_eq!(r.verdict, Some(Severity::Malicious));
    let objects: Vec<&str> = r.detections.iter().map(|d| d.object.as_str()).collect();
    assert_eq!(objects, ["outer.zip/inner.zip/eicar.com"]);
    assert_eq!(r.objects_scanned, 4);
    assert_eq!(r.file_type, "zip");
}

#[test]
fn stored_and_deflated_members_both_unpack() {
    for method in [zip::CompressionMethod::Stored, zip::CompressionMethod::Deflated] {
        let z = zip_with(&[("a/b/eicar.txt", &eicar())], method);
        let r = Engine::new(bundled(), Limits::default()).scan(&z, "x.zip");
        assert_eq!(r.detections.len(), 1, "{method:?}");
        assert_eq!(r.detections[0].object, "x.zip/a/b/eicar.txt");
    }
}

#[test]
fn clean_text_is_clean() {
    let mut e = Engine::new(bundled(), Limits::default());
    let r = e.scan(b"just a shopping list: eggs, milk\n", "list.txt");
    assert_eq!(r.verdict, Some(Severity::Clean));
    assert!(r.detections.is_empty() && r.errors.is_empty() && r.limits_hit.is_empty());
    assert_eq!(r.objects_scanned, 1);
}

#[test]
fn identical_children_are_scanned_once() {
    let z = zip_of(&[("a.com", &eicar()), ("b.com", &eicar()), ("c.txt", b"x")]);
    let r = Engine::new(bundled(), Limits::default()).scan(&z, "dup.zip");
    assert_eq!(r.objects_scanned, 3, "root + one eicar + c.txt");
    assert_eq!(r.detections.len(), 1);
}

#[test]
fn depth_limit_is_recorded_and_stops_descent() {
    // eicar at depth 5: visible with max_depth 5, cut off with 3.
    let mut data = eicar();
    let mut name = "eicar.com".to_string();
    for i in 0..5 {
        data = zip_of(&[(name.as_str(), &data)]);
        name = format!("l{i}.zip");
    }
    let deep = Limits { max_depth: 3, ..Limits::default() };
    let r = Engine::new(bundled(), deep).scan(&data, &name);
    assert!(r.detections.is_empty());
    assert_eq!(r.limits_hit.len(), 1);
    assert_eq!(r.limits_hit[0].limit, Limit::MaxDepth);
    assert_eq!(r.verdict, Some(Severity::Clean));
    assert!(r.incomplete());

    let r = Engine::new(bundled(), Limits { max_depth: 5, ..Limits::default() }).scan(&data, &name);
    assert_eq!(r.verdict, Some(Severity::Malicious));
    assert_eq!(r.detections[0].object, "l4.zip/l3.zip/l2.zip/l1.zip/l0.zip/eicar.com");
}

#[test]
fn ratio_size_and_object_limits_bound_a_bomb() {
    let zeros = vec![0u8; 8 * 1024 * 1024];
    let z = zip_of(&[("zeros.bin", &zeros)]);
    assert!(z.len() < 64 * 1024);
    let r = Engine::new(bundled(), Limits::default()).scan(&z, "bomb.zip");
    assert!(r.limits_hit.iter().any(|l| l.limit == Limit::MaxRatio), "{:?}", r.limits_hit);

    let small = Limits { max_object_size: 1000, max_ratio: u64::MAX, ..Limits::default() };
    let r = Engine::new(bundled(), small).scan(&z, "bomb.zip");
    assert_eq!(r.limits_hit[0].limit, Limit::MaxObjectSize);

    let entries: Vec<(String, Vec<u8>)> = (0..20).map(|i| (format!("f{i}.txt"), format!("file {i}").into_bytes())).collect();
    let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
    let z = zip_of(&refs);
    let r = Engine::new(bundled(), Limits { max_objects: 10, ..Limits::default() }).scan(&z, "many.zip");
    assert_eq!(r.objects_scanned, 10);
    assert_eq!(r.limits_hit[0].limit, Limit::MaxObjects);

    let r = Engine::new(bundled(), Limits { max_total_bytes: 30, ..Limits::default() }).scan(&z, "many.zip");
    assert!(r.limits_hit.iter().any(|l| l.limit == Limit::MaxTotalBytes), "{:?}", r.limits_hit);
}

#[test]
fn corrupt_zip_is_reported_and_raw_bytes_still_scanned() {
    let mut z = zip_of(&[("eicar.com", &eicar())]);
    z.truncate(z.len() / 2);
    let r = Engine::new(bundled(), Limits::default()).scan(&z, "broken.zip");
    assert!(!r.errors.is_empty());
    assert!(r.verdict.is_some(), "the root itself was scanned");

    // Damaged compressed data: the member fails, the scan goes on.
    let good = zip_of(&[("a.txt", &[b'a'; 4000][..]), ("b.txt", b"fine")]);
    let mut bad = good.clone();
    for b in &mut bad[40..60] {
        *b ^= 0xFF;
    }
    let r = Engine::new(bundled(), Limits::default()).scan(&bad, "bad.zip");
    assert!(!r.errors.is_empty(), "{r:?}");
}

#[test]
fn executables_are_summarised_inside_archives() {
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let z = zip_with(&[("bin/tool", &me[..me.len().min(30 * 1024 * 1024)])], zip::CompressionMethod::Stored);
    let r = Engine::new(bundled(), Limits::default()).scan(&z, "tools.zip");
    assert_eq!(r.executables.len(), 1);
    assert_eq!(r.executables[0].object, "tools.zip/bin/tool");
    assert_eq!(r.executables[0].format, "elf");
}

#[test]
fn globals_are_visible_to_rules() {
    let z = zip_of(&[("invoice.pdf.exe", b"MZ not really")]);
    let r = Engine::new(bundled(), Limits::default()).scan(&z, "mail.zip");
    assert_eq!(r.verdict, Some(Severity::Suspicious));
    assert_eq!(r.detections[0].rule, "Qala_Double_Extension_Executable");
    assert_eq!(r.detections[0].object, "mail.zip/invoice.pdf.exe");
    // The rule's `mitre_attack` meta becomes the detection's techniques.
    assert_eq!(r.detections[0].techniques, ["T1036.007"]);
}

#[test]
fn executable_report_reaches_rules_through_globals() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("g.yar"),
        r#"rule wx { condition: qala_exe_facts contains "writable_executable_section" }
           rule overlay { condition: qala_exe_overlay_size > 50 and not qala_exe_signed }"#,
    )
    .unwrap();
    let rules = compile_rules(d.path(), &Limits::default()).unwrap();
    let mut wx = tiny_pe(0x2000_0020 | 0x4000_0000 | 0x8000_0000);
    let r = Engine::new(&rules, Limits::default()).scan(&wx, "a.exe");
    assert_eq!(r.detections.iter().map(|d| d.rule.as_str()).collect::<Vec<_>>(), ["wx"]);
    wx.extend_from_slice(&[0; 64]);
    let r = Engine::new(&rules, Limits::default()).scan(&wx, "a.exe");
    assert_eq!(r.detections.len(), 2, "{:?}", r.detections);
    // Not an executable: the globals are reset, nothing matches.
    let r = Engine::new(&rules, Limits::default()).scan(b"plain text", "a.txt");
    assert!(r.detections.is_empty());
}

/// A rule that runs far longer than one second on 200 KB: nested loops
/// (under yara-x's one-million-iteration cap) each taking the entropy of
/// the whole input.
fn slow_rules() -> Ruleset {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("slow.yar"),
        "import \"math\" rule slow { condition: for all i in (0..999) : ( for all j in (0..999) : ( math.entropy(i, filesize - j) >= 0.0 ) ) }",
    )
    .unwrap();
    compile_rules(d.path(), &Limits::default()).unwrap()
}

#[test]
fn object_timeout_is_a_limit_and_root_timeout_is_unscannable() {
    let rules = slow_rules();
    let limits = Limits { object_timeout: Duration::from_secs(1), ..Limits::default() };
    let r = Engine::new(&rules, limits).scan(&vec![1u8; 200_000], "big.bin");
    assert_eq!(r.verdict, None);
    assert_eq!(r.limits_hit[0].limit, Limit::ObjectTimeout);
}

#[test]
fn reversinglabs_rules_compile_and_scan() {
    let rl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/reversinglabs");
    let rules = compile_rules(&rl, &Limits::default()).expect("ReversingLabs rules must load");
    assert!(rules.rule_count > 1000, "{}", rules.rule_count);
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let r = Engine::new(&rules, Limits::default()).scan(&me, "self");
    assert!(r.verdict.is_some());
}

/// A minimal, valid PE32 image: one `.text` section holding the entry point,
/// with the given section characteristics.
fn tiny_pe(characteristics: u32) -> Vec<u8> {
    let mut pe = vec![0u8; 0x400];
    pe[0..2].copy_from_slice(b"MZ");
    pe[0x3C..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    let mut o = 0x40;
    let mut put = |o: &mut usize, bytes: &[u8]| {
        pe[*o..*o + bytes.len()].copy_from_slice(bytes);
        *o += bytes.len();
    };
    put(&mut o, b"PE\0\0");
    // COFF header: i386, 1 section, optional header 0xE0, executable image.
    put(&mut o, &0x14Cu16.to_le_bytes());
    put(&mut o, &1u16.to_le_bytes());
    put(&mut o, &[0; 12]);
    put(&mut o, &0xE0u16.to_le_bytes());
    put(&mut o, &0x0102u16.to_le_bytes());
    // Optional header (PE32).
    let opt_start = o;
    put(&mut o, &0x10Bu16.to_le_bytes());
    put(&mut o, &[0; 2]); // linker version
    put(&mut o, &0x200u32.to_le_bytes()); // size of code
    put(&mut o, &[0; 8]); // initialized / uninitialized data
    put(&mut o, &0x1000u32.to_le_bytes()); // entry point RVA
    put(&mut o, &0x1000u32.to_le_bytes()); // base of code
    put(&mut o, &0x2000u32.to_le_bytes()); // base of data
    put(&mut o, &0x400000u32.to_le_bytes()); // image base
    put(&mut o, &0x1000u32.to_le_bytes()); // section alignment
    put(&mut o, &0x200u32.to_le_bytes()); // file alignment
    put(&mut o, &[4, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0]); // OS, image, subsystem versions
    put(&mut o, &[0; 4]); // win32 version
    put(&mut o, &0x2000u32.to_le_bytes()); // size of image
    put(&mut o, &0x200u32.to_le_bytes()); // size of headers
    put(&mut o, &[0; 4]); // checksum
    put(&mut o, &3u16.to_le_bytes()); // subsystem: console
    put(&mut o, &[0; 2]); // dll characteristics
    put(&mut o, &0x100000u32.to_le_bytes());
    put(&mut o, &0x1000u32.to_le_bytes());
    put(&mut o, &0x100000u32.to_le_bytes());
    put(&mut o, &0x1000u32.to_le_bytes());
    put(&mut o, &[0; 4]); // loader flags
    put(&mut o, &16u32.to_le_bytes()); // data directories, all empty
    o = opt_start + 0xE0;
    // Section table.
    put(&mut o, b".text\0\0\0");
    put(&mut o, &0x100u32.to_le_bytes()); // virtual size
    put(&mut o, &0x1000u32.to_le_bytes()); // virtual address
    put(&mut o, &0x200u32.to_le_bytes()); // raw size
    put(&mut o, &0x200u32.to_le_bytes()); // raw pointer
    put(&mut o, &[0; 12]);
    put(&mut o, &characteristics.to_le_bytes());
    // Code: `ret` and then 16 distinct byte values (entropy 4 bits/byte).
    for (i, b) in pe[0x200..0x400].iter_mut().enumerate() {
        *b = (i % 16) as u8;
    }
    pe[0x200] = 0xC3;
    pe
}

#[test]
fn pe_summary_and_pe_module_rules() {
    const CODE: u32 = 0x0000_0020;
    const EXEC: u32 = 0x2000_0000;
    const READ: u32 = 0x4000_0000;
    const WRITE: u32 = 0x8000_0000;
    let normal = tiny_pe(CODE | EXEC | READ);
    let r = Engine::new(bundled(), Limits::default()).scan(&normal, "tool.exe");
    assert_eq!(r.file_type, "pe");
    assert_eq!(r.verdict, Some(Severity::Clean), "{:?}", r.detections);
    let s = &r.executables[0];
    assert_eq!(s.error, None);
    assert_eq!((s.format, s.arch.as_str(), s.is_64, s.entry_point), ("pe", "X86", false, 0x1000));
    assert_eq!(s.sections.len(), 1);
    assert_eq!(s.sections[0].name, ".text");
    assert_eq!((s.sections[0].virtual_address, s.sections[0].raw_size), (0x1000, 0x200));
    assert!((s.sections[0].entropy - 4.0).abs() < 0.05, "{}", s.sections[0].entropy);
    assert_eq!(s.sections[0].flags, "r-x");
    assert_eq!(s.entry_section.as_deref(), Some(".text"));
    assert_eq!((s.overlay_size, s.resources, s.signed), (0, 0, false));
    assert!(s.facts.is_empty(), "{:?}", s.facts);

    // Data appended after the image is overlay.
    let mut with_overlay = normal.clone();
    with_overlay.extend_from_slice(&[0xAB; 100]);
    let r = Engine::new(bundled(), Limits::default()).scan(&with_overlay, "setup.exe");
    assert_eq!(r.executables[0].overlay_size, 100);

    // Near-random section data reads as packed.
    let mut packed = normal.clone();
    for (i, b) in packed[0x201..0x400].iter_mut().enumerate() {
        *b = (i * 37 % 251) as u8;
    }
    let r = Engine::new(bundled(), Limits::default()).scan(&packed, "packed.exe");
    assert_eq!(r.executables[0].facts, ["high_entropy_section:.text"]);

    // Entry point in a writable+executable section: the bundled pe-module rule fires.
    let wx = tiny_pe(CODE | EXEC | READ | WRITE);
    let r = Engine::new(bundled(), Limits::default()).scan(&wx, "packed.exe");
    assert_eq!(r.verdict, Some(Severity::Suspicious), "{:?}", r.detections);
    assert_eq!(r.detections[0].rule, "Qala_PE_Entry_Point_Writable_Executable");
    assert_eq!(r.executables[0].facts, ["writable_executable_section:.text"]);
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn single_stream_compressors_unpack() {
    let payload = eicar();
    let bz = {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(&payload).unwrap();
        e.finish().unwrap()
    };
    let xz = {
        let mut w = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::default()).unwrap();
        w.write_all(&payload).unwrap();
        w.finish().unwrap()
    };
    let zst = ruzstd::encoding::compress_to_vec(&payload[..], ruzstd::encoding::CompressionLevel::Fastest);
    for (name, data, child) in [
        ("eicar.com.lzma", lzma_alone(&payload), "eicar.com.lzma/eicar.com"),
        ("eicar.com.gz", gzip(&payload), "eicar.com.gz/eicar.com"),
        ("eicar.com.bz2", bz, "eicar.com.bz2/eicar.com"),
        ("eicar.com.xz", xz, "eicar.com.xz/eicar.com"),
        ("eicar.com.zst", zst, "eicar.com.zst/eicar.com"),
    ] {
        let r = Engine::new(bundled(), Limits::default()).scan(&data, name);
        assert_eq!(r.verdict, Some(Severity::Malicious), "{name}: {r:?}");
        assert_eq!(r.detections[0].object, child, "{name}");
        assert!(r.errors.is_empty(), "{name}: {:?}", r.errors);
    }
}

#[test]
fn tar_gz_inside_zip_reports_the_full_path() {
    let tar = tar_of(&[("docs/readme.txt", b"hello"), ("bin/eicar.com", &eicar())]);
    let tgz = gzip(&tar);
    let z = zip_of(&[("logs.tar.gz", &tgz)]);
    let r = Engine::new(bundled(), Limits::default()).scan(&z, "mail.zip");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "mail.zip/logs.tar.gz/logs.tar/bin/eicar.com");
    assert_eq!(r.objects_scanned, 5, "zip, tar.gz, tar, readme, eicar");
}

#[test]
fn gzip_of_zeros_is_bounded_by_the_ratio_cap() {
    // 256 MiB of zeros gzip to ~250 KiB; the ratio cap stops the inflate early.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        e.write_all(&zeros).unwrap();
    }
    let gz = e.finish().unwrap();
    let r = Engine::new(bundled(), Limits::default()).scan(&gz, "zeros.gz");
    assert_eq!(r.limits_hit.len(), 1, "{:?}", r.limits_hit);
    assert_eq!(r.limits_hit[0].limit, Limit::MaxRatio);
    assert_eq!(r.limits_hit[0].object, "zeros.gz/zeros");
}

#[test]
fn truncated_streams_report_errors_and_keep_what_decoded() {
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let mut gz = gzip(&big);
    gz.truncate(gz.len() / 2);
    let r = Engine::new(bundled(), Limits::default()).scan(&gz, "cut.gz");
    assert!(r.errors.iter().any(|e| e.starts_with("cut.gz/cut")), "{:?}", r.errors);
    assert_eq!(r.objects_scanned, 2, "the decoded prefix is still scanned");

    let mut tar = tar_of(&[("a.txt", &[b'a'; 3000][..])]);
    tar.truncate(1024);
    let r = Engine::new(bundled(), Limits::default()).scan(&tar, "cut.tar");
    assert!(!r.errors.is_empty(), "{r:?}");
    assert!(r.verdict.is_some());
}

#[test]
fn encrypted_zip_members_are_reported_and_policy_applies() {
    // Mark the member encrypted (general-purpose flag bit 0) in its local
    // header and its central-directory entry, as ZipCrypto tools do.
    let mut z = zip_with(&[("secret.exe", &eicar())], zip::CompressionMethod::Stored);
    z[6] |= 1;
    let cd = z.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    z[cd + 8] |= 1;

    let r = Engine::new(bundled(), Limits::default()).scan(&z, "locked.zip");
    assert_eq!(r.encrypted, ["locked.zip/secret.exe"]);
    assert_eq!(r.verdict, Some(Severity::Clean));
    let strict = Limits { alert_encrypted: true, ..Limits::default() };
    let r = Engine::new(bundled(), strict).scan(&z, "locked.zip");
    assert_eq!(r.verdict, Some(Severity::Suspicious));
}

#[test]
fn alert_exceeded_turns_a_limit_into_suspicious() {
    let z = zip_of(&[("inner.zip", &zip_of(&[("a.txt", b"a")]))]);
    let shallow = Limits { max_depth: 1, ..Limits::default() };
    assert_eq!(Engine::new(bundled(), shallow.clone()).scan(&z, "z.zip").verdict, Some(Severity::Clean));
    let alert = Limits { alert_exceeded: true, ..shallow };
    assert_eq!(Engine::new(bundled(), alert).scan(&z, "z.zip").verdict, Some(Severity::Suspicious));
}

#[test]
fn submission_time_budget_stops_the_walk() {
    // Each object takes over a second of rule time: a 2-second budget runs
    // out inside the archive.
    let rules = slow_rules();
    let big: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i; 200_000]).collect();
    let entries: Vec<(String, &[u8])> = big.iter().enumerate().map(|(i, b)| (format!("m{i}.bin"), b.as_slice())).collect();
    let refs: Vec<(&str, &[u8])> = entries.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    let z = zip_with(&refs, zip::CompressionMethod::Stored);
    let limits = Limits { object_timeout: Duration::from_secs(1), max_scan_time: Duration::from_secs(2), ..Limits::default() };
    let r = Engine::new(&rules, limits).scan(&z, "slow.zip");
    let hit: Vec<Limit> = r.limits_hit.iter().map(|l| l.limit).collect();
    assert!(hit.contains(&Limit::MaxScanTime), "{hit:?}");
    assert_eq!(hit.iter().filter(|l| **l == Limit::MaxScanTime).count(), 1);
    assert!(r.objects_scanned < 7, "{}", r.objects_scanned);
    assert!(r.incomplete());
}

#[test]
fn zip_compression_methods_unpack() {
    use zip::CompressionMethod as M;
    // The zip crate cannot write LZMA, Deflate64 or the legacy methods; those
    // are read through the same crate features but not covered here yet.
    for method in [M::Stored, M::Deflated, M::Bzip2, M::Zstd, M::Xz, M::Ppmd] {
        let z = zip_with(&[("docs/readme.txt", b"hello there"), ("eicar.com", &eicar())], method);
        let r = Engine::new(bundled(), Limits::default()).scan(&z, "m.zip");
        assert!(r.errors.is_empty(), "{method:?}: {:?}", r.errors);
        assert_eq!(r.verdict, Some(Severity::Malicious), "{method:?}");
        assert_eq!(r.detections[0].object, "m.zip/eicar.com", "{method:?}");
        assert_eq!(r.objects_scanned, 3, "{method:?}");
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for (i, c) in data.chunks(3).enumerate() {
        if i > 0 && i % 19 == 0 {
            out.push_str("\r\n");
        }
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for k in 0..4 {
            if k <= c.len() {
                out.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn message(subject: &str, parts: &[(&str, &str, &str)]) -> Vec<u8> {
    // parts: (content type with params, transfer encoding, encoded body)
    let mut m = format!(
        "From: Alice <alice@example.org>\r\nTo: bob@example.org\r\nSubject: {subject}\r\nDate: Mon, 2 Mar 2026 10:00:00 +0000\r\n\
         Message-ID: <{subject}@example.org>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"BOUND\"\r\n\r\n\
         This is a multi-part message.\r\n"
    );
    for (ctype, enc, body) in parts {
        m.push_str(&format!("--BOUND\r\nContent-Type: {ctype}\r\nContent-Transfer-Encoding: {enc}\r\n"));
        if let Some(name) = ctype.split("name=\"").nth(1).and_then(|s| s.split('"').next()) {
            m.push_str(&format!("Content-Disposition: attachment; filename=\"{name}\"\r\n"));
        }
        m.push_str(&format!("\r\n{body}\r\n"));
    }
    m.push_str("--BOUND--\r\n");
    m.into_bytes()
}

#[test]
fn mail_with_zip_with_tar_gz_with_payload() {
    let tgz = gzip(&tar_of(&[("payload/eicar.com", &eicar())]));
    let z = zip_of(&[("bundle.tar.gz", &tgz)]);
    let mail = message(
        "invoice",
        &[
            ("text/plain; charset=utf-8", "7bit", "Please see the attachment."),
            ("application/zip; name=\"invoice.zip\"", "base64", &base64(&z)),
        ],
    );
    let r = Engine::new(bundled(), Limits::default()).scan(&mail, "invoice.eml");
    assert_eq!(r.file_type, "mail");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "invoice.eml/invoice.zip/bundle.tar.gz/bundle.tar/payload/eicar.com");
    let meta = &r.object_meta[0];
    assert_eq!(meta.object, "invoice.eml");
    assert!(meta.meta.contains(&("Subject".to_string(), "invoice".to_string())), "{:?}", meta.meta);
    assert!(meta.meta.iter().any(|(k, v)| k == "From" && v.contains("alice@example.org")));
}

#[test]
fn quoted_printable_nested_message_and_uuencode() {
    let e = String::from_utf8(eicar()).unwrap();
    let qp = format!("{}=\r\n{}", &e[..30], &e[30..]);
    let r = Engine::new(bundled(), Limits::default())
        .scan(&message("qp", &[("text/plain; charset=us-ascii", "quoted-printable", &qp)]), "qp.eml");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "qp.eml/part-1.txt");

    // A forwarded message carrying the payload as an attachment.
    let inner = message("inner", &[("application/octet-stream; name=\"e.com\"", "base64", &base64(&eicar()))]);
    let outer_body = String::from_utf8(inner).unwrap();
    let outer = message("fwd", &[("text/plain", "7bit", "fyi"), ("message/rfc822", "7bit", &outer_body)]);
    let r = Engine::new(bundled(), Limits::default()).scan(&outer, "fwd.eml");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "fwd.eml/part-2.eml/e.com");
    assert_eq!(r.object_meta.len(), 2, "headers of both messages: {:?}", r.object_meta);

    // uuencoded inside a plain-text body.
    let mut uu = String::from("begin 644 test.com\n");
    for line in eicar().chunks(45) {
        uu.push((b' ' + line.len() as u8) as char);
        for c in line.chunks(3) {
            let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
            for k in 0..4 {
                let v = (n >> (18 - 6 * k) & 63) as u8;
                uu.push(if v == 0 { '`' } else { (b' ' + v) as char });
            }
        }
        uu.push('\n');
    }
    uu.push_str("`\nend\n");
    let r = Engine::new(bundled(), Limits::default()).scan(&message("uu", &[("text/plain", "7bit", &uu)]), "uu.eml");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "uu.eml/part-1.txt/test.com");
}

#[test]
fn mbox_messages_are_each_scanned() {
    let clean = message("hello", &[("text/plain", "7bit", "nothing here")]);
    let bad = message("bad", &[("application/octet-stream; name=\"x.com\"", "base64", &base64(&eicar()))]);
    let mut mbox = b"From alice@example.org Mon Mar  2 10:00:00 2026\n".to_vec();
    mbox.extend_from_slice(&clean);
    mbox.extend_from_slice(b"\nFrom alice@example.org Mon Mar  2 10:05:00 2026\n");
    mbox.extend_from_slice(&bad);
    let r = Engine::new(bundled(), Limits::default()).scan(&mbox, "inbox");
    assert_eq!(r.file_type, "mbox");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "inbox/message-2.eml/x.com");
    assert_eq!(r.object_meta.len(), 2);
}

#[test]
fn ole2_streams_are_extracted_with_their_paths() {
    let mut cf = cfb::CompoundFile::create(std::io::Cursor::new(Vec::new())).unwrap();
    cf.create_storage("/Macros").unwrap();
    cf.create_storage("/Macros/VBA").unwrap();
    cf.create_stream("/WordDocument").unwrap().write_all(&[0x11; 5000]).unwrap();
    cf.create_stream("/Macros/VBA/Module1").unwrap().write_all(&eicar()).unwrap();
    cf.flush().unwrap();
    let doc = cf.into_inner().into_inner();
    let r = Engine::new(bundled(), Limits::default()).scan(&doc, "report.doc");
    assert_eq!(r.file_type, "ole2");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "report.doc/Macros/VBA/Module1");
    assert_eq!(r.objects_scanned, 3);

    let mut cut = doc.clone();
    cut.truncate(1000);
    let r = Engine::new(bundled(), Limits::default()).scan(&cut, "cut.doc");
    assert!(!r.errors.is_empty() && r.verdict.is_some(), "{r:?}");
}

#[test]
fn debian_package_ar_with_data_tar_xz() {
    let data_tar = tar_of(&[("./usr/bin/tool", &eicar())]);
    let mut xz = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::default()).unwrap();
    xz.write_all(&data_tar).unwrap();
    let data_tar_xz = xz.finish().unwrap();
    let deb = ar_of(&[("debian-binary", b"2.0\n"), ("data.tar.xz", &data_tar_xz)]);
    let r = Engine::new(bundled(), Limits::default()).scan(&deb, "tool.deb");
    assert_eq!(r.file_type, "ar");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "tool.deb/data.tar.xz/data.tar/usr/bin/tool");
}

#[test]
fn cpio_newc_member_is_scanned() {
    let a = cpio_newc(&[("bin/x.com", &eicar()), ("TRAILER!!!", b"")]);
    let r = Engine::new(bundled(), Limits::default()).scan(&a, "initrd.cpio");
    assert_eq!(r.file_type, "cpio");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "initrd.cpio/bin/x.com");
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn pdf_with(streams: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut pdf = b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n".to_vec();
    for (i, (dict, body)) in streams.iter().enumerate() {
        pdf.extend_from_slice(format!("{} 0 obj\n<< {dict} /Length {} >>\nstream\n", i + 3, body.len()).as_bytes());
        pdf.extend_from_slice(body);
        pdf.extend_from_slice(b"\nendstream\nendobj\n");
    }
    pdf.extend_from_slice(b"trailer\n<< /Root 1 0 R >>\n%%EOF\n");
    pdf
}

#[test]
fn pdf_streams_are_decoded_through_their_filters() {
    let hex: String = eicar().iter().map(|b| format!("{b:02x} ")).collect::<String>() + ">";
    let pdf = pdf_with(&[
        ("/Filter /FlateDecode", zlib(b"BT /F1 12 Tf (Hello) Tj ET")),
        ("/Type /EmbeddedFile /Filter /FlateDecode", zlib(&eicar())),
        ("/Filter [/ASCIIHexDecode]", hex.into_bytes()),
    ]);
    let r = Engine::new(bundled(), Limits::default()).scan(&pdf, "doc.pdf");
    assert_eq!(r.file_type, "pdf");
    let objects: Vec<&str> = r.detections.iter().map(|d| d.object.as_str()).collect();
    assert_eq!(objects, ["doc.pdf/embedded-4.bin"], "identical decoded content is scanned once: {:?}", r.detections);
    assert_eq!(r.objects_scanned, 3, "pdf, page text, payload");

    // Hex-only payload (not deduplicated against anything).
    let hex: String = eicar().iter().map(|b| format!("{b:02X}")).collect::<String>() + ">";
    let r = Engine::new(bundled(), Limits::default()).scan(&pdf_with(&[("/Filter /ASCIIHexDecode", hex.into_bytes())]), "h.pdf");
    assert_eq!(r.detections[0].object, "h.pdf/obj-3.bin");

    // A broken Flate stream is an error, not a crash.
    let r = Engine::new(bundled(), Limits::default()).scan(&pdf_with(&[("/Filter /FlateDecode", b"not zlib".to_vec())]), "b.pdf");
    assert!(r.errors.iter().any(|e| e.contains("FlateDecode")), "{:?}", r.errors);
}

#[test]
fn rtf_objdata_ole1_native_data_is_scanned() {
    let mut ole1 = Vec::new();
    ole1.extend_from_slice(&0x0501u32.to_le_bytes());
    ole1.extend_from_slice(&2u32.to_le_bytes());
    for s in [&b"Package\0"[..], b"\0", b"\0"] {
        ole1.extend_from_slice(&(s.len() as u32).to_le_bytes());
        ole1.extend_from_slice(s);
    }
    ole1.extend_from_slice(&(eicar().len() as u32).to_le_bytes());
    ole1.extend_from_slice(&eicar());
    let hex: String = ole1.iter().map(|b| format!("{b:02x}")).collect();
    let rtf = format!("{{\\rtf1\\ansi hello {{\\object\\objemb{{\\*\\objclass Package}}{{\\*\\objdata\n{hex}\n}}}}}}");
    let r = Engine::new(bundled(), Limits::default()).scan(rtf.as_bytes(), "letter.rtf");
    assert_eq!(r.file_type, "rtf");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "letter.rtf/object-1.Package");
}

/// Seeds of every format the engine reads, each carrying `payload`, keyed
/// by the fuzz target that reads them (`qala_engine::fuzzing::TARGETS`).
fn seeds(payload: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let tar = tar_of(&[("a/eicar.com", payload), ("b.txt", b"hello")]);
    // A Word file whose only copy of the payload is VBA module source.
    let ole = doc_with_macro(std::str::from_utf8(payload).unwrap(), 0x01);
    let mut xz = lzma_rust2::XzWriter::new(Vec::new(), lzma_rust2::XzOptions::default()).unwrap();
    xz.write_all(&tar).unwrap();
    let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
    bz.write_all(&tar).unwrap();
    let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
    let mail = message("m", &[("application/zip; name=\"a.zip\"", "base64", &base64(&zip_of(&[("e.com", payload)])))]);
    let mut mbox = b"From alice@example.org Mon Mar  2 10:00:00 2026\n".to_vec();
    mbox.extend_from_slice(&mail);
    mbox.extend_from_slice(b"\nFrom bob@example.org Mon Mar  2 11:00:00 2026\nSubject: two\n\nplain body\n");
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("eicar.com"), payload).unwrap();
    std::fs::write(src.path().join("readme.txt"), "hello").unwrap();
    let sevenz = sevenz_rust2::compress(src.path(), std::io::Cursor::new(Vec::new())).unwrap().into_inner();
    vec![
        ("zip", zip_of(&[("in.zip", &zip_of(&[("eicar.com", payload)])), ("t.tar", &tar)])),
        ("gzip", gzip(&tar)),
        ("xz", xz.finish().unwrap()),
        ("lzma", lzma_alone(&tar)),
        ("bzip2", bz.finish().unwrap()),
        ("zstd", ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest)),
        ("lzip", {
            let mut w = lzma_rust2::LzipWriter::new(Vec::new(), lzma_rust2::LzipOptions::default());
            w.write_all(&tar).unwrap();
            w.finish().unwrap()
        }),
        ("lz4", {
            let mut w = lz4_flex::frame::FrameEncoder::new(Vec::new());
            w.write_all(&tar).unwrap();
            w.finish().unwrap()
        }),
        ("compress_z", compress_literals(payload)),
        ("fat", fat_image(payload)),
        ("ntfs", ntfs_image(payload)),
        ("ext", placeholder_image("ext/seed-mke2fs", payload)),
        ("disk", mbr_disk(&fat_image(payload))),
        ("vhd", dynamic_vhd(&mbr_disk(&fat_image(payload)))),
        ("records", {
            let mut y = b"=ybegin line=128 size=39 name=seed.txt\n".to_vec();
            for &b in payload {
                let e = b.wrapping_add(42);
                if matches!(e, 0 | b'\n' | b'\r' | b'=') {
                    y.extend_from_slice(&[b'=', e.wrapping_add(64)]);
                } else {
                    y.push(e);
                }
            }
            y.extend_from_slice(b"\n=yend size=39\n");
            y
        }),
        ("tar", tar.clone()),
        ("cpio", cpio_newc(&[("bin/x.com", payload), ("TRAILER!!!", b"")])),
        ("ar", ar_of(&[("debian-binary", b"2.0\n"), ("data.tar", &tar)])),
        ("iso9660", tiny_iso(payload)),
        ("sevenz", sevenz),
        ("cab", cab_of(&[("readme.txt", b"hello"), ("sub\\eicar.com", payload)], cab::CompressionType::MsZip)),
        ("ole2", ole),
        ("pdf", pdf_with(&[("/Filter /FlateDecode", zlib(payload)), ("/Filter /ASCIIHexDecode", hex.clone().into_bytes())])),
        ("rtf", format!("{{\\rtf1{{\\object{{\\*\\objdata {hex}}}}}}}").into_bytes()),
        ("mail", mail),
        ("mbox", mbox),
        ("pe", tiny_pe(0xE000_0020)),
        ("elf", tiny_elf()),
        ("macho", tiny_macho()),
        ("macho_fat", fat_macho(&tiny_macho())),
        (
            "text",
            format!(
                "{}\n{}",
                builders::uuencode("a.com", payload, false),
                String::from_utf8(builders::binhex("b.com", payload)).unwrap()
            )
            .into_bytes(),
        ),
        ("tnef", builders::tnef("c.com", payload)),
        ("ms_compress", builders::szdd(payload)),
        ("sis", builders::sis("d.com", payload)),
        ("arj", builders::arj_stored("e.com", payload)),
        ("carve", [&[0xAB; 100][..], &zip_of(&[("f.com", payload)])].concat()),
        ("upx_elf", builders::upx_elf(tiny_elf(), payload)),
        ("chm", builders::chm_stored("g.com", payload)),
        ("rar", builders::rar(rars::ArchiveVersion::Rar50, true, &[("h.com", payload), ("i.txt", b"hello")])),
        ("lha", builders::lha_stored("j.com", payload)),
        ("installshield", [tiny_pe(0xE000_0020), builders::installshield(true, &[("q.com", payload)])].concat()),
        ("emu", builders::packed_pe(&[&[0xC3][..], payload].concat(), true, None)),
        ("wwpack", builders::wwpack_pe(payload)),
        ("iscab", [tiny_pe(0xE000_0020), builders::installshield_cab_setup(&[("r.com", payload)], true)].concat()),
        ("wim", builders::wim("fast", &[("n.com", payload), ("o/p.txt", b"hello")])),
        ("wim_lzx", builders::wim("maximum", &[("n.com", payload), ("o/p.txt", b"hello hello hello hello")])),
        ("squashfs", builders::squashfs("xz", &[("k.com", payload), ("l/m.txt", b"hello")])),
    ]
}

fn cpio_newc(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut a = Vec::new();
    for (name, body) in entries {
        let mode = if body.is_empty() { 0 } else { 0o100755u32 };
        a.extend_from_slice(format!("070701{:08x}{:08x}", 1, mode).as_bytes());
        for v in [0u32, 0, 1, 0, body.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0] {
            a.extend_from_slice(format!("{v:08x}").as_bytes());
        }
        a.extend_from_slice(name.as_bytes());
        a.push(0);
        a.resize(a.len().next_multiple_of(4), 0);
        a.extend_from_slice(body);
        a.resize(a.len().next_multiple_of(4), 0);
    }
    a
}

fn ar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut ar = b"!<arch>\n".to_vec();
    for (name, body) in entries {
        ar.extend_from_slice(format!("{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n", 0, 0, 0, 100644, body.len()).as_bytes());
        ar.extend_from_slice(body);
        if body.len() % 2 == 1 {
            ar.push(b'\n');
        }
    }
    ar
}

/// A minimal x86-64 ELF executable: one PT_LOAD, `.text` and `.shstrtab`.
fn tiny_elf() -> Vec<u8> {
    let mut e = vec![0u8; 0x100];
    e[0..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    let put = |e: &mut Vec<u8>, at: usize, bytes: &[u8]| e[at..at + bytes.len()].copy_from_slice(bytes);
    put(&mut e, 16, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut e, 18, &0x3Eu16.to_le_bytes()); // x86-64
    put(&mut e, 20, &1u32.to_le_bytes());
    put(&mut e, 24, &0x40_0080u64.to_le_bytes()); // entry in .text
    put(&mut e, 32, &64u64.to_le_bytes()); // program headers
    put(&mut e, 40, &0xC0u64.to_le_bytes() as &[u8]); // section headers (placed after the body)
    put(&mut e, 52, &64u16.to_le_bytes());
    put(&mut e, 54, &56u16.to_le_bytes());
    put(&mut e, 56, &1u16.to_le_bytes());
    put(&mut e, 58, &64u16.to_le_bytes());
    put(&mut e, 60, &3u16.to_le_bytes());
    put(&mut e, 62, &2u16.to_le_bytes());
    // PT_LOAD, R+X, the whole file at 0x400000.
    put(&mut e, 64, &1u32.to_le_bytes());
    put(&mut e, 68, &5u32.to_le_bytes());
    put(&mut e, 80, &0x40_0000u64.to_le_bytes());
    put(&mut e, 88, &0x40_0000u64.to_le_bytes());
    put(&mut e, 96, &0x100u64.to_le_bytes());
    put(&mut e, 104, &0x100u64.to_le_bytes());
    put(&mut e, 112, &0x1000u64.to_le_bytes());
    // .text: mov eax, 60; xor edi, edi; syscall
    put(&mut e, 0x80, &[0xB8, 0x3C, 0, 0, 0, 0x31, 0xFF, 0x0F, 0x05]);
    put(&mut e, 0xA0, b"\0.text\0.shstrtab\0");
    e.resize(0xC0 + 3 * 64, 0);
    let section = |e: &mut Vec<u8>, i: usize, name: u32, ty: u32, flags: u64, addr: u64, off: u64, size: u64| {
        let at = 0xC0 + i * 64;
        put(e, at, &name.to_le_bytes());
        put(e, at + 4, &ty.to_le_bytes());
        put(e, at + 8, &flags.to_le_bytes());
        put(e, at + 16, &addr.to_le_bytes());
        put(e, at + 24, &off.to_le_bytes());
        put(e, at + 32, &size.to_le_bytes());
        put(e, at + 48, &16u64.to_le_bytes());
    };
    section(&mut e, 1, 1, 1, 6, 0x40_0080, 0x80, 9);
    section(&mut e, 2, 7, 3, 0, 0, 0xA0, 17);
    e
}

/// A minimal x86-64 Mach-O executable: one `__TEXT` segment with `__text`.
fn tiny_macho() -> Vec<u8> {
    let mut m = Vec::new();
    let u32s = |m: &mut Vec<u8>, vs: &[u32]| vs.iter().for_each(|v| m.extend_from_slice(&v.to_le_bytes()));
    let u64s = |m: &mut Vec<u8>, vs: &[u64]| vs.iter().for_each(|v| m.extend_from_slice(&v.to_le_bytes()));
    let name = |m: &mut Vec<u8>, n: &str| {
        let mut b = [0u8; 16];
        b[..n.len()].copy_from_slice(n.as_bytes());
        m.extend_from_slice(&b);
    };
    // magic, cputype x86-64, subtype, MH_EXECUTE, 1 command of 152 bytes, flags, reserved
    u32s(&mut m, &[0xFEED_FACF, 0x0100_0007, 3, 2, 1, 152, 0, 0]);
    u32s(&mut m, &[0x19, 152]); // LC_SEGMENT_64
    name(&mut m, "__TEXT");
    u64s(&mut m, &[0x1000, 0x1000, 0, 0x200]);
    u32s(&mut m, &[7, 5, 1, 0]);
    name(&mut m, "__text");
    name(&mut m, "__TEXT");
    u64s(&mut m, &[0x1100, 0x10]);
    u32s(&mut m, &[0x100, 0, 0, 0, 0x8000_0400, 0, 0, 0]);
    m.resize(0x100, 0);
    m.extend_from_slice(&[0x31, 0xC0, 0xC3]);
    m.resize(0x200, 0);
    m
}

/// A Unix `compress` stream of `data` in 9-bit literal codes only (valid
/// while fewer than 255 codes fill the table: no width change).
fn compress_literals(data: &[u8]) -> Vec<u8> {
    assert!(data.len() < 255);
    let mut out = vec![0x1F, 0x9D, 0x90];
    let (mut acc, mut bits) = (0u32, 0);
    for &b in data {
        acc |= u32::from(b) << bits;
        bits += 9;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(acc as u8);
    }
    out
}

/// A 1 MiB FAT image (formatted by `fatfs`) holding `payload` as
/// `DIR/PAYLOAD.TXT`.
fn fat_image(payload: &[u8]) -> Vec<u8> {
    let mut disk = std::io::Cursor::new(vec![0u8; 1 << 20]);
    fatfs::format_volume(&mut disk, fatfs::FormatVolumeOptions::new()).unwrap();
    {
        let fs = fatfs::FileSystem::new(&mut disk, fatfs::FsOptions::new()).unwrap();
        let dir = fs.root_dir().create_dir("dir").unwrap();
        dir.create_file("payload.txt").unwrap().write_all(payload).unwrap();
    }
    disk.into_inner()
}

/// A 2 MiB NTFS image from `mkntfs` holding `payload.txt` (no Rust crate
/// writes NTFS): the image in the fuzz corpus, made with 68 `Q`s as the
/// file (copied in by `ntfscp`), which are overwritten here with the
/// payload, padded with newlines.
fn ntfs_image(payload: &[u8]) -> Vec<u8> {
    placeholder_image("ntfs/seed-mkntfs", payload)
}

/// A file-system image in the fuzz corpus (`mkntfs`, `mke2fs -d`) whose
/// one file is 68 `Q`s, overwritten with `payload` padded with newlines.
fn placeholder_image(seed: &str, payload: &[u8]) -> Vec<u8> {
    let mut image = std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus").join(seed)).unwrap();
    let at = image.windows(68).position(|w| w == [b'Q'; 68]).expect("the placeholder");
    assert!(payload.len() <= 68);
    image[at..at + 68].fill(b'\n');
    image[at..at + payload.len()].copy_from_slice(payload);
    image
}

/// An MBR disk with `partition` as its one partition, at sector 1.
fn mbr_disk(partition: &[u8]) -> Vec<u8> {
    let mut d = vec![0u8; 512];
    d[446 + 4] = 0x0C;
    d[446 + 8..446 + 12].copy_from_slice(&1u32.to_le_bytes());
    d[446 + 12..446 + 16].copy_from_slice(&((partition.len() / 512) as u32).to_le_bytes());
    d[510] = 0x55;
    d[511] = 0xAA;
    d.extend_from_slice(partition);
    d
}

/// A dynamic VHD of `disk` in 4 KiB blocks (the all-zero ones left
/// unallocated, as in a real sparse disk).
fn dynamic_vhd(disk: &[u8]) -> Vec<u8> {
    let blocks = disk.len().div_ceil(4096);
    let mut footer = vec![0u8; 512];
    footer[..8].copy_from_slice(b"conectix");
    footer[16..24].copy_from_slice(&512u64.to_be_bytes());
    footer[48..56].copy_from_slice(&(disk.len() as u64).to_be_bytes());
    footer[60..64].copy_from_slice(&3u32.to_be_bytes());
    let mut header = vec![0u8; 1024];
    header[..8].copy_from_slice(b"cxsparse");
    let bat_at = 1536u64;
    header[16..24].copy_from_slice(&bat_at.to_be_bytes());
    header[28..32].copy_from_slice(&(blocks as u32).to_be_bytes());
    header[32..36].copy_from_slice(&4096u32.to_be_bytes());
    let bat_len = (blocks * 4).div_ceil(512) * 512;
    let mut bat = vec![0xFFu8; bat_len];
    let mut body = Vec::new();
    let first = (1536 + bat_len) / 512;
    for (n, chunk) in disk.chunks(4096).enumerate() {
        if chunk.iter().all(|&b| b == 0) {
            continue;
        }
        let sector = (first + body.len() / 512) as u32;
        bat[4 * n..4 * n + 4].copy_from_slice(&sector.to_be_bytes());
        body.extend_from_slice(&[0xFF; 512]);
        body.extend_from_slice(chunk);
        body.resize(body.len() + (4096 - chunk.len()), 0);
    }
    [footer.clone(), header, bat, body, footer].concat()
}

/// A fat (universal) Mach-O holding `thin` once.
fn fat_macho(thin: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    for v in [0xCAFE_BABEu32, 1, 0x0100_0007, 3, 0x1000, thin.len() as u32, 12] {
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.resize(0x1000, 0);
    f.extend_from_slice(thin);
    f
}

/// The fuzz corpus seeds (`fuzz/corpus/<target>/seed-*`) are these
/// generators' output with a harmless payload; set `QALA_WRITE_FUZZ_SEEDS=1`
/// to write them again. Every seed must reach its parser: containers yield
/// the payload as a child, executables a summary without error.
#[test]
fn fuzz_seeds_reach_their_parsers() {
    let payload = b"Qala fuzz seed payload: harmless text.\n";
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let targets: Vec<&str> = qala_engine::fuzzing::TARGETS.iter().map(|(t, _)| *t).collect();
    let seeds = seeds(payload);
    for (target, seed) in &seeds {
        assert!(targets.contains(target), "{target} is not a fuzz target");
        let r = qala_engine::fuzzing::run(target, seed).unwrap();
        if ["pe", "elf", "macho", "macho_fat", "upx_elf", "installshield", "emu", "wwpack", "iscab"].contains(target) {
            assert!(!r.executables.is_empty(), "{target}: {r:?}");
            assert!(r.executables.iter().all(|e| e.error.is_none()), "{target}: {:?}", r.executables);
        } else {
            assert!(r.objects_scanned >= 2, "{target} seed must yield children: {r:?}");
            assert!(r.errors.is_empty(), "{target}: {:?}", r.errors);
        }
        if std::env::var_os("QALA_WRITE_FUZZ_SEEDS").is_some() {
            for dir in [*target, "any"] {
                std::fs::create_dir_all(corpus.join(dir)).unwrap();
                std::fs::write(corpus.join(dir).join(format!("seed-{target}")), seed).unwrap();
            }
        }
    }
    assert_eq!(seeds.len(), targets.len() - 1, "one seed per target but `any`");
}

/// Disk images that lie about their size cost what they hold: a dynamic
/// VHD declaring a 1 TiB disk and four billion table entries, and an MBR
/// partition and GPT claiming sectors far past the end, give errors and
/// read what the file holds, allocating nothing from the declared sizes.
#[test]
fn disk_images_declaring_huge_sizes_cost_what_they_hold() {
    let image = mbr_disk(&fat_image(b"harmless"));
    let mut vhd = dynamic_vhd(&image);
    let end = vhd.len() - 512;
    for footer in [0, end] {
        vhd[footer + 48..footer + 56].copy_from_slice(&(1u64 << 40).to_be_bytes());
    }
    vhd[512 + 28..512 + 32].copy_from_slice(&u32::MAX.to_be_bytes());
    // Its block table said to lie at the end of the address space.
    let mut far = vhd.clone();
    far[512 + 16..512 + 24].copy_from_slice(&(u64::MAX - 2).to_be_bytes());
    let mut mbr = image.clone();
    mbr[446 + 12..446 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut gpt = vec![0u8; 1024];
    gpt[446 + 4] = 0xEE;
    gpt[446 + 8] = 1;
    gpt[446 + 12..446 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    gpt[510] = 0x55;
    gpt[511] = 0xAA;
    gpt[512..520].copy_from_slice(b"EFI PART");
    gpt[512 + 72..512 + 80].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    gpt[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
    gpt[512 + 84..512 + 88].copy_from_slice(&128u32.to_le_bytes());
    let mut engine = Engine::new(bundled(), Limits::default());
    for (name, data) in [("vhd", vhd), ("vhd-far", far), ("mbr", mbr), ("gpt", gpt)] {
        let r = engine.scan(&data, name);
        assert!(!r.errors.is_empty(), "{name} must say what was wrong: {r:?}");
        // Said by the reader, not a contained panic (the GPT one overflowed).
        assert!(!format!("{:?}", r.errors).contains("panic"), "{name}: {:?}", r.errors);
        // What is really in it (a 1 MiB disk: its partition and file), not
        // the terabyte declared.
        assert!(r.bytes_scanned < 8 << 20, "{name}: {} bytes scanned", r.bytes_scanned);
    }
}

/// Deterministic mutations (bit flips, overwrites, truncations, inserted
/// runs) of every seed: the engine must answer each with a report, never a
/// panic escaping `scan`, and stay within its limits. A bounded stand-in
/// for the fuzz targets that runs with the normal tests.
#[test]
fn mutated_inputs_of_every_format_never_escape_the_engine() {
    let mut x: u64 = 0x2545F4914F6CDD1D;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let limits = Limits { max_total_bytes: 32 << 20, max_scan_time: Duration::from_secs(10), ..Limits::default() };
    let mut engine = Engine::new(bundled(), limits);
    let mut scanned = 0;
    let seeds = seeds(&eicar());
    let expected = seeds.len() * 150;
    for (name, seed) in seeds {
        let clean = engine.scan(&seed, name);
        match name {
            // The ELF seed is a truncated real binary: parse errors are expected.
            "pe" | "elf" | "macho" | "macho_fat" | "upx_elf" | "installshield" | "emu" | "wwpack" | "iscab" => {
                assert!(clean.executables.iter().all(|e| e.error.is_none()), "{clean:?}")
            }
            _ => assert_eq!(clean.verdict, Some(Severity::Malicious), "seed {name} must carry the payload: {clean:?}"),
        }
        for round in 0..150 {
            let mut m = seed.clone();
            match next() % 4 {
                0 => {
                    for _ in 0..1 + next() % 8 {
                        let i = (next() as usize) % m.len();
                        m[i] ^= 1 << (next() % 8);
                    }
                }
                1 => {
                    let i = (next() as usize) % m.len();
                    let end = (i + 1 + (next() as usize) % 16).min(m.len());
                    for b in &mut m[i..end] {
                        *b = next() as u8;
                    }
                }
                2 => m.truncate((next() as usize) % m.len()),
                _ => {
                    let i = (next() as usize) % m.len();
                    let run = vec![[0x00, 0xFF, b'A'][(next() % 3) as usize]; 1 + (next() as usize) % 4096];
                    m.splice(i..i, run);
                }
            }
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.scan(&m, name)))
                .unwrap_or_else(|_| panic!("{name} round {round}: a panic escaped the engine"));
            assert!(r.objects_scanned >= 1 || r.verdict.is_none(), "{name} round {round}");
            scanned += 1;
        }
    }
    assert_eq!(scanned, expected);
}

/// A minimal ISO 9660 image: /EICAR.COM and /DOCS/README.TXT, plus a
/// directory record that points back at the root (a loop).
fn tiny_iso(e: &[u8]) -> Vec<u8> {
    const S: usize = 2048;
    let mut iso = vec![0u8; 24 * S];
    let record = |lba: u32, len: u32, dir: bool, name: &[u8]| -> Vec<u8> {
        let mut r = vec![0u8; 33 + name.len() + (name.len() + 1) % 2];
        r[0] = r.len() as u8;
        r[2..6].copy_from_slice(&lba.to_le_bytes());
        r[6..10].copy_from_slice(&lba.to_be_bytes());
        r[10..14].copy_from_slice(&len.to_le_bytes());
        r[14..18].copy_from_slice(&len.to_be_bytes());
        r[25] = if dir { 2 } else { 0 };
        r[32] = name.len() as u8;
        r[33..33 + name.len()].copy_from_slice(name);
        r
    };
    // Primary volume descriptor, then the set terminator.
    iso[16 * S] = 1;
    iso[16 * S + 1..16 * S + 6].copy_from_slice(b"CD001");
    let root = record(18, S as u32, true, &[0]);
    iso[16 * S + 156..16 * S + 156 + root.len()].copy_from_slice(&root);
    iso[17 * S] = 255;
    iso[17 * S + 1..17 * S + 6].copy_from_slice(b"CD001");
    let dir = |iso: &mut Vec<u8>, lba: usize, records: &[Vec<u8>]| {
        let mut at = lba * S;
        for r in records {
            iso[at..at + r.len()].copy_from_slice(r);
            at += r.len();
        }
    };
    dir(
        &mut iso,
        18,
        &[
            record(18, S as u32, true, &[0]),
            record(18, S as u32, true, &[1]),
            record(19, e.len() as u32, false, b"EICAR.COM;1"),
            record(20, S as u32, true, b"DOCS"),
        ],
    );
    iso[19 * S..19 * S + e.len()].copy_from_slice(e);
    dir(
        &mut iso,
        20,
        &[
            record(20, S as u32, true, &[0]),
            record(18, S as u32, true, &[1]),
            record(21, 5, false, b"README.TXT;1"),
            record(18, S as u32, true, b"LOOP"),
        ],
    );
    iso[21 * S..21 * S + 5].copy_from_slice(b"hello");
    iso
}

#[test]
fn iso9660_files_are_scanned_and_loops_end() {
    let iso = tiny_iso(&eicar());
    let r = Engine::new(bundled(), Limits::default()).scan(&iso, "disk.iso");
    assert_eq!(r.file_type, "iso9660");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "disk.iso/EICAR.COM");
    assert_eq!(r.objects_scanned, 3, "image, EICAR.COM, DOCS/README.TXT: {r:?}");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
}

#[test]
fn seven_zip_members_are_scanned() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("docs")).unwrap();
    std::fs::write(src.path().join("docs/readme.txt"), "hello").unwrap();
    std::fs::write(src.path().join("eicar.com"), eicar()).unwrap();
    let archive = sevenz_rust2::compress(src.path(), std::io::Cursor::new(Vec::new())).unwrap().into_inner();
    let r = Engine::new(bundled(), Limits::default()).scan(&archive, "pack.7z");
    assert_eq!(r.file_type, "7z");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert!(
        r.detections[0].object.starts_with("pack.7z/") && r.detections[0].object.ends_with("eicar.com"),
        "{:?}",
        r.detections
    );
    assert_eq!(r.objects_scanned, 3);

    let mut cut = archive.clone();
    cut.truncate(archive.len() - 20);
    let r = Engine::new(bundled(), Limits::default()).scan(&cut, "cut.7z");
    assert!(!r.errors.is_empty(), "{r:?}");
}

fn cab_of(entries: &[(&str, &[u8])], ctype: cab::CompressionType) -> Vec<u8> {
    let mut builder = cab::CabinetBuilder::new();
    let folder = builder.add_folder(ctype);
    for (name, _) in entries {
        folder.add_file(*name);
    }
    let mut writer = builder.build(std::io::Cursor::new(Vec::new())).unwrap();
    let mut i = 0;
    while let Some(mut w) = writer.next_file().unwrap() {
        w.write_all(entries[i].1).unwrap();
        i += 1;
    }
    writer.finish().unwrap().into_inner()
}

#[test]
fn cab_members_are_scanned() {
    for ctype in [cab::CompressionType::None, cab::CompressionType::MsZip] {
        let c = cab_of(&[("readme.txt", b"hello"), ("sub\\eicar.com", &eicar())], ctype);
        let r = Engine::new(bundled(), Limits::default()).scan(&c, "setup.cab");
        assert_eq!(r.file_type, "cab");
        assert_eq!(r.verdict, Some(Severity::Malicious), "{ctype:?}: {r:?}");
        assert_eq!(r.detections[0].object, "setup.cab/sub/eicar.com");
    }
}

/// `zip` with its one member's central-directory record repeated under
/// `count` names: every entry points at the same bytes.
fn aliased_members(zip: &[u8], count: u16) -> Vec<u8> {
    let cd_at = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let eocd_at = zip.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let record = &zip[cd_at..eocd_at];
    let name_len = u16::from_le_bytes([record[28], record[29]]) as usize;
    let mut out = zip[..cd_at].to_vec();
    for i in 0..count {
        let name = format!("copy-{i}.com");
        out.extend_from_slice(&record[..28]);
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&record[30..46]);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&record[46 + name_len..]);
    }
    let mut eocd = zip[eocd_at..].to_vec();
    eocd[8..10].copy_from_slice(&count.to_le_bytes());
    eocd[10..12].copy_from_slice(&count.to_le_bytes());
    eocd[12..16].copy_from_slice(&((out.len() - cd_at) as u32).to_le_bytes());
    out.extend_from_slice(&eocd);
    out
}

#[test]
fn overlapping_zip_members_are_flagged_and_not_followed() {
    let zip = aliased_members(&zip_of(&[("a.com", &eicar())]), 50);
    let r = Engine::new(bundled(), Limits::default()).scan(&zip, "overlap.zip");
    assert_eq!(r.objects_scanned, 2, "the archive and its first member only: {r:?}");
    let rules: Vec<_> = r.detections.iter().map(|d| (d.rule.as_str(), d.object.as_str(), d.severity)).collect();
    assert!(rules.contains(&("Heuristics_Zip_OverlappingFiles", "overlap.zip", Severity::Suspicious)), "{rules:?}");
    assert!(rules.iter().any(|(_, o, s)| *o == "overlap.zip/copy-0.com" && *s == Severity::Malicious), "{rules:?}");
    assert_eq!(r.verdict, Some(Severity::Malicious));
    let meta = &r.detections.iter().find(|d| d.namespace == "qala").unwrap().meta;
    assert!(meta[0].1.starts_with("49 member(s)"), "{meta:?}");

    // Members side by side are not overlapping, empty ones included.
    let plain = zip_of(&[("a.txt", b"one"), ("b.txt", b"two"), ("empty", b""), ("empty2", b"")]);
    let r = Engine::new(bundled(), Limits::default()).scan(&plain, "plain.zip");
    assert!(r.detections.is_empty(), "{r:?}");
    assert_eq!(r.objects_scanned, 3);
}

/// An "LZMA alone" (`.lzma`) stream, as `xz --format=lzma` writes it.
fn lzma_alone(data: &[u8]) -> Vec<u8> {
    let opts = lzma_rust2::LzmaOptions::with_preset(6);
    let mut w = lzma_rust2::LzmaWriter::new_use_header(Vec::new(), &opts, Some(data.len() as u64)).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap()
}

/// Bits written least-significant first, as zip's legacy methods read them.
#[derive(Default)]
struct LsbBits {
    out: Vec<u8>,
    bit: u32,
}

impl LsbBits {
    fn put(&mut self, value: u32, width: u32) {
        for i in 0..width {
            if self.bit == 0 {
                self.out.push(0);
            }
            *self.out.last_mut().unwrap() |= (((value >> i) & 1) as u8) << self.bit;
            self.bit = (self.bit + 1) % 8;
        }
    }
}

/// A one-member zip written field by field, for compression methods the
/// zip crate reads but cannot write.
fn raw_zip(name: &str, method: u16, flags: u16, compressed: &[u8], data: &[u8]) -> Vec<u8> {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let le16 = |v: u16| v.to_le_bytes().to_vec();
    let le32 = |v: u32| v.to_le_bytes().to_vec();
    let common = [le16(flags), le16(method), le16(0), le16(0x5021), le32(crc.sum()), le32(compressed.len() as u32)]
        .concat()
        .into_iter()
        .chain(le32(data.len() as u32))
        .chain(le16(name.len() as u16))
        .chain(le16(0))
        .collect::<Vec<u8>>();
    let mut z = [b"PK\x03\x04".to_vec(), le16(20), common.clone(), name.as_bytes().to_vec(), compressed.to_vec()].concat();
    let cd_at = z.len();
    z.extend([b"PK\x01\x02".to_vec(), le16(20), le16(20), common, le16(0), le16(0), le16(0), le32(0), le32(0)].concat());
    z.extend_from_slice(name.as_bytes());
    let cd_len = z.len() - cd_at;
    z.extend(
        [b"PK\x05\x06".to_vec(), le16(0), le16(0), le16(1), le16(1), le32(cd_len as u32), le32(cd_at as u32), le16(0)].concat(),
    );
    z
}

/// Shrink (method 1) with literal codes only: 9-bit LZW codes < 256.
fn shrink_literals(data: &[u8]) -> Vec<u8> {
    let mut b = LsbBits::default();
    data.iter().for_each(|&c| b.put(c as u32, 9));
    b.out
}

/// Reduce (methods 2-5) with empty follower sets: 256 six-bit zero counts,
/// then each byte as 8 plain bits (no 0x90 escapes needed for our data).
fn reduce_literals(data: &[u8]) -> Vec<u8> {
    assert!(!data.contains(&0x90));
    let mut b = LsbBits::default();
    (0..256).for_each(|_| b.put(0, 6));
    data.iter().for_each(|&c| b.put(c as u32, 8));
    b.out
}

/// Implode (method 6), 4 KiB window, no literal tree: a length and a
/// distance tree of 64 six-bit codes each, then each byte as a 1 bit and
/// 8 plain bits.
fn implode_literals(data: &[u8]) -> Vec<u8> {
    let mut b = LsbBits::default();
    for _tree in 0..2 {
        b.put(3, 8); // four description bytes follow
        (0..4).for_each(|_| b.put(0xF5, 8)); // 16 codes of length 6, four times
    }
    data.iter().for_each(|&c| {
        b.put(1, 1);
        b.put(c as u32, 8);
    });
    b.out
}

/// Deflate64 (method 9) shares deflate's stored blocks.
fn deflate64_stored(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x01];
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(&(!(data.len() as u16)).to_le_bytes());
    out.extend_from_slice(data);
    out
}

/// LZMA (method 14): version, properties size, properties, raw stream.
fn zip_lzma(data: &[u8]) -> Vec<u8> {
    let opts = lzma_rust2::LzmaOptions::with_preset(6);
    let mut w = lzma_rust2::LzmaWriter::new_no_header(Vec::new(), &opts, true).unwrap();
    let props = w.props();
    w.write_all(data).unwrap();
    let stream = w.finish().unwrap();
    let mut out = vec![16, 2, 5, 0, props];
    out.extend_from_slice(&opts.dict_size.to_le_bytes());
    out.extend_from_slice(&stream);
    out
}

#[test]
fn legacy_deflate64_and_lzma_zip_methods_unpack() {
    let e = eicar();
    let cases = [
        ("shrink", 1, 0, shrink_literals(&e)),
        ("reduce-1", 2, 0, reduce_literals(&e)),
        ("reduce-4", 5, 0, reduce_literals(&e)),
        ("implode", 6, 0, implode_literals(&e)),
        ("deflate64", 9, 0, deflate64_stored(&e)),
        ("lzma", 14, 2, zip_lzma(&e)),
    ];
    for (method, id, flags, compressed) in cases {
        let zip = raw_zip("payload.com", id, flags, &compressed, &e);
        let r = Engine::new(bundled(), Limits::default()).scan(&zip, &format!("{method}.zip"));
        assert!(r.errors.is_empty(), "{method}: {:?}", r.errors);
        assert_eq!(r.verdict, Some(Severity::Malicious), "{method}: {r:?}");
        assert_eq!(r.detections[0].object, format!("{method}.zip/payload.com"), "{method}");
    }
}

#[test]
fn zip64_members_unpack() {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().large_file(true);
    w.start_file("docs/readme.txt", opts).unwrap();
    w.write_all(b"hello").unwrap();
    w.start_file("bin/eicar.com", opts).unwrap();
    w.write_all(&eicar()).unwrap();
    let zip = w.finish().unwrap().into_inner();
    // ZIP64 extra fields (header id 0x0001) in the local headers.
    assert!(zip.windows(4).any(|x| x == [0x01, 0x00, 0x10, 0x00]), "no zip64 extra field");
    let r = Engine::new(bundled(), Limits::default()).scan(&zip, "big.zip");
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "big.zip/bin/eicar.com");
    assert_eq!(r.objects_scanned, 3);
}

/// A cabinet with one LZX folder (21-bit window) written field by field:
/// the cab crate writes only stored and MSZIP folders. The folder is one
/// LZX uncompressed block, which is as valid LZX as any other block type.
fn cab_lzx(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let folder: Vec<u8> = entries.iter().flat_map(|(_, d)| d.iter().copied()).collect();
    // Header bits (16-bit little-endian words, most significant bit first):
    // no E8 translation, block type 3, 24-bit size, 4 bits of alignment.
    let bits = (3u32 << 28) | ((folder.len() as u32) << 4);
    let mut lzx = Vec::new();
    lzx.extend_from_slice(&((bits >> 16) as u16).to_le_bytes());
    lzx.extend_from_slice(&(bits as u16).to_le_bytes());
    [1u32, 1, 1].iter().for_each(|r| lzx.extend_from_slice(&r.to_le_bytes()));
    lzx.extend_from_slice(&folder);
    if folder.len() % 2 == 1 {
        lzx.push(0);
    }
    let mut files = Vec::new();
    let mut offset = 0u32;
    for (name, data) in entries {
        files.extend_from_slice(&(data.len() as u32).to_le_bytes());
        files.extend_from_slice(&offset.to_le_bytes());
        files.extend_from_slice(&[0, 0, 0x21, 0x50, 0, 0, 0x20, 0]);
        files.extend_from_slice(name.as_bytes());
        files.push(0);
        offset += data.len() as u32;
    }
    let data_at = 36 + 8 + files.len();
    let total = data_at + 8 + lzx.len();
    let mut cab = b"MSCF".to_vec();
    for v in [0u32, total as u32, 0, 36 + 8, 0] {
        cab.extend_from_slice(&v.to_le_bytes());
    }
    cab.extend_from_slice(&[3, 1]);
    for v in [1u16, entries.len() as u16, 0, 0, 0] {
        cab.extend_from_slice(&v.to_le_bytes());
    }
    cab.extend_from_slice(&(data_at as u32).to_le_bytes());
    cab.extend_from_slice(&1u16.to_le_bytes());
    cab.extend_from_slice(&0x1503u16.to_le_bytes());
    cab.extend_from_slice(&files);
    cab.extend_from_slice(&0u32.to_le_bytes());
    cab.extend_from_slice(&(lzx.len() as u16).to_le_bytes());
    cab.extend_from_slice(&(folder.len() as u16).to_le_bytes());
    cab.extend_from_slice(&lzx);
    cab
}

#[test]
fn cab_lzx_members_are_scanned() {
    let c = cab_lzx(&[("readme.txt", b"hello"), ("sub\\eicar.com", &eicar())]);
    let r = Engine::new(bundled(), Limits::default()).scan(&c, "lzx.cab");
    assert_eq!(r.file_type, "cab");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.verdict, Some(Severity::Malicious), "{r:?}");
    assert_eq!(r.detections[0].object, "lzx.cab/sub/eicar.com");
    assert_eq!(r.objects_scanned, 3);
}

/// MS-OVBA compression with literals only (valid, if not small): one
/// compressed chunk per 3,640 bytes, a zero flag byte before every 8.
fn ovba_literals(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x01];
    for chunk in data.chunks(3640) {
        let body: Vec<u8> = chunk.chunks(8).flat_map(|group| std::iter::once(0u8).chain(group.iter().copied())).collect();
        out.extend_from_slice(&(0xB000u16 | (body.len() as u16 + 2 - 3)).to_le_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// A Word 97 file with a VBA project: `Macros/VBA/dir` lists one module
/// whose source starts after 32 bytes of (fake) p-code. `dir_signature`
/// is the compressed container's first byte (0x01 when valid).
fn doc_with_macro(source: &str, dir_signature: u8) -> Vec<u8> {
    let record = |id: u16, body: &[u8]| [&id.to_le_bytes()[..], &(body.len() as u32).to_le_bytes(), body].concat();
    let dir = [
        record(0x0001, &1u32.to_le_bytes()),
        // PROJECTVERSION: a size field of 4, then 6 bytes.
        [&0x0009u16.to_le_bytes()[..], &4u32.to_le_bytes(), &[1, 0, 0, 0, 2, 0]].concat(),
        record(0x000F, &1u16.to_le_bytes()),
        record(0x0013, &0xFFFFu16.to_le_bytes()),
        record(0x0019, b"Module1"),
        record(0x0047, &"Module1".encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<_>>()),
        record(0x001A, b"Module1"),
        record(0x0032, &"Module1".encode_utf16().flat_map(u16::to_le_bytes).collect::<Vec<_>>()),
        record(0x0031, &32u32.to_le_bytes()),
        record(0x0021, b""),
        record(0x002B, b""),
        record(0x0010, b""),
    ]
    .concat();
    let mut module = vec![0xCCu8; 32];
    module.extend_from_slice(&ovba_literals(source.as_bytes()));
    let mut cf = cfb::CompoundFile::create(std::io::Cursor::new(Vec::new())).unwrap();
    cf.create_storage_all("/Macros/VBA").unwrap();
    cf.create_stream("/WordDocument").unwrap().write_all(b"document text").unwrap();
    let mut dir = ovba_literals(&dir);
    dir[0] = dir_signature;
    cf.create_stream("/Macros/VBA/dir").unwrap().write_all(&dir).unwrap();
    cf.create_stream("/Macros/VBA/Module1").unwrap().write_all(&module).unwrap();
    cf.create_stream("/Macros/VBA/_VBA_PROJECT").unwrap().write_all(&[0xCC, 0x61, 0xFF, 0xFF, 0x00]).unwrap();
    cf.flush().unwrap();
    cf.into_inner().into_inner()
}

#[test]
fn vba_macro_source_is_decompressed_and_scanned() {
    let source = "Attribute VB_Name = \"Module1\"\r\nSub AutoOpen()\r\n    Shell \"cmd /c calc.exe\"\r\nEnd Sub\r\n".repeat(3);
    let doc = doc_with_macro(&source, 0x01);
    let r = Engine::new(bundled(), Limits::default()).scan(&doc, "macro.doc");
    assert_eq!(r.file_type, "ole2");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let found: Vec<_> = r.detections.iter().map(|d| (d.rule.as_str(), d.object.as_str())).collect();
    // Only the decompressed source matches: flag bytes split the strings in the stream.
    assert_eq!(found, [("Qala_Office_AutoExec_Macro", "macro.doc/Macros/VBA/Module1.vba")], "{r:?}");
    assert_eq!(r.detections[0].techniques, ["T1204.002", "T1059.005"]);
    assert_eq!(r.verdict, Some(Severity::Suspicious));

    // A dir stream that is not MS-OVBA compressed is an error, not a crash;
    // the streams themselves are still scanned.
    let r = Engine::new(bundled(), Limits::default()).scan(&doc_with_macro(&source, 0x07), "broken.doc");
    assert_eq!(r.errors, ["broken.doc/Macros/VBA/dir: vba: no compressed container signature"]);
    assert_eq!((r.verdict, r.objects_scanned), (Some(Severity::Clean), 5));

    // A stream that happens to be called `dir` outside a VBA project is a
    // stream like any other.
    let mut cf = cfb::CompoundFile::create(std::io::Cursor::new(Vec::new())).unwrap();
    cf.create_stream("/dir").unwrap().write_all(b"not a VBA directory").unwrap();
    cf.flush().unwrap();
    let r = Engine::new(bundled(), Limits::default()).scan(&cf.into_inner().into_inner(), "plain.doc");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.objects_scanned, 2);
}

/// The elf module's output is trimmed (no symbol tables) only for rules
/// that cannot see the tables; what rules can see is the same either way.
#[test]
fn elf_module_fields_are_intact_with_and_without_trimming() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("ep.yar"),
        "import \"elf\"\nrule ep { condition: elf.entry_point == 0x80 and elf.number_of_sections == 3 and elf.machine == elf.EM_X86_64 }",
    )
    .unwrap();
    let trimmed = compile_rules(d.path(), &Limits::default()).unwrap();
    std::fs::write(
        d.path().join("sym.yar"),
        "import \"elf\"\nrule sym { condition: elf.symtab_entries == 0 and elf.dynsym_entries == 0 }",
    )
    .unwrap();
    let full = compile_rules(d.path(), &Limits::default()).unwrap();
    for rules in [&trimmed, &full] {
        let shipped = Ruleset::from_bytes(rules.id.clone(), &rules.to_bytes().unwrap()).unwrap();
        let elf = tiny_elf();
        let r = Engine::new(&shipped, Limits::default()).scan(&elf, "tool");
        let hits: Vec<_> = r.detections.iter().map(|d| d.rule.as_str()).collect();
        assert!(hits.contains(&"ep"), "{hits:?}");
        // Inside an archive too (the trimmed output is set per object).
        let r = Engine::new(&shipped, Limits::default()).scan(&zip_of(&[("a", b"text"), ("bin/tool", &elf)]), "t.zip");
        assert!(r.detections.iter().any(|d| d.rule == "ep" && d.object == "t.zip/bin/tool"), "{:?}", r.detections);
    }
}

/// Decoded objects held at once are counted against `max_scan_memory`: a
/// zip holding a stored 40 MiB zip whose member is 40 MiB of zeros needs 80
/// MiB live at the bottom; with 60 MiB allowed the member is cut there.
#[test]
fn decoded_objects_held_at_once_are_capped() {
    let zeros = vec![0u8; 40 << 20];
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    w.start_file("zeros.bin", stored).unwrap();
    std::io::Write::write_all(&mut w, &zeros).unwrap();
    let inner = w.finish().unwrap().into_inner();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    w.start_file("inner.zip", deflated).unwrap();
    std::io::Write::write_all(&mut w, &inner).unwrap();
    let outer = w.finish().unwrap().into_inner();

    let limits = Limits { max_scan_memory: 60 << 20, max_ratio: 100_000, ..Limits::default() };
    let r = Engine::new(bundled(), limits).scan(&outer, "outer.zip");
    let hit: Vec<_> = r.limits_hit.iter().filter(|l| l.limit == Limit::MaxScanMemory).collect();
    assert_eq!(hit.len(), 1, "{:?}", r.limits_hit);
    assert_eq!(hit[0].object, "outer.zip/inner.zip/zeros.bin");
    // With the default (512 MiB) nothing is cut.
    let full = Engine::new(bundled(), Limits { max_ratio: 100_000, ..Limits::default() }).scan(&outer, "outer.zip");
    assert!(full.limits_hit.is_empty(), "{:?}", full.limits_hit);
}

#[test]
fn a_verified_sha256_is_taken_not_recomputed_and_the_scan_is_the_same() {
    let inner = zip_of(&[("readme.txt", b"hello"), ("eicar.com", &eicar())]);
    let mut e = Engine::new(bundled(), Limits::default());
    let fresh = e.scan(&inner, "");
    // The worker passes the sha256 its coordinator verified: it is the
    // report's, and nothing else changes (nested objects are still hashed).
    let given = "ab".repeat(32);
    let trusted = e.scan_verified(&inner, &given, std::sync::Arc::default());
    assert_eq!(trusted.sha256, given);
    assert_eq!((trusted.md5.as_str(), trusted.sha1.as_str()), (fresh.md5.as_str(), fresh.sha1.as_str()));
    assert_eq!(trusted.verdict, fresh.verdict);
    let rules = |r: &qala_engine::Report| r.detections.iter().map(|d| (d.rule.clone(), d.object.clone())).collect::<Vec<_>>();
    assert_eq!(rules(&trusted), rules(&fresh));
    assert_eq!(trusted.objects_scanned, fresh.objects_scanned);
}

#[test]
fn a_root_hashed_by_the_caller_is_not_read_for_digests_and_the_scan_is_the_same() {
    let inner = zip_of(&[("readme.txt", b"hello"), ("eicar.com", &eicar())]);
    let mut e = Engine::new(bundled(), Limits::default());
    let fresh = e.scan(&inner, "");
    // The worker hashes the upload itself, alongside the scan: the report
    // carries the given sha256 and no other root digest; what was found,
    // and the nested objects' digests, are as in a full scan.
    let given = "ab".repeat(32);
    let r = e.scan_unhashed(&inner, &given, std::sync::Arc::default());
    assert_eq!((r.sha256.as_str(), r.md5.as_str(), r.sha1.as_str()), (given.as_str(), "", ""));
    assert_eq!(r.verdict, fresh.verdict);
    let rules = |r: &qala_engine::Report| r.detections.iter().map(|d| (d.rule.clone(), d.object.clone())).collect::<Vec<_>>();
    assert_eq!(rules(&r), rules(&fresh));
    assert_eq!(r.objects, fresh.objects);
    assert_eq!(r.objects_scanned, fresh.objects_scanned);
}

/// Every distinct object inside a submission is listed with its sha256
/// (and md5/sha1 only when asked), its path and its container, so IOC lists
/// can name objects inside archives; duplicates are listed once.
#[test]
fn objects_inside_are_listed_with_their_digests_and_containers() {
    use sha2::Digest as _;
    let inner = zip_of(&[("readme.txt", b"hello"), ("eicar.com", &eicar())]);
    let outer = zip_of(&[("inner.zip", &inner), ("notes.txt", b"notes"), ("again.txt", b"hello")]);
    let mut e = Engine::new(bundled(), Limits::default());
    let r = e.scan(&outer, "");
    let listed: Vec<(&str, u32, String)> =
        r.objects.iter().map(|o| (o.object.as_str(), o.parent, hex::encode(o.sha256))).collect();
    let sha = |d: &[u8]| hex::encode(sha2::Sha256::digest(d));
    assert_eq!(
        listed,
        [
            ("inner.zip", 0, sha(&inner)),
            ("inner.zip/readme.txt", 1, sha(b"hello")),
            ("inner.zip/eicar.com", 1, sha(&eicar())),
            ("notes.txt", 0, sha(b"notes")),
        ],
        "again.txt has readme.txt's content: scanned and listed once"
    );
    assert!(r.objects.iter().all(|o| o.md5.is_none() && o.sha1.is_none() && !o.truncated));
    assert_eq!(r.object_digest_kinds, qala_engine::DigestKinds::default());

    e.set_object_digests(qala_engine::DigestKinds { md5: true, sha1: false });
    let r = e.scan(&outer, "");
    let eicar_md5 = "44d88612fea8a8f36de82e1278abb02f";
    assert_eq!(r.objects[2].md5.map(hex::encode).as_deref(), Some(eicar_md5));
    assert!(r.objects.iter().all(|o| o.md5.is_some() && o.sha1.is_none()));

    // A member read only in part is listed, marked, with its first bytes' digest.
    let big = vec![b'a'; 4096];
    let limits = Limits { max_object_size: 1000, ..Limits::default() };
    let r = Engine::new(bundled(), limits).scan(&zip_of(&[("big.txt", &big)]), "");
    assert_eq!(r.objects.len(), 1, "{:?}", r.objects);
    assert!(r.objects[0].truncated);
    assert_eq!(hex::encode(r.objects[0].sha256), sha(&big[..1000]));
}

//! Detection depth: every unwrapping of the `formats` modules added for
//! embedded objects, legacy encodings, installers, carving and packed
//! executables, on generated files that carry a known payload; and ClamAV's
//! own test files (Debian's `clamav-testfiles`, which `.ci/run` installs),
//! with a rule that matches `clam.exe` only byte for byte.

mod builders;

use builders::*;
use qala_engine::{Engine, Limit, Limits, Report, Ruleset, compile_rules};
use std::io::Write;
use std::path::Path;
use std::sync::OnceLock;

/// A harmless payload and a rule matching it whole (by sha256), so a
/// detection proves the unpacker handed it over byte for byte.
const PAYLOAD: &[u8] = b"MZ qala test payload: not a program, a marker for the depth tests.\x00\x01\x02\x90\x90\xff";

/// What the generated packed programs carry once unpacked.
const EMU_MARKER: &str = "QALA-EMULATION-MARKER-5c1d";

fn rules() -> &'static Ruleset {
    static R: OnceLock<Ruleset> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let sha: String = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(PAYLOAD))
        };
        let e8: String = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(e8_blob()))
        };
        let rule = format!(
            "import \"hash\"\nrule payload {{ condition: hash.sha256(0, filesize) == \"{sha}\" }}\n\
             import \"hash\"\nrule clam_exe {{ condition: filesize == 544 and hash.sha256(0, filesize) == \
             \"71e7b604d18aefd839e51a39c88df8383bb4c071dc31f87f00a2b5df580d4495\" }}\n\
             rule emu_marker {{ strings: $m = \"{EMU_MARKER}\" condition: $m }}\n\
             rule e8_blob {{ condition: hash.sha256(0, filesize) == \"{e8}\" }}\n"
        );
        std::fs::write(dir.path().join("depth.yar"), rule).unwrap();
        compile_rules(dir.path(), &Limits::default()).unwrap()
    })
}

fn scan(data: &[u8]) -> Report {
    Engine::new(rules(), Limits::default()).scan(data, "")
}

/// The object paths where the payload was found.
fn found(r: &Report) -> Vec<String> {
    r.detections.iter().filter(|d| d.rule == "payload").map(|d| d.object.clone()).collect()
}

#[track_caller]
fn assert_found(data: &[u8], file_type: &str, object: &str) {
    let r = scan(data);
    assert_eq!(r.file_type, file_type, "{r:?}");
    assert_eq!(found(&r), [object], "errors {:?}, limits {:?}", r.errors, r.limits_hit);
}

#[test]
fn uuencode_and_xxencode_anywhere_in_text() {
    let text = format!("Hi,\nthe file follows.\n\n{}\ncheers\n", uuencode("a.exe", PAYLOAD, false));
    assert_found(text.as_bytes(), "text", "a.exe");
    let text = format!("notes\n{}", uuencode("b.exe", PAYLOAD, true));
    assert_found(text.as_bytes(), "text", "b.exe");
}

#[test]
fn binhex_data_fork() {
    assert_found(&binhex("c.exe", PAYLOAD), "text", "binhex.data");
    // Under a small object cap the fork is cut and the limit named.
    let limits = Limits { max_object_size: 10, ..Limits::default() };
    let r = Engine::new(rules(), limits).scan(&binhex("c.exe", PAYLOAD), "");
    assert!(r.limits_hit.iter().any(|l| l.limit == Limit::MaxObjectSize && l.object == "binhex.data"), "{r:?}");
}

/// Headers that declare 4 GiB (or point outside the file) get an error for
/// that member and cost no more than the file: nothing is allocated from a
/// declared size.
#[test]
fn lying_sizes_are_errors_not_allocations() {
    let set_u32 = |mut v: Vec<u8>, at: usize, value: u32| {
        v[at..at + 4].copy_from_slice(&value.to_le_bytes());
        v
    };
    // ARJ: the member's original size (basic header offset 4 + 16) says 4 GiB.
    let arj = arj_stored("big.exe", PAYLOAD);
    let first = 4 + u16::from_le_bytes([arj[2], arj[3]]) as usize + 4 + 2;
    let arj = set_u32(arj, first + 4 + 16, u32::MAX);
    // SZDD: 4 GiB uncompressed.
    let szdd = set_u32(szdd(PAYLOAD), 10, u32::MAX);
    // TNEF: the attachment data's length runs past the end.
    let t = tnef("big.exe", PAYLOAD);
    let at = t.len() - PAYLOAD.len() - 2 - 4;
    let tnef = set_u32(t, at, u32::MAX);
    // SIS: the file data pointer is outside the file.
    let s = sis("big.exe", PAYLOAD);
    let sis = set_u32(s, 0x66 + 32, u32::MAX - 10);
    for (name, data) in [("arj", arj), ("szdd", szdd), ("tnef", tnef), ("sis", sis)] {
        let r = scan(&data);
        assert!(found(&r).is_empty() || name == "szdd", "{name}: {r:?}");
        assert!(r.bytes_scanned <= 2 * data.len() as u64 + PAYLOAD.len() as u64, "{name}: {r:?}");
        if name != "szdd" {
            assert!(!r.errors.is_empty(), "{name} must say what was wrong: {r:?}");
        }
    }
}

#[test]
fn base64_data_uris_and_long_runs() {
    let html = format!("<html><a href=\"data:application/octet-stream;base64,{}\">x</a></html>", base64(PAYLOAD));
    assert_found(html.as_bytes(), "text", "data-uri-1");
    // A long run in a script, wrapped at 76 columns.
    let big: Vec<u8> = PAYLOAD.iter().copied().cycle().take(PAYLOAD.len() * 4).collect();
    let b64 = base64(&big);
    let wrapped: Vec<&str> = b64.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
    let js = format!("var blob = \"\n{}\";\n", wrapped.join("\n"));
    let r = scan(js.as_bytes());
    assert!(r.objects_scanned >= 2, "{r:?}");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // Short runs (identifiers, hashes) are left alone.
    let r = scan(b"id=QWxhZGRpbjpvcGVuIHNlc2FtZQ and sha=9f86d081884c7d659a2feaa0c55ad015");
    assert_eq!(r.objects_scanned, 1);
}

#[test]
fn quoted_printable_outside_mail() {
    let mut qp = String::new();
    for (i, b) in PAYLOAD.iter().enumerate() {
        qp.push_str(&format!("={b:02X}"));
        if i % 10 == 9 {
            qp.push_str("=\n");
        }
    }
    assert_found(qp.as_bytes(), "text", "quoted-printable");
}

#[test]
fn tnef_attachments() {
    assert_found(&tnef("invoice.exe", PAYLOAD), "tnef", "invoice.exe");
}

#[test]
fn szdd_expansion() {
    assert_found(&szdd(PAYLOAD), "ms-compress", "expanded");
}

#[test]
fn sis_files() {
    assert_found(&sis("app.exe", PAYLOAD), "sis", "app.exe");
}

#[test]
fn arj_stored_members() {
    assert_found(&arj_stored("d.exe", PAYLOAD), "arj", "d.exe");
}

#[test]
fn rar_4_and_5_solid_or_not() {
    let other: Vec<u8> = (0..20_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
    for version in [rars::ArchiveVersion::Rar29, rars::ArchiveVersion::Rar50] {
        for solid in [false, true] {
            let rar = rar(version, solid, &[("a.bin", &other), ("dir/l.exe", PAYLOAD)]);
            assert_found(&rar, "rar", "dir/l.exe");
        }
    }
    // Under a small object cap the member is cut, named as such, and the
    // archive's other members still come out.
    let rar = rar(rars::ArchiveVersion::Rar50, false, &[("a.bin", &other), ("l.exe", PAYLOAD)]);
    let limits = Limits { max_object_size: 1000, ..Limits::default() };
    let r = Engine::new(rules(), limits).scan(&rar, "");
    assert!(r.limits_hit.iter().any(|l| l.limit == Limit::MaxObjectSize && l.object == "a.bin"), "{r:?}");
    assert_eq!(found(&r), ["l.exe"], "{r:?}");
}

#[test]
fn squashfs_images_of_every_pure_rust_codec() {
    for comp in ["gzip", "xz", "zstd", "lz4"] {
        let image = squashfs(comp, &[("etc/readme.txt", b"hello"), ("usr/bin/n.exe", PAYLOAD)]);
        assert_found(&image, "squashfs", "usr/bin/n.exe");
    }
    // LZO is not read (the only crates are GPL): an error, not a crash.
    let image = squashfs("lzo", &[("o.exe", PAYLOAD)]);
    let r = scan(&image);
    assert!(found(&r).is_empty() && !r.errors.is_empty(), "{r:?}");
}

#[test]
fn wim_images_stored_xpress_and_lzx() {
    // Big enough for several 32 KiB XPRESS chunks before the payload.
    let text: Vec<u8> = (0..50_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    for compress in ["none", "fast"] {
        let image = wim(compress, &[("Windows/notes.txt", &text), ("Windows/System32/r.exe", PAYLOAD)]);
        assert_found(&image, "wim", "Windows/System32/r.exe");
    }
    // LZX (wimlib's "maximum", Windows' default): verbatim and aligned
    // blocks over text, and x86 calls through the E8 translation.
    // Windows of 32 KiB (16-bit block sizes) and 1 MiB (24-bit).
    for chunk in [None, Some(1 << 20)] {
        let entries: [(&str, &[u8]); 3] =
            [("notes.txt", &text), ("Windows/System32/r.exe", PAYLOAD), ("Windows/calls.bin", &e8_blob())];
        let image = wim_chunked("maximum", chunk, &entries);
        let r = scan(&image);
        assert_eq!(found(&r), ["Windows/System32/r.exe"], "{chunk:?}: {r:?}");
        assert!(r.detections.iter().any(|d| d.rule == "e8_blob" && d.object == "Windows/calls.bin"), "{chunk:?}: {r:?}");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        // Damaged chunks are errors of their file, never a panic.
        let mut damaged = image.clone();
        for at in (0x200..damaged.len()).step_by(997) {
            damaged[at] ^= 0x5A;
        }
        let r = scan(&damaged);
        assert!(r.errors.iter().all(|e| !e.contains("panicked")), "{:?}", r.errors);
    }
    // LZMS is reported, not guessed at.
    let r = scan(&wim("recovery", &[("big.txt", &text)]));
    assert!(r.errors.iter().any(|e| e.contains("LZMS")), "{r:?}");
}

/// 96 KiB of x86-like code: prologues, calls with near and far targets
/// (what the E8 translation rewrites), returns and some text.
fn e8_blob() -> Vec<u8> {
    let mut out = Vec::new();
    let mut x: u32 = 0x9E37_79B9;
    while out.len() < 96 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&[0x55, 0x8B, 0xEC, 0xE8]);
        let target = if x.is_multiple_of(3) { (x % 20_000_000) as i32 } else { (x % 5000) as i32 - 2500 };
        out.extend_from_slice(&target.to_le_bytes());
        out.extend_from_slice(&[0x5D, 0xC3]);
        out.extend_from_slice(format!("fn{} ", x % 97).as_bytes());
    }
    out
}

#[test]
fn lha_members() {
    assert_found(&lha_stored("m.exe", PAYLOAD), "lha", "m.exe");
}

#[test]
fn ooxml_documents_are_typed_and_their_active_parts_named() {
    let ole = doc_with_package("p.exe", PAYLOAD);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in [
        ("[Content_Types].xml", &b"<Types/>"[..]),
        ("word/document.xml", b"<w:document/>"),
        ("word/embeddings/oleObject1.bin", &ole),
    ] {
        w.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(data).unwrap();
    }
    let docx = w.finish().unwrap().into_inner();
    let r = scan(&docx);
    assert_eq!(r.file_type, "docx");
    assert_eq!(found(&r), ["word/embeddings/oleObject1.bin/ObjectPool/_1234/\u{1}Ole10Native/p.exe"], "{r:?}");
    let meta = r.object_meta.iter().find(|m| m.object.is_empty()).expect("the document's own meta");
    assert_eq!(meta.meta, [("ooxml_active_parts".to_string(), "word/embeddings/oleObject1.bin".to_string())]);
    // A plain zip stays a zip.
    assert_eq!(scan(&zip_of("q.txt", b"hello")).file_type, "zip");
}

#[test]
fn chm_stored_files() {
    // The LZX section is exercised by ClamAV's clam.chm (clamav_test_files).
    assert_found(&chm_stored("help/k.exe", PAYLOAD), "chm", "help/k.exe");
}

#[test]
fn ole1_packager_objects_in_ole2_rtf_and_powerpoint() {
    assert_found(&doc_with_package("e.exe", PAYLOAD), "ole2", "ObjectPool/_1234/\u{1}Ole10Native/e.exe");
    assert_found(&rtf_with_package("f.exe", PAYLOAD), "rtf", "object-1.Package/f.exe");
    assert_found(
        &ppt_with_package("g.exe", PAYLOAD),
        "ole2",
        "PowerPoint Document/object-1.ole/ObjectPool/_1234/\u{1}Ole10Native/g.exe",
    );
}

#[test]
fn msi_stream_names_are_decoded_and_cabinets_opened() {
    let mut builder = cab::CabinetBuilder::new();
    builder.add_folder(cab::CompressionType::MsZip).add_file("h.exe");
    let mut w = builder.build(std::io::Cursor::new(Vec::new())).unwrap();
    while let Some(mut f) = w.next_file().unwrap() {
        f.write_all(PAYLOAD).unwrap();
    }
    let cab = w.finish().unwrap().into_inner();
    let r = scan(&msi_with_cab(&cab));
    assert_eq!(found(&r), ["Data1.cab/h.exe"], "{r:?}");
}

fn zip_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
    w.write_all(data).unwrap();
    w.finish().unwrap().into_inner()
}

#[test]
fn containers_are_carved_from_executables_and_unknown_data() {
    // A self-extractor: a stub program, then a zip in its overlay.
    let mut sfx = b"MZ\x90\0".to_vec();
    sfx.resize(1024, 0);
    sfx.extend_from_slice(&zip_of("i.exe", PAYLOAD));
    let r = scan(&sfx);
    assert_eq!(found(&r), ["carved-1024.zip/i.exe"], "{r:?}");

    // Unknown data with a gzip stream inside.
    let mut blob = vec![0xAB; 300];
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(PAYLOAD).unwrap();
    blob.extend_from_slice(&gz.finish().unwrap());
    blob.extend_from_slice(&[0xCD; 100]);
    let r = scan(&blob);
    assert_eq!(r.file_type, "binary");
    assert_eq!(found(&r), ["carved-300.gz/carved-300"], "{r:?}");
}

#[test]
fn carving_is_bounded_per_object() {
    // Ten thousand cabinet headers that check out (size, version) in
    // otherwise random data: 16 carved at most, and the rest reported.
    let mut x = vec![0u8; 4];
    for _ in 0..10_000 {
        let mut cab = b"MSCF\0\0\0\0".to_vec();
        cab.extend_from_slice(&44u32.to_le_bytes());
        cab.resize(24, 0x11);
        cab.extend_from_slice(&[3, 1]);
        cab.resize(44, 0x22);
        x.extend_from_slice(&cab);
    }
    let r = scan(&x);
    assert!(r.objects_scanned <= 1 + 16, "{}", r.objects_scanned);
    assert!(r.errors.iter().any(|e| e.contains("not carved")), "{:?}", r.errors);
}

#[test]
fn installshield_setups_both_generations() {
    // A minimal PE stub (headers only), then the file list in its overlay.
    let stub = headers_only_pe();
    for v2 in [false, true] {
        let setup = [stub.clone(), installshield(v2, &[("Setup.ini", b"[Startup]\n"), ("s.exe", PAYLOAD)])].concat();
        let r = scan(&setup);
        assert_eq!(found(&r), ["installshield/s.exe"], "v2 {v2}: {r:?}");
    }
    // A list cut short: the files before the cut, and an error.
    let mut lying = [stub.clone(), installshield(false, &[("s.exe", PAYLOAD), ("t.exe", PAYLOAD)])].concat();
    let n = lying.len();
    lying.truncate(n - 10);
    let r = scan(&lying);
    assert_eq!(found(&r), ["installshield/s.exe"], "{r:?}");
    assert!(r.errors.iter().any(|e| e.contains("installshield")), "{r:?}");
}

#[test]
fn installshield_cabinets_in_an_older_setup() {
    let stub = headers_only_pe();
    for obfuscated in [false, true] {
        let files: [(&str, &[u8]); 2] = [("readme.txt", b"hello"), ("s.exe", PAYLOAD)];
        let setup = [stub.clone(), installshield_cab_setup(&files, obfuscated)].concat();
        let r = scan(&setup);
        assert_eq!(found(&r), ["Disk1/data1.hdr/app/s.exe"], "obfuscated {obfuscated}: {r:?}");
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    }
    // The volume missing from the setup: said, per file.
    let setup = [stub.clone(), installshield_cab_setup(&[("s.exe", PAYLOAD)], false)].concat();
    let mut renamed = setup.clone();
    for at in memchr::memmem::find_iter(&setup, b"data2.cab").collect::<Vec<_>>() {
        renamed[at + 4] = b'7';
    }
    let r = scan(&renamed);
    assert!(found(&r).is_empty(), "{r:?}");
    assert!(r.errors.iter().any(|e| e.contains("volume data2.cab is not in the setup")), "{:?}", r.errors);
    // A list whose last file is cut: the files before it, and an error.
    let cut = &setup[..setup.len() - 4];
    let r = scan(cut);
    assert_eq!(found(&r), ["Disk1/data1.hdr/app/s.exe"], "{r:?}");
    assert!(r.errors.iter().any(|e| e.contains("setup.ini")), "{:?}", r.errors);
}

#[test]
fn upx_elf_blocks_are_unpacked() {
    let mut stub = b"\x7FELF\x01\x01\x01\0".to_vec();
    stub.resize(256, 0);
    let elf = upx_elf(stub.clone(), PAYLOAD);
    let r = scan(&elf);
    assert_eq!(found(&r), ["upx-unpacked"], "{r:?}");
    // LZMA (method 14), as UPX --lzma writes it.
    let r = scan(&upx_elf_lzma(stub, PAYLOAD));
    assert_eq!(found(&r), ["upx-unpacked"], "{r:?}");
}

#[test]
fn an_object_cut_by_a_limit_is_scanned_again_where_it_fits() {
    // ClamAV's `clam_cache_emax`: the same archive nested too deep and
    // again at the top; the shallow copy must not be skipped as seen.
    let inner = zip_of("j.exe", PAYLOAD);
    let middle = zip_of("inner.zip", &inner);
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in [("a.zip", zip_of("middle.zip", &middle)), ("middle.zip", middle.clone())] {
        w.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(&data).unwrap();
    }
    let outer = w.finish().unwrap().into_inner();
    let limits = Limits { max_depth: 3, ..Limits::default() };
    let r = Engine::new(rules(), limits).scan(&outer, "");
    assert!(r.limits_hit.iter().any(|l| l.limit == Limit::MaxDepth), "{r:?}");
    assert_eq!(found(&r), ["middle.zip/inner.zip/j.exe"], "{r:?}");
}

/// The emulated program: `ret` (back into kernel32, which ends the run),
/// then the marker.
fn emulated_program() -> Vec<u8> {
    let mut p = vec![0xC3];
    p.extend_from_slice(EMU_MARKER.as_bytes());
    p.resize(3000, 0);
    p
}

fn emulation_meta(r: &Report) -> String {
    let meta = r.object_meta.iter().find(|m| m.object.is_empty()).expect("emulation metadata on the root");
    meta.meta.iter().find(|(k, _)| k == "emulation").map(|(_, v)| v.clone()).expect("emulation entry")
}

fn marker_found_in(r: &Report) -> Vec<String> {
    r.detections.iter().filter(|d| d.rule == "emu_marker").map(|d| d.object.clone()).collect()
}

#[test]
fn a_packed_program_is_unpacked_by_emulating_its_stub() {
    let packed = packed_pe(&emulated_program(), false, None);
    assert!(!packed.windows(EMU_MARKER.len()).any(|w| w == EMU_MARKER.as_bytes()));
    let r = scan(&packed);
    assert_eq!(marker_found_in(&r), ["emu-unpacked"], "{r:?}");
    let meta = emulation_meta(&r);
    // The stub ran to the program, which returned into kernel32.
    assert!(meta.contains("stopped at exit") && meta.contains("entry point 0x1000"), "{meta}");
    // The dump is a PE again, its entry point the program's.
    let exe = r.executables.iter().find(|e| e.object == "emu-unpacked").expect("the dump is summarised as an executable");
    assert_eq!(exe.entry_point, 0x1000, "{exe:?}");
}

#[test]
fn a_stub_that_goes_through_its_own_exception_handler_is_followed() {
    let packed = packed_pe(&emulated_program(), true, None);
    let r = scan(&packed);
    assert_eq!(marker_found_in(&r), ["emu-unpacked"], "{r:?}");
    assert!(emulation_meta(&r).contains("stopped at exit"), "{}", emulation_meta(&r));
}

#[test]
fn a_stub_that_never_ends_costs_its_instruction_budget_only() {
    // jmp $: a stub that spins forever.
    let packed = packed_pe(&[], false, Some(&[0xEB, 0xFE]));
    let started = std::time::Instant::now();
    let r = scan(&packed);
    assert!(emulation_meta(&r).contains("stopped at instruction budget"), "{}", emulation_meta(&r));
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    // A stub that writes nothing yields no dump.
    assert!(r.object_meta.iter().all(|m| m.object.is_empty()), "{r:?}");
    // One that faults with no handler of its own stops there.
    let r = scan(&packed_pe(&[], false, Some(&[0x31, 0xC0, 0x8B, 0x00])));
    assert!(emulation_meta(&r).contains("unhandled exception 0xc0000005"), "{}", emulation_meta(&r));
    // A 1 KiB file declaring a 112 MiB image is not laid out at all; at
    // 16 MiB it is (32 MiB of emulated memory, half for the image).
    let mut huge = packed_pe(&emulated_program(), false, None);
    huge[0x90..0x94].copy_from_slice(&0x0700_0000u32.to_le_bytes());
    let r = scan(&huge);
    assert_eq!(r.objects_scanned, 1, "{r:?}");
    assert!(emulation_meta(&r).contains("not run: image of 117440512 bytes over the 16777216 byte budget"), "{r:?}");
    huge[0x90..0x94].copy_from_slice(&0x0100_0000u32.to_le_bytes());
    let r = scan(&huge);
    assert_eq!(marker_found_in(&r), ["emu-unpacked"], "{r:?}");
    assert!(r.bytes_scanned <= (16 << 20) + huge.len() as u64, "{r:?}");
}

#[test]
fn wwpack32_sections_are_decoded_statically() {
    // 20 bytes first: the marker's literals straddle a bit word of the stream.
    let packed = wwpack_pe(&[&[0u8; 20][..], &emulated_program()].concat());
    assert!(!packed.windows(EMU_MARKER.len()).any(|w| w == EMU_MARKER.as_bytes()));
    let r = scan(&packed);
    assert_eq!(marker_found_in(&r), ["wwpack-unpacked"], "{r:?}");
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    // A table pointing outside the image is an error, not a crash.
    let mut lying = packed.clone();
    let table = lying.len() - 0x200 + 0x100;
    lying[table..table + 4].copy_from_slice(&0x7FFF_0000u32.to_le_bytes());
    let r = scan(&lying);
    assert!(r.errors.iter().any(|e| e.contains("wwpack")), "{r:?}");
}

/// ClamAV's test files that Qala finds `clam.exe` in, byte for byte: all 43.
const CLAMAV_FOUND: &[&str] = &[
    "clam-aspack.exe",
    "clam-fsg.exe",
    "clam-mew.exe",
    "clam-nsis.exe",
    "clam-pespin.exe",
    "clam-petite.exe",
    "clam-upack.exe",
    "clam-upx.exe",
    "clam-wwpack.exe",
    "clam-yc.exe",
    "clam.7z",
    "clam.arj",
    "clam.bin-be.cpio",
    "clam.bin-le.cpio",
    "clam.bz2.zip",
    "clam.cab",
    "clam.chm",
    "clam.d64.zip",
    "clam.ea05.exe",
    "clam.ea06.exe",
    "clam.exe.binhex",
    "clam.exe.bz2",
    "clam.exe.html",
    "clam.exe.mbox.base64",
    "clam.exe.mbox.uu",
    "clam.exe.rtf",
    "clam.exe.szdd",
    "clam.impl.zip",
    "clam.mail",
    "clam.newc.cpio",
    "clam.odc.cpio",
    "clam.ole.doc",
    "clam.pdf",
    "clam.ppt",
    "clam.sis",
    "clam.tar.gz",
    "clam.tnef",
    "clam.zip",
    "clam_IScab_ext.exe",
    "clam_IScab_int.exe",
    "clam_ISmsi_ext.exe",
    "clam_ISmsi_int.exe",
    "clam_cache_emax.tgz",
];

#[test]
fn clamav_test_files() {
    let dir = Path::new("/usr/share/clamav-testfiles");
    assert!(dir.join("clam.exe").exists(), "Debian's clamav-testfiles must be installed (.ci/run installs it)");
    let mut engine = Engine::new(rules(), Limits::default());
    let mut found_in = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "clam.exe" {
            continue;
        }
        let r = engine.scan(&std::fs::read(&path).unwrap(), "");
        if r.detections.iter().any(|d| d.rule == "clam_exe") {
            found_in.push(name);
        }
    }
    found_in.sort();
    assert_eq!(found_in, CLAMAV_FOUND);
}

/// Instructions emulated in a report, summed over its objects' metadata
/// (`N instructions, stopped at ...`), and how many runs were skipped as a
/// stub seen to never end.
fn emulated(r: &Report) -> (u64, usize) {
    let runs = r.object_meta.iter().flat_map(|m| m.meta.iter()).filter(|(k, _)| k == "emulation").map(|(_, v)| v);
    let (mut steps, mut skipped) = (0, 0);
    for v in runs {
        if let Some(n) = v.split(' ').next().and_then(|n| n.parse::<u64>().ok()) {
            steps += n;
        }
        skipped += usize::from(v.contains("the same stub ran out"));
    }
    (steps, skipped)
}

/// A few bytes must not buy minutes of CPU: a small zip of 200 tiny packed
/// PEs whose stubs never finish (the same spin, counted loops with a
/// different count each, loops that write memory, a different stub each)
/// is answered within the submission's work budget, with `max_work` named,
/// and the same stub is run once.
#[test]
fn a_small_archive_of_never_ending_stubs_is_held_to_its_work_budget() {
    const BASE: u32 = 0x40_0000;
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..50u32 {
        // jmp $, each file different after its image (an overlay)
        let mut pe = packed_pe(&[], false, Some(&[0xEB, 0xFE]));
        pe.extend_from_slice(&i.to_le_bytes());
        members.push((format!("spin{i}.exe"), pe));
    }
    for i in 0..50u32 {
        // mov ecx, 0xFFFF0000+i; l: dec ecx; jnz l; jmp $
        let mut stub = vec![0xB9];
        stub.extend_from_slice(&(0xFFFF_0000u32 + i).to_le_bytes());
        stub.extend_from_slice(&[0x49, 0x75, 0xFD, 0xEB, 0xFE]);
        members.push((format!("count{i}.exe"), packed_pe(&[], false, Some(&stub))));
    }
    for i in 0..50u32 {
        // mov edi, first section; mov ecx, big; l: mov [edi], ecx; dec ecx; jnz l; jmp $
        let mut stub = vec![0xBF];
        stub.extend_from_slice(&(BASE + 0x1000 + 4 * i).to_le_bytes());
        stub.push(0xB9);
        stub.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        stub.extend_from_slice(&[0x89, 0x0F, 0x49, 0x75, 0xFB, 0xEB, 0xFE]);
        members.push((format!("write{i}.exe"), packed_pe(&[], false, Some(&stub))));
    }
    for i in 0..50usize {
        // i nops, then spin: a different stub in each.
        let stub = [vec![0x90; i + 1], vec![0xEB, 0xFE]].concat();
        members.push((format!("nops{i}.exe"), packed_pe(&[], false, Some(&stub))));
    }
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in &members {
        w.start_file(name.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(data).unwrap();
    }
    let archive = w.finish().unwrap().into_inner();
    let limits = Limits::default();
    let budget = limits.work_floor.max(limits.work_per_byte * archive.len() as u64);
    let started = std::time::Instant::now();
    let r = Engine::new(rules(), limits.clone()).scan(&archive, "");
    let took = started.elapsed();
    let (steps, skipped) = emulated(&r);
    eprintln!(
        "{} bytes, {} members: {steps} instructions emulated (budget {budget}), {skipped} identical stubs skipped, {took:?}",
        archive.len(),
        members.len()
    );
    assert!(r.limits_hit.iter().any(|l| l.limit == Limit::MaxWork), "{:?}", r.limits_hit);
    // A run stops within a few hundred instructions of its grant.
    assert!(steps <= budget + 1000 * members.len() as u64, "{steps} > {budget}");
    assert_eq!(skipped, 49, "the same spin is run once");
    assert!(r.objects_scanned as usize > members.len(), "every member is still scanned by the rules");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    // Under the alert policy the limit makes it suspicious.
    let alert = Limits { alert_exceeded: true, ..limits };
    let r = Engine::new(rules(), alert).scan(&archive, "");
    assert_eq!(r.verdict, Some(qala_engine::Severity::Suspicious), "{:?}", r.limits_hit);
}

/// Shapes that cost the engine most per byte besides the emulator, each
/// within its bound: 4 MiB of every carving signature over and over (64 Ki
/// hits looked at, 16 carved), and zips of 512 different such blobs three
/// deep (each carved on its own: hits per object, objects per submission). Time and
/// what was carved are printed and asserted against generous bounds.
#[test]
fn signature_floods_and_nested_floods_stay_bounded() {
    let mut flood = Vec::with_capacity(4 << 20);
    let sigs: [&[u8]; 6] = [b"PK\x03\x04", b"MZ", b"\x1F\x8B\x08", b"Rar!\x1A\x07", b"7z\xBC\xAF\x27\x1C", b"MSCF\0\0\0\0"];
    let mut i = 0;
    while flood.len() < 4 << 20 {
        flood.extend_from_slice(sigs[i % sigs.len()]);
        flood.extend_from_slice(&(i as u32).to_le_bytes());
        i += 1;
    }
    let started = std::time::Instant::now();
    let r = scan(&flood);
    let one = started.elapsed();
    eprintln!("4 MiB signature flood: {one:?}, {} objects", r.objects_scanned);
    assert!(r.objects_scanned <= 1 + 16, "{}", r.objects_scanned);
    assert!(one < std::time::Duration::from_secs(10), "{one:?}");

    // Every object different, so none is skipped as seen: 4 x 4 x 4 zips
    // of 8 floods of 16 KiB each.
    let zip_of = |members: &[(String, Vec<u8>)]| {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in members {
            w.start_file(name.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    };
    let mut n = 0u32;
    let level = |depth: u32, inner: &mut dyn FnMut() -> Vec<u8>, count: u32| {
        (0..count).map(|k| (format!("d{depth}-{k}"), inner())).collect::<Vec<_>>()
    };
    let mut leaf = || {
        let floods: Vec<(String, Vec<u8>)> = (0..8)
            .map(|_| {
                n += 1;
                (format!("f{n}.bin"), [&n.to_le_bytes()[..], &flood[..16 << 10]].concat())
            })
            .collect();
        zip_of(&floods)
    };
    let mut mid = || zip_of(&level(1, &mut leaf, 4));
    let mut top = || zip_of(&level(2, &mut mid, 4));
    let mut members = level(3, &mut top, 4);
    let outer = members.swap_remove(0).1;
    let started = std::time::Instant::now();
    let r = scan(&outer);
    let nested = started.elapsed();
    eprintln!(
        "{} KiB zip of floods three deep: {nested:?}, {} objects, {} bytes extracted, limits {:?}",
        outer.len() >> 10,
        r.objects_scanned,
        r.bytes_scanned,
        r.limits_hit.iter().map(|l| l.limit).collect::<Vec<_>>()
    );
    assert!(u64::from(r.objects_scanned) <= Limits::default().max_objects as u64 + 1);
    assert!(nested < std::time::Duration::from_secs(30), "{nested:?}");
}

//! Engine behaviour on generated inputs: EICAR bare and nested, limits,
//! dedupe, corrupt containers, and the public rule sets.

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
    R.get_or_init(|| compile_rules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules")).unwrap())
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
}

#[test]
fn object_timeout_is_a_limit_and_root_timeout_is_unscannable() {
    let d = tempfile::tempdir().unwrap();
    // Nested loops (under yara-x's one-million-iteration cap) each hashing
    // the whole input: far slower than the one-second timeout.
    std::fs::write(
        d.path().join("slow.yar"),
        "import \"math\" rule slow { condition: for all i in (0..999) : ( for all j in (0..999) : ( math.entropy(i, filesize - j) >= 0.0 ) ) }",
    )
    .unwrap();
    let rules = compile_rules(d.path()).unwrap();
    let limits = Limits { object_timeout: Duration::from_secs(1), ..Limits::default() };
    let r = Engine::new(&rules, limits).scan(&vec![1u8; 200_000], "big.bin");
    assert_eq!(r.verdict, None);
    assert_eq!(r.limits_hit[0].limit, Limit::ObjectTimeout);
}

#[test]
fn reversinglabs_rules_compile_and_scan() {
    let rl = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/reversinglabs");
    let rules = compile_rules(&rl).expect("ReversingLabs rules must load");
    assert!(rules.rule_count > 1000, "{}", rules.rule_count);
    let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let r = Engine::new(&rules, Limits::default()).scan(&me, "self");
    assert!(r.verdict.is_some());
}

//! Decompression bombs through the whole cluster: each finishes, reports the
//! limit it hit, is never cached as a final clean, and the peak resident
//! memory of the worker and its scan children stays under 512 MiB (read
//! from /proc, not timed).

use qala_tests::{Cluster, repo_root, tree_peak_rss_kib, zip_of};
use std::io::Write;

fn deflate_zeros(len: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..len >> 20 {
        e.write_all(&zeros).unwrap();
    }
    e.finish().unwrap()
}

/// 42.zip-style: every layer holds 16 copies of the layer below; the base
/// holds 64 MiB of zeros. Five layers claim 16^5 * 64 MiB = 64 TiB.
fn nested_bomb() -> Vec<u8> {
    let zeros = vec![0u8; 64 << 20];
    let mut layer = zip_of(&[("0.bin", &zeros)]);
    for depth in 1..=5 {
        let names: Vec<String> = (0..16).map(|i| format!("{depth}-{i}.zip")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), layer.as_slice())).collect();
        layer = zip_of(&entries);
    }
    layer
}

/// An overlapping-entry bomb: one deflated stream of zeros, and 2,000
/// central-directory entries that all point at it under different names.
fn overlapping_bomb() -> Vec<u8> {
    let one = zip_of(&[("a.bin", &vec![0u8; 32 << 20])]);
    let cd_at = one.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
    let eocd_at = one.windows(4).rposition(|w| w == b"PK\x05\x06").unwrap();
    let record = &one[cd_at..eocd_at];
    let name_len = u16::from_le_bytes([record[28], record[29]]) as usize;
    let mut out = one[..cd_at].to_vec();
    let cd_start = out.len();
    let count = 2000u16;
    for i in 0..count {
        let name = format!("{i:05}.bin");
        let mut r = record[..46].to_vec();
        r[28..30].copy_from_slice(&(name.len() as u16).to_le_bytes());
        r.extend_from_slice(name.as_bytes());
        r.extend_from_slice(&record[46 + name_len..]);
        out.extend_from_slice(&r);
    }
    let cd_len = out.len() - cd_start;
    let mut eocd = one[eocd_at..].to_vec();
    eocd[8..10].copy_from_slice(&count.to_le_bytes());
    eocd[10..12].copy_from_slice(&count.to_le_bytes());
    eocd[12..16].copy_from_slice(&(cd_len as u32).to_le_bytes());
    eocd[16..20].copy_from_slice(&(cd_start as u32).to_le_bytes());
    out.extend_from_slice(&eocd);
    out
}

/// 10 GiB of zeros as a multi-member gzip: one 256 MiB member, repeated 40 times.
fn gzip_10g() -> Vec<u8> {
    let member = deflate_zeros(256 << 20);
    member.repeat(40)
}

#[test]
fn bombs_are_bounded_and_never_cached_clean() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let worker_pid = cluster.workers[0].pid();
    let dir = tempfile::tempdir().unwrap();
    let bombs = [("42.zip", nested_bomb()), ("overlap.zip", overlapping_bomb()), ("zeros.gz", gzip_10g())];
    for (name, data) in &bombs {
        assert!(data.len() < 64 << 20, "{name} is {} bytes", data.len());
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
    assert_eq!(lines.len(), 3, "{lines:#?}\n{}", cluster.logs());
    for l in &lines {
        let limits = l["limits_hit"].as_array().unwrap();
        assert!(!limits.is_empty(), "no limit recorded: {l}");
        if l["path"].as_str().unwrap().ends_with("overlap.zip") {
            // One member is read; the 1,999 aliases of its bytes are not.
            assert_eq!(l["verdict"], "suspicious", "{l}");
            assert_eq!(l["detections"][0]["rule"], "Heuristics_Zip_OverlappingFiles", "{l}");
        } else {
            assert_eq!(l["verdict"], "clean", "{l}");
        }
        eprintln!("{}: {} limits, first {}, {} objects", l["path"], limits.len(), limits[0], l["objects_scanned"]);
    }
    // A clean verdict from a partial scan is never final: it is kept an
    // hour, marked partial, so a rescan does not upload it again at once.
    let (_, again) = cluster.scan(&[dir.path()]).unwrap();
    assert_eq!(again.iter().filter(|l| l["verdict"] == "clean").count(), 2, "{again:#?}");
    for l in again.iter().filter(|l| l["verdict"] == "clean") {
        assert_eq!((l["cached"].as_bool(), l["partial"].as_bool()), (Some(true), Some(true)), "{l}");
        assert_eq!(l["uploaded"], 0);
    }
    let peak = tree_peak_rss_kib(worker_pid);
    eprintln!("worker and scan children peak RSS {} MiB", peak / 1024);
    assert!(peak < 512 * 1024, "worker and scan children peak RSS {peak} KiB");
}

/// The RTF that took a worker to 2.87 GB and 14-32 s: 11,000 unterminated
/// `\objdata` runs of hex, no closing brace (each run used to be decoded to
/// the end of the file).
#[test]
fn unterminated_rtf_objects_cost_their_own_size() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let worker_pid = cluster.workers[0].pid();
    let mut rtf = b"{\\rtf1\\ansi ".to_vec();
    // Each run different, so that no deduplication of identical objects is
    // what saves the worker.
    for i in 0..11_000u32 {
        rtf.extend_from_slice(b"\\objdata ");
        rtf.extend_from_slice(&b"41".repeat(41));
        rtf.extend_from_slice(format!("{i:08x}").as_bytes());
    }
    assert!(rtf.len() > 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("objects.rtf"), &rtf).unwrap();
    let start = std::time::Instant::now();
    let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
    let took = start.elapsed();
    let peak = tree_peak_rss_kib(worker_pid);
    eprintln!("objects.rtf ({} bytes): {took:?}, worker and scan children peak RSS {} MiB, {}", rtf.len(), peak / 1024, lines[0]);
    assert_eq!(lines[0]["file_type"], "rtf", "{}", lines[0]);
    // 11,000 objects: the object limit (10,000) stops the walk.
    assert_eq!(lines[0]["limits_hit"][0]["limit"], "max_objects", "{}", lines[0]);
    assert!(peak < 512 * 1024, "worker peak RSS {peak} KiB");
    assert!(took < std::time::Duration::from_secs(120), "{took:?}");
}

/// A zip whose verdict would pass the 16 MiB message cap: 9,000 members,
/// each EICAR under a 2,000-character name. The verdict is bounded (and
/// says so), the worker stays in the ring, and it is cached like any other.
#[test]
fn a_verdict_larger_than_the_message_cap_is_bounded() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let eicar = qala_tests::eicar();
    let names: Vec<String> = (0..9_000).map(|i| format!("{i:05}-{}.com", "n".repeat(2_000))).collect();
    let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), eicar.as_slice())).collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("many.zip"), zip_of(&entries)).unwrap();
    let (code, lines) = cluster.scan(&[dir.path()]).unwrap();
    let l = &lines[0];
    assert_eq!((code, l["verdict"].as_str()), (1, Some("malicious")), "{}", cluster.logs());
    let errors = l["errors"].as_array().unwrap();
    assert!(errors.iter().any(|e| e.as_str().unwrap().starts_with("verdict truncated")), "{errors:?}");
    assert!(l["detections"].as_array().unwrap().len() <= 1000);
    assert!(!cluster.coordinator.as_ref().unwrap().log_text().contains("worker failed"), "{}", cluster.logs());
    let (_, again) = cluster.scan(&[dir.path()]).unwrap();
    assert_eq!(again[0]["cached"], true);
    assert_eq!(cluster.status().unwrap()["workers"].as_array().unwrap().len(), 1);
}

/// Output of a Debian tool fed `input` on stdin.
fn tool(cmd: &str, input: &[u8]) -> Vec<u8> {
    let mut child = std::process::Command::new("sh")
        .args(["-c", cmd])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd}");
    out.stdout
}

/// The decoders added for the tool-by-tool round trip, on hostile input:
/// `.Z` and LZ4 bombs, an lzip header asking a 512 MiB dictionary, 20,000
/// empty zstd frames, a yEnc block that never ends, and Intel HEX whose
/// records jump about. Each gets a verdict with its limit or error, within
/// the worker's memory bound.
#[test]
fn new_stream_decoders_are_bounded() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let worker_pid = cluster.workers[0].pid();
    let zeros = vec![0u8; 512 << 20];
    let mut lzip = b"LZIP\x01\x1D".to_vec();
    lzip.extend_from_slice(&[0x5A; 4096]);
    let empty_frame = tool("zstd -q -c", b"");
    let mut yenc = b"=ybegin line=128 size=99999999 name=a.exe\n".to_vec();
    yenc.extend(std::iter::repeat_n(b"qala yenc body without an end line ".as_slice(), 150_000).flatten());
    let mut ihex = String::new();
    for i in 0..50_000u32 {
        let addr = (i * 7919) as u16;
        let rec = [0x04u8, (addr >> 8) as u8, addr as u8, 0, 1, 2, 3, 4];
        let sum = rec.iter().fold(0u8, |s, &b| s.wrapping_add(b)).wrapping_neg();
        ihex.push_str(&format!(":{}{sum:02X}\n", rec.iter().map(|b| format!("{b:02X}")).collect::<String>()));
    }
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("zeros.Z", tool("compress -c", &zeros)),
        ("zeros.lz4", tool("lz4 -q -c", &zeros)),
        ("dictionary.lz", lzip),
        ("frames.zst", empty_frame.repeat(20_000)),
        ("endless.yenc", yenc),
        ("jumps.hex", ihex.into_bytes()),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, data) in &files {
        assert!(data.len() < 16 << 20, "{name} is {} bytes", data.len());
        std::fs::write(dir.path().join(name), data).unwrap();
    }
    let start = std::time::Instant::now();
    let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
    let took = start.elapsed();
    assert_eq!(lines.len(), files.len(), "{lines:#?}\n{}", cluster.logs());
    for l in &lines {
        let path = l["path"].as_str().unwrap();
        let (limits, errors) = (l["limits_hit"].as_array().unwrap(), l["errors"].as_array().unwrap());
        eprintln!("{path}: {} ({} objects), limits {limits:?}, errors {errors:?}", l["file_type"], l["objects_scanned"]);
        if path.ends_with(".Z") || path.ends_with(".lz4") {
            assert!(!limits.is_empty(), "a bomb without its limit: {l}");
        }
        if path.ends_with(".lz") || path.ends_with(".yenc") || path.ends_with(".hex") {
            assert!(!errors.is_empty(), "say what was wrong: {l}");
        }
        assert_ne!(l["verdict"], "error", "{l}");
    }
    let peak = tree_peak_rss_kib(worker_pid);
    eprintln!("{took:?}, worker and scan children peak RSS {} MiB", peak / 1024);
    assert!(peak < 512 * 1024, "worker and scan children peak RSS {peak} KiB");
    assert!(took < std::time::Duration::from_secs(120), "{took:?}");
}

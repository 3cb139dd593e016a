//! Decompression bombs through the whole cluster: each finishes, reports the
//! limit it hit, is not cached as clean, and the worker's peak resident
//! memory stays under 512 MiB (read from /proc, not timed).

use qala_tests::{Cluster, peak_rss_kib, repo_root, zip_of};
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
    // A clean verdict from a partial scan is not cached: the next scan uploads again.
    let (_, again) = cluster.scan(&[dir.path()]).unwrap();
    assert_eq!(again.iter().filter(|l| l["verdict"] == "clean").count(), 2, "{again:#?}");
    for l in again.iter().filter(|l| l["verdict"] == "clean") {
        assert_eq!(l["cached"], false, "{l}");
        assert!(l["uploaded"].as_u64().unwrap() > 0);
    }
    let peak = peak_rss_kib(worker_pid);
    eprintln!("worker peak RSS {} MiB", peak / 1024);
    assert!(peak < 512 * 1024, "worker peak RSS {peak} KiB");
}

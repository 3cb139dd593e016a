//! A museum of hostile files, made here in code, each scanned through a real
//! worker: every one gets its verdict, the worker's peak RSS stays under
//! 512 MiB and the whole visit under 120 s. Each file's own scan time is
//! printed (run with --nocapture to see the figures the README quotes).

use qala_tests::{Cluster, peak_rss_kib, pseudo_random, repo_root, zip_of};
use std::io::Write;
use std::time::{Duration, Instant};

/// 100,000 tiny members, all different.
fn zip_100k() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..100_000u32 {
        w.start_file(format!("{i}"), opts).unwrap();
        w.write_all(&i.to_le_bytes()).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// 100,000 members of a few bytes each, all different.
fn tar_100k() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..100_000u32 {
        let data = i.to_le_bytes();
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, format!("{i}"), &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// A 42.zip-style nest whose leaves are all different (so deduplicating
/// identical members is not what saves the worker): 4 layers of 10, each
/// leaf 1 MiB of zeros and its own index; 10,000 leaves claim 10 GiB.
fn distinct_nest() -> Vec<u8> {
    fn layer(depth: u32, prefix: u32) -> Vec<u8> {
        if depth == 0 {
            let mut leaf = vec![0u8; 1 << 20];
            leaf[..4].copy_from_slice(&prefix.to_le_bytes());
            return zip_of(&[("leaf.bin", &leaf)]);
        }
        let kids: Vec<(String, Vec<u8>)> =
            (0..10).map(|i| (format!("{depth}-{i}.zip"), layer(depth - 1, prefix * 10 + i))).collect();
        let entries: Vec<(&str, &[u8])> = kids.iter().map(|(n, d)| (n.as_str(), d.as_slice())).collect();
        zip_of(&entries)
    }
    layer(4, 1)
}

/// 50,000 `stream` keywords and no objects around them.
fn pdf_50k_streams() -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n".to_vec();
    for i in 0..50_000u32 {
        pdf.extend_from_slice(format!("{i} 0 obj\nstream\n{i}\nendstream\n").as_bytes());
    }
    pdf
}

/// One ASCII85 stream of 4,000,000 `z`s (16 MB of zeros from 4 MB).
fn pdf_ascii85_z() -> Vec<u8> {
    let mut pdf = b"%PDF-1.4\n1 0 obj\n<< /Filter /ASCII85Decode /Length 4000004 >>\nstream\n<~".to_vec();
    pdf.extend(std::iter::repeat_n(b'z', 4_000_000));
    pdf.extend_from_slice(b"~>\nendstream\nendobj\n%%EOF\n");
    pdf
}

/// A message of 100,000 parts, all different.
fn mail_100k_parts() -> Vec<u8> {
    let mut m =
        b"From: a@example.org\r\nSubject: parts\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=q\r\n\r\n"
            .to_vec();
    for i in 0..100_000u32 {
        m.extend_from_slice(format!("--q\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n").as_bytes());
    }
    m.extend_from_slice(b"--q--\r\n");
    m
}

/// A PE whose header claims 65,535 sections over 2.6 MB of noise.
fn pe_absurd_sections() -> Vec<u8> {
    let mut pe = pseudo_random(7, 3 << 20);
    pe[0..2].copy_from_slice(b"MZ");
    pe[0x3C..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    pe[0x44..0x46].copy_from_slice(&0x14Cu16.to_le_bytes());
    pe[0x46..0x48].copy_from_slice(&0xFFFFu16.to_le_bytes());
    pe[0x54..0x56].copy_from_slice(&0xE0u16.to_le_bytes());
    pe[0x58..0x5A].copy_from_slice(&0x10Bu16.to_le_bytes());
    pe
}

/// An ELF whose header claims 65,535 program and section headers.
fn elf_absurd_counts() -> Vec<u8> {
    let mut elf = pseudo_random(8, 4 << 20);
    elf[0..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1;
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // executable
    elf[18..20].copy_from_slice(&0x3Eu16.to_le_bytes()); // x86-64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    elf[40..48].copy_from_slice(&4096u64.to_le_bytes()); // shoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes());
    elf[54..56].copy_from_slice(&56u16.to_le_bytes());
    elf[56..58].copy_from_slice(&0xFFFFu16.to_le_bytes()); // phnum
    elf[58..60].copy_from_slice(&64u16.to_le_bytes());
    elf[60..62].copy_from_slice(&0xFFFFu16.to_le_bytes()); // shnum
    elf[62..64].copy_from_slice(&0xFFFEu16.to_le_bytes()); // shstrndx
    elf
}

#[test]
fn hostile_files_are_bounded_in_memory_and_time() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let worker_pid = cluster.workers[0].pid();
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("zip-100k.zip", zip_100k()),
        ("tar-100k.tar", tar_100k()),
        ("distinct-nest.zip", distinct_nest()),
        ("streams-50k.pdf", pdf_50k_streams()),
        ("ascii85-z.pdf", pdf_ascii85_z()),
        ("parts-100k.eml", mail_100k_parts()),
        ("sections-65535.exe", pe_absurd_sections()),
        ("counts-65535.elf", elf_absurd_counts()),
    ];
    for (name, data) in &files {
        std::fs::write(dir.path().join(name), data).unwrap();
        eprintln!("{name}: {} bytes", data.len());
    }
    let start = Instant::now();
    let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
    let took = start.elapsed();
    assert_eq!(lines.len(), files.len(), "{lines:#?}\n{}", cluster.logs());
    for l in &lines {
        assert_ne!(l["verdict"], "error", "{l}");
        let limits: Vec<&str> = l["limits_hit"].as_array().unwrap().iter().map(|x| x["limit"].as_str().unwrap()).collect();
        eprintln!(
            "{}: {} in {:.2} s, {} objects, limits {limits:?}",
            l["path"].as_str().unwrap().rsplit('/').next().unwrap(),
            l["verdict"],
            l["scan_duration_us"].as_u64().unwrap_or(0) as f64 / 1e6,
            l["objects_scanned"]
        );
    }
    let peak = peak_rss_kib(worker_pid);
    eprintln!("museum: {took:?} in all, worker peak RSS {} MiB", peak / 1024);
    assert!(peak < 512 * 1024, "worker peak RSS {peak} KiB");
    assert!(took < Duration::from_secs(120), "{took:?}");
}

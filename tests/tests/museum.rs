//! A museum of hostile files, made here in code, each scanned on its own
//! through a real worker: every one gets its verdict, and for each the peak
//! RSS of the worker and its scan children stays under 512 MiB and the visit
//! under 120 s. The figures are printed (run with --nocapture to see what the
//! README quotes). The decompression bombs, the RTF of 11,000 `\objdata`
//! runs and the verdict over 16 MiB are in `bombs.rs`, measured the same way.

use qala_tests::{Cluster, pseudo_random, repo_root, reset_peak_rss, tree_peak_rss_kib, zip_of};
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

/// An ISO 9660 image whose directories loop (to themselves and back to the
/// root) and nest 40 deep (past the reader's 32), with a directory of
/// 3,000 files.
fn iso_deep_and_looping() -> Vec<u8> {
    const S: usize = 2048;
    fn record(name: &[u8], lba: u32, len: u32, dir: bool) -> Vec<u8> {
        let mut r = vec![0u8; 33 + name.len()];
        r[2..6].copy_from_slice(&lba.to_le_bytes());
        r[6..10].copy_from_slice(&lba.to_be_bytes());
        r[10..14].copy_from_slice(&len.to_le_bytes());
        r[14..18].copy_from_slice(&len.to_be_bytes());
        r[25] = if dir { 2 } else { 0 };
        r[28] = 1;
        r[32] = name.len() as u8;
        r[33..].copy_from_slice(name);
        if r.len() % 2 == 1 {
            r.push(0);
        }
        r[0] = r.len() as u8;
        r
    }
    /// A directory extent of `records`, none crossing a sector.
    fn extent(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            if out.len() % S + r.len() > S {
                out.resize(out.len().next_multiple_of(S), 0);
            }
            out.extend_from_slice(r);
        }
        out.resize(out.len().next_multiple_of(S), 0);
        out
    }
    let (root, data, levels, deep0) = (18u32, 19u32, 40u32, 20u32);
    let wide_at = deep0 + levels;
    let wide: Vec<Vec<u8>> = (0..3000u32).map(|i| record(format!("W{i}.TXT;1").as_bytes(), data, 1 + i % 20, false)).collect();
    let wide = extent(&wide);
    let mut image = vec![0u8; (wide_at as usize) * S];
    image.extend_from_slice(&wide);
    let dot = |lba| record(&[0], lba, S as u32, true);
    let root_dir = extent(&[
        dot(root),
        record(&[1], root, S as u32, true),
        record(b"LOOP", root, S as u32, true),
        record(b"DEEP", deep0, S as u32, true),
        record(b"WIDE", wide_at, wide.len() as u32, true),
    ]);
    image[root as usize * S..][..S].copy_from_slice(&root_dir);
    image[data as usize * S..][..20].copy_from_slice(b"a file in the image.");
    for i in 0..levels {
        let lba = deep0 + i;
        let mut records = vec![dot(lba), record(&[1], root, S as u32, true), record(b"UP", root, S as u32, true)];
        records.push(record(b"SELF", lba, S as u32, true));
        records.push(record(format!("F{i}.TXT;1").as_bytes(), data, 20, false));
        if i + 1 < levels {
            records.push(record(b"D", lba + 1, S as u32, true));
        }
        image[lba as usize * S..][..S].copy_from_slice(&extent(&records));
    }
    let pvd = &mut image[16 * S..17 * S];
    pvd[0] = 1;
    pvd[1..6].copy_from_slice(b"CD001");
    pvd[6] = 1;
    pvd[156..190].copy_from_slice(&record(&[0], root, S as u32, true));
    let end = &mut image[17 * S..18 * S];
    end[0] = 255;
    end[1..6].copy_from_slice(b"CD001");
    image
}

fn crc32(bytes: &[u8]) -> [u8; 4] {
    let mut c = flate2::Crc::new();
    c.update(bytes);
    c.sum().to_le_bytes()
}

/// An xz stream whose LZMA2 filter declares a 4 GiB dictionary, around a
/// few stored bytes.
fn xz_huge_dictionary() -> Vec<u8> {
    let mut xz = vec![0xFD, b'7', b'z', b'X', b'Z', 0, 0, 0];
    xz.extend_from_slice(&crc32(&[0, 0]));
    // Block header: 12 bytes, one filter (LZMA2, dictionary byte 40 = 4 GiB - 1).
    let mut header = vec![2u8, 0x00, 0x21, 0x01, 40, 0, 0, 0];
    header.extend_from_slice(&crc32(&header.clone()));
    let payload = b"stored bytes under a huge dictionary";
    let mut block = vec![0x01];
    block.extend_from_slice(&((payload.len() - 1) as u16).to_be_bytes());
    block.extend_from_slice(payload);
    block.push(0x00);
    let unpadded = header.len() + block.len();
    xz.extend_from_slice(&header);
    xz.extend_from_slice(&block);
    xz.resize(xz.len().next_multiple_of(4), 0);
    let mut index = vec![0x00, 0x01, unpadded as u8, payload.len() as u8];
    index.resize(index.len().next_multiple_of(4), 0);
    index.extend_from_slice(&crc32(&index.clone()));
    xz.extend_from_slice(&index);
    let mut footer = ((index.len() / 4 - 1) as u32).to_le_bytes().to_vec();
    footer.extend_from_slice(&[0, 0]);
    xz.extend_from_slice(&crc32(&footer));
    xz.extend_from_slice(&footer);
    xz.extend_from_slice(b"YZ");
    xz
}

/// LZMA-alone (`.lzma`) declaring a 1.5 GiB dictionary (the most the
/// format's detection accepts) and an unknown size.
fn lzma_huge_dictionary() -> Vec<u8> {
    let mut lzma = vec![0x5D];
    lzma.extend_from_slice(&(3u32 << 29).to_le_bytes());
    lzma.extend_from_slice(&u64::MAX.to_le_bytes());
    lzma.extend_from_slice(&pseudo_random(9, 4096));
    lzma
}

/// A 7z number: the first byte's leading ones say how many little-endian
/// bytes follow; its other bits are the high part.
fn sevenz_number(v: u64) -> Vec<u8> {
    if v < 0x80 {
        return vec![v as u8];
    }
    for n in 1..8u32 {
        if v < 1u64 << (7 * (n + 1)) {
            let mut out = vec![!(0xFFu8 >> n) | (v >> (8 * n)) as u8];
            out.extend_from_slice(&v.to_le_bytes()[..n as usize]);
            return out;
        }
    }
    [&[0xFF][..], &v.to_le_bytes()].concat()
}

/// A 7z archive (plain header, written here) whose one LZMA coder declares
/// a 1.5 GiB dictionary and an unpacked size of 3 GiB, around 68 KiB of
/// real data.
fn sevenz_huge_dictionary() -> Vec<u8> {
    let content = b"a member of a 7z archive with a huge dictionary\n".repeat(1400);
    let options = lzma_rust2::LzmaOptions::with_preset(1);
    let mut w = lzma_rust2::LzmaWriter::new_no_header(Vec::new(), &options, true).unwrap();
    w.write_all(&content).unwrap();
    let packed = w.finish().unwrap();
    let n = sevenz_number;
    let mut h = vec![0x01, 0x04, 0x06];
    h.extend(n(0));
    h.extend(n(1));
    h.push(0x09);
    h.extend(n(packed.len() as u64));
    h.extend([0x00, 0x07, 0x0B]);
    h.extend(n(1)); // one folder
    h.push(0x00);
    h.extend(n(1)); // one coder: LZMA, with 5 bytes of properties
    h.extend([0x23, 0x03, 0x01, 0x01]);
    h.extend(n(5));
    h.push(options.get_props());
    h.extend_from_slice(&(3u32 << 29).to_le_bytes());
    h.push(0x0C);
    h.extend(n(3 << 30));
    h.extend([0x00, 0x08, 0x00, 0x00, 0x05]); // one substream per folder
    h.extend(n(1)); // one file
    let name: Vec<u8> = "big.bin\0".encode_utf16().flat_map(u16::to_le_bytes).collect();
    h.push(0x11);
    h.extend(n(1 + name.len() as u64));
    h.push(0x00);
    h.extend(&name);
    h.extend([0x00, 0x00]);
    let mut start = (packed.len() as u64).to_le_bytes().to_vec();
    start.extend_from_slice(&(h.len() as u64).to_le_bytes());
    start.extend_from_slice(&crc32(&h));
    let mut out = b"7z\xBC\xAF\x27\x1C\x00\x04".to_vec();
    out.extend_from_slice(&crc32(&start));
    out.extend_from_slice(&start);
    out.extend_from_slice(&packed);
    out.extend_from_slice(&h);
    out
}

#[test]
fn hostile_files_are_bounded_in_memory_and_time() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let worker_pid = cluster.workers[0].pid();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("zip-100k.zip", zip_100k()),
        ("tar-100k.tar", tar_100k()),
        ("distinct-nest.zip", distinct_nest()),
        ("streams-50k.pdf", pdf_50k_streams()),
        ("ascii85-z.pdf", pdf_ascii85_z()),
        ("parts-100k.eml", mail_100k_parts()),
        ("sections-65535.exe", pe_absurd_sections()),
        ("counts-65535.elf", elf_absurd_counts()),
        ("deep-looping.iso", iso_deep_and_looping()),
        ("huge-dictionary.xz", xz_huge_dictionary()),
        ("huge-dictionary.lzma", lzma_huge_dictionary()),
        ("huge-dictionary.7z", sevenz_huge_dictionary()),
    ];
    let visit = Instant::now();
    for (name, data) in &files {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), data).unwrap();
        reset_peak_rss(worker_pid);
        let start = Instant::now();
        let (_, lines) = cluster.scan(&[dir.path()]).unwrap();
        let took = start.elapsed();
        let peak = tree_peak_rss_kib(worker_pid);
        assert_eq!(lines.len(), 1, "{name}: {lines:#?}\n{}", cluster.logs());
        let l = &lines[0];
        assert!(["clean", "suspicious", "malicious"].contains(&l["verdict"].as_str().unwrap()), "{name}: {l}");
        let limits: Vec<&str> = l["limits_hit"].as_array().unwrap().iter().map(|x| x["limit"].as_str().unwrap()).collect();
        eprintln!(
            "| `{name}` | {} bytes | {} | {} objects | {limits:?} | {} MiB | {:.2} s |",
            data.len(),
            l["verdict"].as_str().unwrap(),
            l["objects_scanned"],
            peak / 1024,
            took.as_secs_f64(),
        );
        if name.ends_with(".iso") {
            // The loops end; 40 levels stop at 32; the image's files are read.
            assert!(l["objects_scanned"].as_u64().unwrap() >= 2, "{l}");
        }
        if name.ends_with(".7z") {
            // The member is decoded and scanned, no dictionary is allocated
            // up front; the lie about its size ends in an error.
            assert_eq!((l["file_type"].as_str(), l["objects_scanned"].as_u64()), (Some("7z"), Some(2)), "{l}");
            assert!(!l["errors"].as_array().unwrap().is_empty(), "{l}");
        } else if name.starts_with("huge-dictionary") {
            // Refused before any dictionary is allocated.
            assert!(l["errors"].to_string().contains("memory"), "{name}: {l}");
        }
        assert!(peak < 512 * 1024, "{name}: worker and scan children peak RSS {peak} KiB");
        assert!(took < Duration::from_secs(120), "{name}: {took:?}");
    }
    eprintln!("museum: {:?} in all", visit.elapsed());
}

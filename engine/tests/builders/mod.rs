//! Builders of the formats of detection depth, written from their
//! specifications: each wraps a payload the way the real tool does, so the
//! tests and fuzz seeds carry a known file through every unwrapping.
#![allow(dead_code)]

use std::io::Write;

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { crc >> 1 ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// `uuencode NAME` output, or xxencode's with `xx`.
pub fn uuencode(name: &str, data: &[u8], xx: bool) -> String {
    const XX: &[u8] = b"+-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let ch = |v: u8| {
        if xx {
            XX[v as usize] as char
        } else if v == 0 {
            '`'
        } else {
            (b' ' + v) as char
        }
    };
    let mut out = format!("begin 644 {name}\n");
    for line in data.chunks(45) {
        out.push(ch(line.len() as u8));
        for c in line.chunks(3) {
            let n = u32::from(c[0]) << 16 | u32::from(*c.get(1).unwrap_or(&0)) << 8 | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..4 {
                out.push(ch((n >> (18 - 6 * k) & 63) as u8));
            }
        }
        out.push('\n');
    }
    out.push_str(&format!("{}\nend\n", ch(0)));
    out
}

pub fn base64(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in data.chunks(3) {
        let n = u32::from(c[0]) << 16 | u32::from(*c.get(1).unwrap_or(&0)) << 8 | u32::from(*c.get(2).unwrap_or(&0));
        for k in 0..4 {
            s.push(if k <= c.len() { A[(n >> (18 - 6 * k) & 63) as usize] as char } else { '=' });
        }
    }
    s
}

/// BinHex 4.0 of a file with `data` as its data fork (no run-length
/// compression; CRCs zero, which readers of ours do not check).
pub fn binhex(name: &str, data: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"!\"#$%&'()*+,-012345689@ABCDEFGHIJKLMNPQRSTUVXYZ[`abcdefhijklmpqr";
    let mut raw = vec![name.len() as u8];
    raw.extend_from_slice(name.as_bytes());
    raw.push(0);
    raw.extend_from_slice(b"APPLMACS\0\0");
    raw.extend_from_slice(&(data.len() as u32).to_be_bytes());
    raw.extend_from_slice(&0u32.to_be_bytes());
    raw.extend_from_slice(&[0; 2]);
    raw.extend_from_slice(data);
    raw.extend_from_slice(&[0; 4]);
    let mut escaped = Vec::new();
    for b in raw {
        escaped.push(b);
        if b == 0x90 {
            escaped.push(0);
        }
    }
    let mut text = b"(This file must be converted with BinHex 4.0)\n:".to_vec();
    for (i, chunk) in escaped.chunks(3).enumerate() {
        let n = u32::from(chunk[0]) << 16 | u32::from(*chunk.get(1).unwrap_or(&0)) << 8 | u32::from(*chunk.get(2).unwrap_or(&0));
        for k in 0..(if chunk.len() == 3 { 4 } else { chunk.len() + 1 }) {
            text.push(ALPHABET[(n >> (18 - 6 * k) & 63) as usize]);
        }
        if i % 16 == 15 {
            text.push(b'\n');
        }
    }
    text.extend_from_slice(b":\n");
    text
}

/// A TNEF stream (`winmail.dat`) with one attachment.
pub fn tnef(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x78, 0x9F, 0x3E, 0x22, 0x01, 0x00];
    let mut attr = |level: u8, id: u32, body: &[u8]| {
        v.push(level);
        v.extend_from_slice(&id.to_le_bytes());
        v.extend_from_slice(&(body.len() as u32).to_le_bytes());
        v.extend_from_slice(body);
        let sum = body.iter().fold(0u16, |s, &b| s.wrapping_add(u16::from(b)));
        v.extend_from_slice(&sum.to_le_bytes());
    };
    attr(1, 0x0007_8008, b"IPM.Microsoft Mail.Note\0");
    attr(2, 0x0006_9002, &[0; 14]);
    attr(2, 0x0001_8010, format!("{name}\0").as_bytes());
    attr(2, 0x0006_800F, payload);
    v
}

/// SZDD (`COMPRESS.EXE`) with LZSS: a literal, then a match repeating it,
/// then the rest as literals.
pub fn szdd(data: &[u8]) -> Vec<u8> {
    let mut v = b"SZDD\x88\xF0\x27\x33A_".to_vec();
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    for chunk in data.chunks(8) {
        v.push(0xFF >> (8 - chunk.len()));
        v.extend_from_slice(chunk);
    }
    v
}

/// A Symbian SIS file (EPOC release 6) installing `name`, zlib-compressed.
pub fn sis(name: &str, payload: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(payload).unwrap();
    let packed = z.finish().unwrap();
    let dest: Vec<u8> = format!("!:\\sys\\bin\\{name}").encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut h = vec![0u8; 0x64];
    for (o, v) in [(0, 0x1000_0000u32), (4, 0x1000_3A12), (8, 0x1000_0419), (12, 0)] {
        h[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    for (o, v) in [(0x12, 1u16), (0x14, 1), (0x24, 1)] {
        h[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }
    let files_at = 0x64 + 2;
    h[0x30..0x34].copy_from_slice(&0x64u32.to_le_bytes());
    h[0x34..0x38].copy_from_slice(&(files_at as u32).to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes()); // language
    let record_len = 28 + 4 + 4 + 4 + 8;
    let dest_at = files_at + record_len;
    let data_at = dest_at + dest.len();
    let fields =
        [0u32, 0, 0, 0, 0, dest.len() as u32, dest_at as u32, packed.len() as u32, data_at as u32, payload.len() as u32, 0, 0];
    for f in fields {
        h.extend_from_slice(&f.to_le_bytes());
    }
    h.extend_from_slice(&dest);
    h.extend_from_slice(&packed);
    h
}

/// An ARJ archive with `name` stored (method 0).
pub fn arj_stored(name: &str, data: &[u8]) -> Vec<u8> {
    let header = |file_type: u8, method: u8, size: u32, crc: u32, name: &str| {
        let mut b = vec![30u8, 11, 1, 2, 0, method, file_type, 0];
        b.extend_from_slice(&0x5A21_4C00u32.to_le_bytes()); // a DOS date
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&size.to_le_bytes());
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(&[0; 6]); // file spec position, access mode, host data
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.push(0); // comment
        let mut out = vec![0x60, 0xEA];
        out.extend_from_slice(&(b.len() as u16).to_le_bytes());
        out.extend_from_slice(&b);
        out.extend_from_slice(&crc32(&b).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes()); // no extended header
        out
    };
    let mut v = header(2, 0, 0, 0, "seed.arj");
    v.extend_from_slice(&header(0, 0, data.len() as u32, crc32(data), name));
    v.extend_from_slice(data);
    v.extend_from_slice(&[0x60, 0xEA, 0, 0]);
    v
}

/// Packager (`Package` class) native data carrying `data` as `label`.
pub fn package(label: &str, data: &[u8]) -> Vec<u8> {
    let mut v = 2u16.to_le_bytes().to_vec();
    for s in [label, &format!("C:\\Users\\x\\{label}")] {
        v.extend_from_slice(s.as_bytes());
        v.push(0);
    }
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(&3u16.to_le_bytes());
    let temp = format!("C:\\Temp\\{label}\0");
    v.extend_from_slice(&(temp.len() as u32).to_le_bytes());
    v.extend_from_slice(temp.as_bytes());
    v.extend_from_slice(&(data.len() as u32).to_le_bytes());
    v.extend_from_slice(data);
    v
}

/// A compound file with the given streams (paths with `/`).
pub fn compound(streams: &[(&str, &[u8])]) -> Vec<u8> {
    let mut c = cfb::CompoundFile::create(std::io::Cursor::new(Vec::new())).unwrap();
    for (path, data) in streams {
        if let Some((dir, _)) = path.rsplit_once('/') {
            c.create_storage_all(format!("/{dir}")).unwrap();
        }
        c.create_stream(format!("/{path}")).unwrap().write_all(data).unwrap();
    }
    c.flush().unwrap();
    c.into_inner().into_inner()
}

/// A Word-like compound file with an embedded Packager object.
pub fn doc_with_package(label: &str, data: &[u8]) -> Vec<u8> {
    let native = package(label, data);
    let stream = [&(native.len() as u32).to_le_bytes()[..], &native].concat();
    compound(&[("WordDocument", b"text"), ("ObjectPool/_1234/\u{1}Ole10Native", &stream)])
}

/// An RTF document with an OLE1 Packager object.
pub fn rtf_with_package(label: &str, data: &[u8]) -> Vec<u8> {
    let native = package(label, data);
    let mut ole1 = Vec::new();
    ole1.extend_from_slice(&0x0501u32.to_le_bytes());
    ole1.extend_from_slice(&2u32.to_le_bytes());
    for s in ["Package\0", "\0", "\0"] {
        ole1.extend_from_slice(&(s.len() as u32).to_le_bytes());
        ole1.extend_from_slice(s.as_bytes());
    }
    ole1.extend_from_slice(&(native.len() as u32).to_le_bytes());
    ole1.extend_from_slice(&native);
    let hex: String = ole1.iter().map(|b| format!("{b:02x}")).collect();
    format!("{{\\rtf1{{\\object\\objemb{{\\*\\objclass Package}}{{\\*\\objdata {hex}}}}}}}").into_bytes()
}

/// A PowerPoint file whose slide holds an embedded object (an
/// `ExOleObjStg` record, zlib-compressed) carrying a Packager object.
pub fn ppt_with_package(label: &str, data: &[u8]) -> Vec<u8> {
    let inner = doc_with_package(label, data);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&inner).unwrap();
    let body = [&(inner.len() as u32).to_le_bytes()[..], &z.finish().unwrap()].concat();
    let record = |ver_inst: u16, kind: u16, body: &[u8]| {
        [&ver_inst.to_le_bytes()[..], &kind.to_le_bytes(), &(body.len() as u32).to_le_bytes(), body].concat()
    };
    let stream = record(0x0F, 0x03E8, &[record(0x00, 0x03E9, &[0; 40]), record(0x10, 0x1011, &body)].concat());
    compound(&[("PowerPoint Document", &stream), ("Current User", b"user")])
}

/// An MSI-like compound file: stream names in MSI's encoding, one of them
/// a cabinet.
pub fn msi_with_cab(cab: &[u8]) -> Vec<u8> {
    const ALPHABET: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._";
    let encode = |name: &str| -> String {
        let idx: Vec<u32> = name.chars().map(|c| ALPHABET.find(c).unwrap() as u32).collect();
        idx.chunks(2)
            .map(|p| match p {
                [a, b] => char::from_u32(0x3800 + (a | b << 6)).unwrap(),
                [a] => char::from_u32(0x4800 + a).unwrap(),
                _ => unreachable!(),
            })
            .collect()
    };
    let table = format!("\u{4840}{}", encode("File"));
    compound(&[(&encode("Data1.cab"), cab), (&table, b"\0\0")])
}

/// `elf` with a UPX payload after it, as UPX lays out a packed ELF:
/// `l_info`, `p_info`, one NRV2B block of `payload`, the end block.
pub fn upx_elf(elf: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    upx_elf_block(elf, payload.len(), 2, &qala_engine::fuzzing::nrv2b_literals(payload))
}

/// The same with UPX's LZMA method (14): two bytes of properties (pb and lp,
/// then lc) and a raw LZMA stream without end marker.
pub fn upx_elf_lzma(elf: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    let opts = lzma_rust2::LzmaOptions::with_preset(6);
    let mut w = lzma_rust2::LzmaWriter::new_no_header(Vec::new(), &opts, false).unwrap();
    std::io::Write::write_all(&mut w, payload).unwrap();
    let (pb, lp, lc) = (opts.pb as u8, opts.lp as u8, opts.lc as u8);
    let block = [vec![(lp << 3) | pb, lc << 4], w.finish().unwrap()].concat();
    upx_elf_block(elf, payload.len(), 14, &block)
}

fn upx_elf_block(mut elf: Vec<u8>, size: usize, method: u8, block: &[u8]) -> Vec<u8> {
    elf.extend_from_slice(&[0; 4]);
    elf.extend_from_slice(b"UPX!");
    elf.extend_from_slice(&[0x20, 0, 13, 12]);
    elf.extend_from_slice(&[0; 4]);
    elf.extend_from_slice(&(size as u32).to_le_bytes());
    elf.extend_from_slice(&[0; 4]);
    elf.extend_from_slice(&(size as u32).to_le_bytes());
    elf.extend_from_slice(&(block.len() as u32).to_le_bytes());
    elf.extend_from_slice(&[method, 0, 0, 0]);
    elf.extend_from_slice(block);
    elf.resize(elf.len().next_multiple_of(4), 0);
    elf.extend_from_slice(&[0; 12]);
    elf
}

/// A Compiled HTML Help file with `name` stored in section 0 (ITSF v3, one
/// PMGL directory chunk).
pub fn chm_stored(name: &str, data: &[u8]) -> Vec<u8> {
    const CHUNK: usize = 0x1000;
    let encint = |mut v: u64| {
        let mut bytes = vec![(v & 0x7F) as u8];
        v >>= 7;
        while v > 0 {
            bytes.insert(0, (v & 0x7F) as u8 | 0x80);
            v >>= 7;
        }
        bytes
    };
    let dir_at = 0x78usize;
    let dir_len = 0x54 + CHUNK;
    let content_at = dir_at + dir_len;
    let mut h = vec![0u8; 0x60];
    h[..4].copy_from_slice(b"ITSF");
    h[4..8].copy_from_slice(&3u32.to_le_bytes());
    h[8..12].copy_from_slice(&0x60u32.to_le_bytes());
    for (o, v) in [(0x38, 0x60u64), (0x40, 0x18), (0x48, dir_at as u64), (0x50, dir_len as u64), (0x58, content_at as u64)] {
        h[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    h.resize(dir_at, 0);
    let mut itsp = vec![0u8; 0x54];
    itsp[..4].copy_from_slice(b"ITSP");
    for (o, v) in [(4, 1u32), (8, 0x54), (0x10, CHUNK as u32), (0x14, 2), (0x18, 1), (0x1C, u32::MAX), (0x2C, 1)] {
        itsp[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    let mut entries = Vec::new();
    for (n, section, offset, length) in [("/", 0, 0, 0), (&*format!("/{name}"), 0u64, 0u64, data.len() as u64)] {
        entries.extend(encint(n.len() as u64));
        entries.extend_from_slice(n.as_bytes());
        entries.extend(encint(section));
        entries.extend(encint(offset));
        entries.extend(encint(length));
    }
    let mut chunk = b"PMGL".to_vec();
    chunk.extend_from_slice(&((CHUNK - 20 - entries.len()) as u32).to_le_bytes());
    chunk.extend_from_slice(&0u32.to_le_bytes());
    chunk.extend_from_slice(&u32::MAX.to_le_bytes());
    chunk.extend_from_slice(&u32::MAX.to_le_bytes());
    chunk.extend_from_slice(&entries);
    chunk.resize(CHUNK, 0);
    h.extend_from_slice(&itsp);
    h.extend_from_slice(&chunk);
    h.extend_from_slice(data);
    h
}

/// A RAR archive made by the `rars` writer (compressed at its default
/// level; `solid` for a solid archive).
pub fn rar(version: rars::ArchiveVersion, solid: bool, entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = rars::Builder::new(version).solid(solid);
    for (name, data) in entries {
        b.add_bytes(name.as_bytes().to_vec(), data.to_vec(), None, None).unwrap();
    }
    b.to_bytes().unwrap()
}

/// An LHA archive with `name` stored (`-lh0-`, level-0 header).
pub fn lha_stored(name: &str, data: &[u8]) -> Vec<u8> {
    let crc16 = |d: &[u8]| {
        let mut crc = 0u16;
        for &b in d {
            crc ^= u16::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { crc >> 1 ^ 0xA001 } else { crc >> 1 };
            }
        }
        crc
    };
    let mut h = b"-lh0-".to_vec();
    h.extend_from_slice(&(data.len() as u32).to_le_bytes());
    h.extend_from_slice(&(data.len() as u32).to_le_bytes());
    h.extend_from_slice(&0x5A21_4C00u32.to_le_bytes());
    h.push(0x20); // attribute
    h.push(0); // header level
    h.push(name.len() as u8);
    h.extend_from_slice(name.as_bytes());
    h.extend_from_slice(&crc16(data).to_le_bytes());
    let sum = h.iter().fold(0u8, |s, &b| s.wrapping_add(b));
    let mut v = vec![h.len() as u8, sum];
    v.extend_from_slice(&h);
    v.extend_from_slice(data);
    v.push(0);
    v
}

/// A SquashFS image made by the real `mksquashfs` (squashfs-tools, which
/// `scripts/test.sh` installs) with `comp` (gzip, xz, zstd, lz4).
pub fn squashfs(comp: &str, entries: &[(&str, &[u8])]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for (name, data) in entries {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let image = dir.path().join("image.sqfs");
    let status = std::process::Command::new("mksquashfs")
        .arg(&src)
        .arg(&image)
        .args(["-quiet", "-no-progress", "-noappend", "-all-time", "0", "-mkfs-time", "0", "-comp", comp])
        .status()
        .expect("mksquashfs (Debian squashfs-tools) must be installed; scripts/test.sh installs it");
    assert!(status.success());
    std::fs::read(image).unwrap()
}

/// A WIM image captured by the real `wimlib-imagex` (Debian wimtools, which
/// `scripts/test.sh` installs) with `compress` (none, fast = XPRESS,
/// maximum = LZX).
pub fn wim(compress: &str, entries: &[(&str, &[u8])]) -> Vec<u8> {
    wim_chunked(compress, None, entries)
}

/// The same with wimlib's `--chunk-size` (LZX: 32 KiB to 2 MiB).
pub fn wim_chunked(compress: &str, chunk: Option<u32>, entries: &[(&str, &[u8])]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for (name, data) in entries {
        let path = src.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let image = dir.path().join("image.wim");
    let out = std::process::Command::new("wimlib-imagex")
        .arg("capture")
        .arg(&src)
        .arg(&image)
        .arg(format!("--compress={compress}"))
        .args(chunk.map(|c| format!("--chunk-size={c}")))
        .output()
        .expect("wimlib-imagex (Debian wimtools) must be installed; scripts/test.sh installs it");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(image).unwrap()
}

/// An InstallShield file list (`InstallShield` when `v2` is false, else
/// `ISSetupStream`) with each file obfuscated by its name as setup.exe
/// expects (block mode) and zlib-compressed (a Unicode setup), to append
/// after a PE stub.
pub fn installshield(v2: bool, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut v = if v2 { b"ISSetupStream\0".to_vec() } else { b"InstallShield\0".to_vec() };
    v.extend_from_slice(&(files.len() as u16).to_le_bytes());
    v.resize(46, 0);
    for (name, data) in files {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(data).unwrap();
        let plain = z.finish().unwrap();
        let key: Vec<u8> = name.bytes().enumerate().map(|(i, b)| b ^ [0x13, 0x35, 0x86, 0x07][i % 4]).collect();
        let body: Vec<u8> = plain.iter().enumerate().map(|(i, &p)| (!p ^ key[(i % 1024) % key.len()]).rotate_left(4)).collect();
        if v2 {
            let name16: Vec<u8> = name.encode_utf16().flat_map(u16::to_le_bytes).collect();
            v.extend_from_slice(&(name16.len() as u32).to_le_bytes());
            v.extend_from_slice(&6u32.to_le_bytes());
            v.extend_from_slice(&[0; 2]);
            v.extend_from_slice(&(body.len() as u32).to_le_bytes());
            v.extend_from_slice(&[0; 8]);
            v.extend_from_slice(&1u16.to_le_bytes());
            v.extend_from_slice(&[0; 24]);
            v.extend_from_slice(&name16);
        } else {
            let mut entry = name.as_bytes().to_vec();
            entry.resize(260, 0);
            entry.extend_from_slice(&6u32.to_le_bytes());
            entry.extend_from_slice(&[0; 4]);
            entry.extend_from_slice(&(body.len() as u32).to_le_bytes());
            entry.extend_from_slice(&[0; 8]);
            entry.extend_from_slice(&1u16.to_le_bytes());
            entry.resize(312, 0);
            v.extend_from_slice(&entry);
        }
        v.extend_from_slice(&body);
    }
    v
}

/// A 32-bit PE "packed" the way real packers do it: an empty first section
/// that the program runs in, and a stub in a second, writable section that
/// restores the program (`payload`, XOR-ed with 0x5A behind the stub) into
/// the first and jumps to it. With `seh`, the stub first installs an
/// exception handler and faults on purpose; only the handler (through the
/// CONTEXT it is given) sends execution on to the decoding loop, as
/// anti-emulation stubs do. `stub_code` replaces the whole stub when given.
pub fn packed_pe(payload: &[u8], seh: bool, stub_code: Option<&[u8]>) -> Vec<u8> {
    const BASE: u32 = 0x40_0000;
    let first_size = (payload.len() as u32).div_ceil(0x1000).max(1) * 0x1000;
    let stub_rva = 0x1000 + first_size;
    let at = |off: usize| BASE + stub_rva + off as u32;
    let mut stub = Vec::new();
    if seh {
        // push handler; push fs:[0]; mov fs:[0], esp; xor eax, eax; mov eax, [eax]; int3
        // handler: mov eax, [esp+12]; mov dword [eax+0xB8], decode; xor eax, eax; ret
        let handler = 5 + 7 + 7 + 2 + 2 + 1;
        let decode = handler + 4 + 10 + 2 + 1;
        stub.push(0x68);
        stub.extend_from_slice(&at(handler).to_le_bytes());
        stub.extend_from_slice(&[0x64, 0xFF, 0x35, 0, 0, 0, 0, 0x64, 0x89, 0x25, 0, 0, 0, 0, 0x31, 0xC0, 0x8B, 0x00, 0xCC]);
        stub.extend_from_slice(&[0x8B, 0x44, 0x24, 0x0C, 0xC7, 0x80, 0xB8, 0, 0, 0]);
        stub.extend_from_slice(&at(decode).to_le_bytes());
        stub.extend_from_slice(&[0x31, 0xC0, 0xC3]);
        assert_eq!(stub.len(), decode);
        // decode: pop dword fs:[0]; add esp, 4 (the handler's frame goes)
        stub.extend_from_slice(&[0x64, 0x8F, 0x05, 0, 0, 0, 0, 0x83, 0xC4, 0x04]);
    }
    // mov esi, src; mov edi, dst; mov ecx, len; l: lodsb; xor al, 0x5A; stosb; loop l; jmp dst
    let decode_len = 5 + 5 + 5 + 1 + 2 + 1 + 2 + 5;
    let src = at(stub.len() + decode_len);
    stub.push(0xBE);
    stub.extend_from_slice(&src.to_le_bytes());
    stub.push(0xBF);
    stub.extend_from_slice(&(BASE + 0x1000).to_le_bytes());
    stub.push(0xB9);
    stub.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    stub.extend_from_slice(&[0xAC, 0x34, 0x5A, 0xAA, 0xE2, 0xFA]);
    let jmp_from = at(stub.len() + 5);
    stub.push(0xE9);
    stub.extend_from_slice(&(BASE + 0x1000).wrapping_sub(jmp_from).to_le_bytes());
    stub.extend(payload.iter().map(|b| b ^ 0x5A));
    let stub = stub_code.map_or(stub, <[u8]>::to_vec);
    let raw_size = (stub.len() as u32).div_ceil(0x200) * 0x200;
    let stub_vsize = raw_size.div_ceil(0x1000) * 0x1000;
    let mut pe = vec![0u8; 0x200];
    pe[0..2].copy_from_slice(b"MZ");
    pe[0x3C..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    let put16 = |pe: &mut Vec<u8>, o: usize, v: u16| pe[o..o + 2].copy_from_slice(&v.to_le_bytes());
    put16(&mut pe, 0x44, 0x14C);
    put16(&mut pe, 0x46, 2);
    put16(&mut pe, 0x54, 0xE0);
    put16(&mut pe, 0x56, 0x0102);
    let opt = 0x58;
    put16(&mut pe, opt, 0x10B);
    let put32 = |pe: &mut Vec<u8>, o: usize, v: u32| pe[o..o + 4].copy_from_slice(&v.to_le_bytes());
    put32(&mut pe, opt + 16, stub_rva);
    put32(&mut pe, opt + 28, BASE);
    put32(&mut pe, opt + 32, 0x1000);
    put32(&mut pe, opt + 36, 0x200);
    put16(&mut pe, opt + 48, 4);
    put32(&mut pe, opt + 56, stub_rva + stub_vsize);
    put32(&mut pe, opt + 60, 0x200);
    put16(&mut pe, opt + 68, 2);
    put32(&mut pe, opt + 92, 16);
    let table = opt + 0xE0;
    for (k, (name, va, vs, raw, rs)) in
        [(&b".pack0\0\0"[..], 0x1000, first_size, 0, 0), (&b".pack1\0\0"[..], stub_rva, stub_vsize, 0x200, raw_size)]
            .into_iter()
            .enumerate()
    {
        let s = table + 40 * k;
        pe[s..s + 8].copy_from_slice(name);
        put32(&mut pe, s + 8, vs);
        put32(&mut pe, s + 12, va);
        put32(&mut pe, s + 16, rs);
        put32(&mut pe, s + 20, raw);
        put32(&mut pe, s + 36, 0xE000_0060);
    }
    pe.extend_from_slice(&stub);
    pe.resize(0x200 + raw_size as usize, 0);
    pe
}

/// A 32-bit PE packed the way WWPack32 packs one: the first section holds
/// its compressed stream (literals only here), the entry point is a stub
/// section with WWPack32's table-reading instructions and its one-entry
/// section table.
pub fn wwpack_pe(program: &[u8]) -> Vec<u8> {
    let mut w = qala_engine::fuzzing::WwpackWriter::new();
    for &b in program {
        w.literal(b);
    }
    let stream = w.finish();
    let first_size = ((program.len() + 16) as u32).div_ceil(0x1000) * 0x1000;
    let first_raw = (stream.len() as u32).div_ceil(0x200) * 0x200;
    let stub_rva = 0x1000 + first_size;
    let mut stub = vec![0x2E, 0x2B, 0x84, 0x0D, 0x00, 0x01, 0x00, 0x00, 0x8B, 0xF0, 0x2E, 0x03, 0xB4, 0x0D];
    stub.resize(0x100, 0x90);
    let words = stream.len() as u32 / 4;
    for v in [stub_rva - 0x1000, first_size - 4, words, words * 4 - 4] {
        stub.extend_from_slice(&v.to_le_bytes());
    }
    stub.push(0);
    stub.resize(0x200, 0);
    let mut pe = vec![0u8; 0x200];
    pe[0..2].copy_from_slice(b"MZ");
    pe[0x3C..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    let put = |pe: &mut Vec<u8>, o: usize, v: u32, n: usize| pe[o..o + n].copy_from_slice(&v.to_le_bytes()[..n]);
    put(&mut pe, 0x44, 0x14C, 2);
    put(&mut pe, 0x46, 2, 2);
    put(&mut pe, 0x54, 0xE0, 2);
    put(&mut pe, 0x56, 0x0102, 2);
    let opt = 0x58;
    for (o, v, n) in [
        (0, 0x10B, 2),
        (16, stub_rva, 4),
        (28, 0x40_0000, 4),
        (32, 0x1000, 4),
        (36, 0x200, 4),
        (56, stub_rva + 0x1000, 4),
        (60, 0x200, 4),
        (68, 2, 2),
        (92, 16, 4),
    ] {
        put(&mut pe, opt + o, v, n);
    }
    let table = opt + 0xE0;
    for (k, (name, va, vs, raw, rs, flags)) in [
        (&b".text\0\0\0"[..], 0x1000, first_size, 0x200, first_raw, 0xE000_0020),
        (&b".WWP32\0\0"[..], stub_rva, 0x1000, 0x200 + first_raw, 0x200, 0xC000_0040),
    ]
    .into_iter()
    .enumerate()
    {
        let s = table + 40 * k;
        pe[s..s + 8].copy_from_slice(name);
        for (o, v) in [(8, vs), (12, va), (16, rs), (20, raw), (36, flags)] {
            put(&mut pe, s + o, v, 4);
        }
    }
    pe.extend_from_slice(&stream);
    pe.resize(0x200 + first_raw as usize, 0);
    pe.extend_from_slice(&stub);
    pe
}

/// An older InstallShield setup's overlay: the plain file list (name, path,
/// version, size, bytes) holding an InstallShield cabinet set — a header
/// `data1.hdr` (InstallShield 9 layout) and a volume `data2.cab` with
/// `files` stored in chunked raw deflate, obfuscated when asked — and a
/// `setup.ini`. Files go in directory `app`.
pub fn installshield_cab_setup(files: &[(&str, &[u8])], obfuscated: bool) -> Vec<u8> {
    let put = |v: &mut Vec<u8>, o: usize, x: u64, n: usize| {
        if v.len() < o + n {
            v.resize(o + n, 0);
        }
        v[o..o + n].copy_from_slice(&x.to_le_bytes()[..n]);
    };
    // The volume: a common header, then each file's chunks.
    let mut volume = b"ISc(".to_vec();
    put(&mut volume, 4, 0x0100_9500, 4);
    volume.resize(0x200, 0);
    let mut stored = Vec::new();
    for (_, data) in files {
        let mut z = flate2::Compress::new(flate2::Compression::default(), false);
        let mut chunk = Vec::with_capacity(data.len() + 64);
        z.compress_vec(data, &mut chunk, flate2::FlushCompress::Sync).unwrap();
        let mut bytes = (chunk.len() as u16).to_le_bytes().to_vec();
        bytes.extend_from_slice(&chunk);
        if obfuscated {
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = b.wrapping_add((i % 0x47) as u8).rotate_left(2) ^ 0xD5;
            }
        }
        stored.push((volume.len() as u64, bytes.len() as u64));
        volume.extend_from_slice(&bytes);
    }
    // The header: common header, descriptor at 0x200, file table at 0x400
    // (slot 0 = the directory's name), descriptors at +0x100, names at +0x800.
    let (cdo, fto, fto2) = (0x200usize, 0x200usize, 0x100usize);
    let table = cdo + fto;
    let mut hdr = b"ISc(".to_vec();
    put(&mut hdr, 4, 0x0100_9500, 4);
    put(&mut hdr, 12, cdo as u64, 4);
    put(&mut hdr, 16, 0x1000, 4);
    put(&mut hdr, cdo + 0xC, fto as u64, 4);
    put(&mut hdr, cdo + 0x1C, 1, 4);
    put(&mut hdr, cdo + 0x28, files.len() as u64, 4);
    put(&mut hdr, cdo + 0x2C, fto2 as u64, 4);
    put(&mut hdr, table, 0x800, 4);
    let mut names = b"app\0".to_vec();
    for (k, ((name, data), (offset, size))) in files.iter().zip(&stored).enumerate() {
        let d = table + fto2 + 0x57 * k;
        put(&mut hdr, d, 4 | if obfuscated { 2 } else { 0 }, 2);
        put(&mut hdr, d + 2, data.len() as u64, 8);
        put(&mut hdr, d + 10, *size, 8);
        put(&mut hdr, d + 18, *offset, 8);
        put(&mut hdr, d + 0x3A, (0x800 + names.len()) as u64, 4);
        put(&mut hdr, d + 0x3E, 0, 2);
        put(&mut hdr, d + 0x55, 2, 2);
        names.extend_from_slice(name.as_bytes());
        names.push(0);
    }
    hdr.resize(table + 0x800, 0);
    hdr.extend_from_slice(&names);
    let mut list = Vec::new();
    for (name, body) in [("data1.hdr", &hdr[..]), ("data2.cab", &volume[..]), ("setup.ini", &b"[Startup]\n"[..])] {
        list.extend_from_slice(format!("{name}\0Disk1\\{name}\00.0.0.0\0{}\0", body.len()).as_bytes());
        list.extend_from_slice(body);
    }
    list
}

/// A PE of headers only (no sections): whatever follows is its overlay.
pub fn headers_only_pe() -> Vec<u8> {
    let mut stub = b"MZ".to_vec();
    stub.resize(0x40, 0);
    stub[0x3C] = 0x40;
    stub.extend_from_slice(b"PE\0\0\x4c\x01\0\0");
    stub.resize(0x40 + 24, 0);
    stub
}

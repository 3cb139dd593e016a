//! A 32-bit PE laid out as the Windows loader maps it (headers, then each
//! section's raw data at its virtual address), and a memory image turned
//! back into a PE file. Shared by the unpackers that work on the image in
//! memory: emulation ([`crate::emu`]) and the static ones.

use super::bytes::{le_u16, le_u32};

const PAGE: u32 = 0x1000;
pub(crate) const WRITABLE: u32 = 0x8000_0000;

#[derive(Debug, Clone)]
pub(crate) struct Section {
    pub(crate) va: u32,
    pub(crate) vsize: u32,
    pub(crate) raw: u32,
    pub(crate) raw_size: u32,
    pub(crate) flags: u32,
}

impl Section {
    /// The bytes the section spans in memory (at least its raw data).
    pub(crate) fn span(&self) -> u32 {
        self.vsize.max(self.raw_size)
    }

    pub(crate) fn contains(&self, rva: u32) -> bool {
        rva >= self.va && rva - self.va < self.span()
    }
}

/// What the loader needs from a PE32 (i386) header.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) base: u32,
    /// SizeOfImage rounded up to pages.
    pub(crate) size: u32,
    pub(crate) entry: u32,
    pub(crate) headers: u32,
    pub(crate) import_dir: u32,
    pub(crate) sections: Vec<Section>,
    /// File offset of the section table.
    table: usize,
}

pub(crate) fn parse(d: &[u8]) -> Option<Layout> {
    let u32_at = |o: usize| le_u32(d, o).map(|v| v as u32);
    let pe = u32_at(0x3C)? as usize;
    if d.get(pe..pe + 4)? != b"PE\0\0" || le_u16(d, pe + 4)? != 0x14C || le_u16(d, pe + 24)? != 0x10B {
        return None;
    }
    let opt = pe + 24;
    let count = le_u16(d, pe + 6)?.min(96);
    let table = opt + le_u16(d, pe + 20)?;
    let sections = (0..count)
        .map(|s| {
            let o = table + 40 * s;
            Some(Section {
                vsize: u32_at(o + 8)?,
                va: u32_at(o + 12)?,
                raw_size: u32_at(o + 16)?,
                raw: u32_at(o + 20)?,
                flags: u32_at(o + 36)?,
            })
        })
        .collect::<Option<Vec<_>>>()?;
    let dirs = u32_at(opt + 92)?;
    Some(Layout {
        base: u32_at(opt + 28)?,
        entry: u32_at(opt + 16)?,
        size: u32_at(opt + 56)?.checked_add(PAGE - 1)? & !(PAGE - 1),
        headers: u32_at(opt + 60)?,
        import_dir: if dirs > 1 { u32_at(opt + 104)? } else { 0 },
        sections,
        table,
    })
}

impl Layout {
    pub(crate) fn section_at(&self, rva: u32) -> Option<&Section> {
        self.sections.iter().find(|s| s.contains(rva))
    }

    /// The image as the loader maps it; `None` if it is larger than `max`.
    pub(crate) fn map(&self, d: &[u8], max: u64) -> Option<Vec<u8>> {
        if self.size == 0 || u64::from(self.size) > max {
            return None;
        }
        let mut image = vec![0u8; self.size as usize];
        let head = (self.headers.max(0x200) as usize).min(d.len()).min(image.len());
        image[..head].copy_from_slice(&d[..head]);
        for s in &self.sections {
            // The loader rounds raw offsets down to 512 bytes.
            let raw = s.raw as usize & !0x1FF;
            let Some(bytes) = d.get(raw..).map(|r| &r[..r.len().min(s.raw_size as usize)]) else { continue };
            let at = s.va as usize;
            if at < image.len() {
                let n = bytes.len().min(image.len() - at);
                image[at..at + n].copy_from_slice(&bytes[..n]);
            }
        }
        Some(image)
    }

    /// Make a memory image a PE file again: each section's raw data is its
    /// memory, and the entry point `entry` when known.
    pub(crate) fn rebuild(&self, image: &mut [u8], entry: Option<u32>) {
        let put = |d: &mut [u8], o: usize, v: u32| {
            if let Some(b) = d.get_mut(o..o + 4) {
                b.copy_from_slice(&v.to_le_bytes());
            }
        };
        let Some(pe) = le_u32(image, 0x3C) else { return };
        if image.get(pe..pe + 4) != Some(b"PE\0\0") {
            return;
        }
        if let Some(rva) = entry {
            put(image, pe + 24 + 16, rva);
        }
        let len = image.len() as u32;
        for (k, s) in self.sections.iter().enumerate() {
            let o = self.table + 40 * k;
            put(image, o + 16, s.vsize.min(len.saturating_sub(s.va)));
            put(image, o + 20, s.va);
        }
    }
}

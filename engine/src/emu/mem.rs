//! The emulated address space: a few flat regions (the image, the stack,
//! the process structures, the fake system DLLs, what the program
//! allocates), bounded as a whole. Every access is checked; an address
//! outside every region is a fault the program may handle, as on Windows.

/// 4 KiB pages, as on x86.
pub(crate) const PAGE: u32 = 0x1000;

pub(crate) struct Region {
    pub(crate) base: u32,
    pub(crate) data: Vec<u8>,
    /// One bit per page: written since the program started.
    written: Vec<u64>,
    /// One bit per page: instructions were decoded from it (and may be
    /// cached) since it was last written.
    code: Vec<u64>,
}

impl Region {
    fn end(&self) -> u64 {
        u64::from(self.base) + self.data.len() as u64
    }

    fn contains(&self, addr: u32, len: u32) -> bool {
        addr >= self.base && u64::from(addr) + u64::from(len) <= self.end()
    }
}

/// The whole address space, at most `budget` bytes of regions.
pub(crate) struct Memory {
    /// Goes up whenever a page that code was decoded from is written:
    /// decoded instructions cached before are stale.
    pub(crate) generation: u64,
    regions: Vec<Region>,
    last: usize,
    used: u64,
    budget: u64,
}

/// An access outside every region (the faulting address).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fault(pub(crate) u32);

impl Memory {
    pub(crate) fn new(budget: u64) -> Self {
        Self { generation: 0, regions: Vec::new(), last: 0, used: 0, budget }
    }

    /// Map `len` zeroed bytes at `base` (page-rounded). `false` if it
    /// overlaps a region or exceeds the budget.
    pub(crate) fn map(&mut self, base: u32, len: u32) -> bool {
        let len = len.div_ceil(PAGE).max(1).saturating_mul(PAGE);
        let end = u64::from(base) + u64::from(len);
        if end > 1 << 32
            || self.used + u64::from(len) > self.budget
            || self.regions.iter().any(|r| u64::from(base) < r.end() && end > u64::from(r.base))
        {
            return false;
        }
        self.used += u64::from(len);
        let pages = (len / PAGE) as usize;
        let bits = vec![0; pages.div_ceil(64)];
        self.regions.push(Region { base, data: vec![0; len as usize], written: bits.clone(), code: bits });
        true
    }

    /// A free, page-aligned range of `len` bytes at or above `from`.
    pub(crate) fn find_free(&self, from: u32, len: u32) -> Option<u32> {
        let len = u64::from(len.div_ceil(PAGE).max(1)) * u64::from(PAGE);
        let mut at = u64::from(from);
        let mut sorted: Vec<(u64, u64)> = self.regions.iter().map(|r| (u64::from(r.base), r.end())).collect();
        sorted.sort_unstable();
        for (start, end) in sorted {
            if end <= at {
                continue;
            }
            if at + len <= start {
                break;
            }
            at = end.div_ceil(0x10000) * 0x10000;
        }
        (at + len <= 1 << 32).then_some(at as u32)
    }

    pub(crate) fn region(&self, base: u32) -> Option<&Region> {
        self.regions.iter().find(|r| r.base == base)
    }

    /// The bytes of the region that starts at `base`, unmapped.
    pub(crate) fn take(&mut self, base: u32) -> Option<Vec<u8>> {
        let i = self.regions.iter().position(|r| r.base == base)?;
        let r = self.regions.swap_remove(i);
        self.used -= r.data.len() as u64;
        self.last = 0;
        Some(r.data)
    }

    /// Unmap the region that starts at `base` (VirtualFree).
    pub(crate) fn unmap(&mut self, base: u32) -> bool {
        self.take(base).is_some()
    }

    fn find(&mut self, addr: u32, len: u32) -> Option<usize> {
        if self.regions.get(self.last).is_some_and(|r| r.contains(addr, len)) {
            return Some(self.last);
        }
        let i = self.regions.iter().position(|r| r.contains(addr, len))?;
        self.last = i;
        Some(i)
    }

    pub(crate) fn read(&mut self, addr: u32, out: &mut [u8]) -> Result<(), Fault> {
        let len = out.len() as u32;
        match self.find(addr, len) {
            Some(i) => {
                let r = &self.regions[i];
                let at = (addr - r.base) as usize;
                out.copy_from_slice(&r.data[at..at + out.len()]);
                Ok(())
            }
            // Straddling two regions, or unmapped: byte by byte.
            None if len > 1 => {
                for (k, b) in out.iter_mut().enumerate() {
                    let mut one = [0];
                    self.read(addr.wrapping_add(k as u32), &mut one)?;
                    *b = one[0];
                }
                Ok(())
            }
            None => Err(Fault(addr)),
        }
    }

    pub(crate) fn write(&mut self, addr: u32, bytes: &[u8]) -> Result<(), Fault> {
        if bytes.is_empty() {
            return Ok(());
        }
        let len = bytes.len() as u32;
        match self.find(addr, len) {
            Some(i) => {
                let r = &mut self.regions[i];
                let at = (addr - r.base) as usize;
                r.data[at..at + bytes.len()].copy_from_slice(bytes);
                let (first, last) = (at / PAGE as usize, (at + bytes.len() - 1) / PAGE as usize);
                for p in first..=last {
                    r.written[p / 64] |= 1 << (p % 64);
                    if r.code[p / 64] & (1 << (p % 64)) != 0 {
                        r.code[p / 64] &= !(1 << (p % 64));
                        self.generation += 1;
                    }
                }
                Ok(())
            }
            None if len > 1 => {
                // Check every byte first: a faulting write changes nothing.
                for k in 0..len {
                    self.find(addr.wrapping_add(k), 1).ok_or(Fault(addr.wrapping_add(k)))?;
                }
                for (k, &b) in bytes.iter().enumerate() {
                    self.write(addr.wrapping_add(k as u32), &[b])?;
                }
                Ok(())
            }
            None => Err(Fault(addr)),
        }
    }

    /// Up to 15 bytes at `addr` for the decoder (fewer at a region's end).
    pub(crate) fn fetch(&mut self, addr: u32, out: &mut [u8; 15]) -> Result<usize, Fault> {
        let i = self.find(addr, 1).ok_or(Fault(addr))?;
        let r = &self.regions[i];
        let at = (addr - r.base) as usize;
        let n = (r.data.len() - at).min(15);
        out[..n].copy_from_slice(&r.data[at..at + n]);
        // An instruction may straddle into the next page: both hold code.
        let r = &mut self.regions[i];
        for p in [at / PAGE as usize, (at + n - 1) / PAGE as usize] {
            r.code[p / 64] |= 1 << (p % 64);
        }
        Ok(n)
    }

    /// Whether the page holding `addr` was written since the start.
    pub(crate) fn was_written(&mut self, addr: u32) -> bool {
        self.find(addr, 1).is_some_and(|i| {
            let r = &self.regions[i];
            let p = ((addr - r.base) / PAGE) as usize;
            r.written[p / 64] & (1 << (p % 64)) != 0
        })
    }

    /// Bytes loaded before the start, without marking pages written.
    pub(crate) fn load(&mut self, addr: u32, bytes: &[u8]) -> Result<(), Fault> {
        let i = self.find(addr, bytes.len() as u32).ok_or(Fault(addr))?;
        let r = &mut self.regions[i];
        let at = (addr - r.base) as usize;
        r.data[at..at + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }

    pub(crate) fn u32(&mut self, addr: u32) -> Result<u32, Fault> {
        let mut b = [0; 4];
        self.read(addr, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub(crate) fn put_u32(&mut self, addr: u32, v: u32) -> Result<(), Fault> {
        self.write(addr, &v.to_le_bytes())
    }

    /// A NUL-terminated byte string of at most `max` bytes.
    pub(crate) fn c_string(&mut self, addr: u32, max: usize) -> Result<Vec<u8>, Fault> {
        let mut out = Vec::new();
        for k in 0..max as u32 {
            let mut b = [0];
            self.read(addr.wrapping_add(k), &mut b)?;
            if b[0] == 0 {
                break;
            }
            out.push(b[0]);
        }
        Ok(out)
    }
}

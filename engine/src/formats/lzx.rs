//! LZX as WIM images use it: each chunk (32 KiB by default) compressed on
//! its own with a window of the chunk's size, written after Microsoft's LZX
//! description ([MS-PATCH] 2) with WIM's differences: a block's size is a
//! 1-bit "default 32 KiB" flag or an explicit size (16 bits, 24 for windows
//! of 64 KiB and more), there is no E8 header bit, and the E8 call
//! translation is always undone with a file size of 12,000,000. (`lzxd`
//! reads LZX DELTA, whose block headers differ.)
//!
//! Codes are canonical Huffman codes of at most 16 bits read MSB first from
//! 16-bit little-endian words; the main tree (literals and match headers)
//! and the length tree are sent as deltas to the previous block's through a
//! 20-symbol pretree. Every table lookup and copy is checked: a corrupt
//! chunk is an error, never a panic or an allocation beyond the chunk size.

const MIN_MATCH: usize = 2;
const NUM_CHARS: usize = 256;
const LENGTH_TREE: usize = 249;
const PRETREE: usize = 20;
const ALIGNED_TREE: usize = 8;
const MAX_CODE: u32 = 16;
const E8_FILE_SIZE: i32 = 12_000_000;

/// Extra offset bits per position slot (then 17 for every slot after).
fn extra_bits(slot: usize) -> u32 {
    if slot < 4 { 0 } else { ((slot as u32 - 2) / 2).min(17) }
}

/// Position slots for a window of `2^bits` bytes (15 to 21).
fn position_slots(bits: u32) -> usize {
    match bits {
        15 => 30,
        16 => 32,
        17 => 34,
        18 => 36,
        19 => 38,
        20 => 42,
        _ => 50,
    }
}

struct Bits<'a> {
    src: &'a [u8],
    pos: usize,
    buf: u32,
    left: u32,
}

const CUT: &str = "lzx: chunk cut short";

impl Bits<'_> {
    /// At least `n` (at most 17) bits buffered, 16 at a time; past the end
    /// of the input, zero bits (an error only if a code needs them).
    fn ensure(&mut self, n: u32) {
        while self.left < n {
            let word = match self.src.get(self.pos..self.pos + 2) {
                Some(b) => u32::from(u16::from_le_bytes([b[0], b[1]])),
                None => 0,
            };
            self.pos += 2;
            self.buf |= word << (16 - self.left);
            self.left += 16;
        }
    }

    fn peek(&mut self, n: u32) -> u32 {
        self.ensure(n);
        if n == 0 { 0 } else { self.buf >> (32 - n) }
    }

    fn skip(&mut self, n: u32) {
        self.buf = if n >= 32 { 0 } else { self.buf << n };
        self.left -= n;
    }

    fn read(&mut self, n: u32) -> Result<u32, String> {
        if n > 16 {
            let high = self.read(n - 16)?;
            return Ok(high << 16 | self.read(16)?);
        }
        let v = self.peek(n);
        self.skip(n);
        self.check()?;
        Ok(v)
    }

    /// Past the end by more than the padding a writer may omit.
    fn check(&self) -> Result<(), String> {
        if self.pos > self.src.len() + 4 { Err(CUT.to_string()) } else { Ok(()) }
    }

    /// Drop the rest of the current 16-bit word (before raw bytes).
    fn align(&mut self) {
        self.buf = 0;
        self.left = 0;
    }

    fn raw_u32(&mut self) -> Result<u32, String> {
        let b = self.src.get(self.pos..self.pos + 4).ok_or(CUT)?;
        self.pos += 4;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// A canonical Huffman code: a direct table on the first 16 bits.
struct Tree {
    table: Vec<u16>,
    lengths: Vec<u8>,
}

impl Tree {
    fn new(lengths: &[u8]) -> Result<Self, String> {
        let mut table = vec![u16::MAX; 1 << MAX_CODE];
        let mut code: u32 = 0;
        for len in 1..=MAX_CODE {
            for (sym, _) in lengths.iter().enumerate().filter(|&(_, &l)| u32::from(l) == len) {
                let span = 1u32 << (MAX_CODE - len);
                let start = code << (MAX_CODE - len);
                let end = start + span;
                if end > 1 << MAX_CODE {
                    return Err("lzx: oversubscribed Huffman code".into());
                }
                table[start as usize..end as usize].fill(sym as u16);
                code += 1;
            }
            code <<= 1;
        }
        Ok(Self { table, lengths: lengths.to_vec() })
    }

    fn decode(&self, b: &mut Bits<'_>) -> Result<usize, String> {
        let sym = self.table[b.peek(MAX_CODE) as usize];
        if sym == u16::MAX {
            return Err("lzx: invalid Huffman code".into());
        }
        b.skip(u32::from(self.lengths[sym as usize]));
        b.check()?;
        Ok(sym as usize)
    }
}

/// Read code lengths for `lengths` (deltas to their previous values)
/// through a pretree.
fn read_lengths(b: &mut Bits<'_>, lengths: &mut [u8]) -> Result<(), String> {
    let mut pre = [0u8; PRETREE];
    for l in &mut pre {
        *l = b.read(4)? as u8;
    }
    let pre = Tree::new(&pre)?;
    let mut i = 0;
    while i < lengths.len() {
        let code = pre.decode(b)?;
        let (run, value) = match code {
            17 => (4 + b.read(4)? as usize, None),
            18 => (20 + b.read(5)? as usize, None),
            19 => {
                let run = 4 + b.read(1)? as usize;
                let code = pre.decode(b)?;
                if code > 16 {
                    return Err("lzx: bad pretree code in a run".into());
                }
                (run, Some(code))
            }
            c => (1, Some(c)),
        };
        // A run takes the value computed from its first element's previous
        // length, for every element.
        let value = match (value, lengths.get(i)) {
            (Some(c), Some(&prev)) => ((u32::from(prev) + 17 - c as u32) % 17) as u8,
            _ => 0,
        };
        for _ in 0..run {
            let Some(l) = lengths.get_mut(i) else { break };
            *l = value;
            i += 1;
        }
    }
    Ok(())
}

/// Decompress one WIM LZX chunk of `size` bytes (window `2^window_bits`).
pub(crate) fn decompress_chunk(src: &[u8], size: usize, window_bits: u32) -> Result<Vec<u8>, String> {
    let slots = position_slots(window_bits);
    let main_size = NUM_CHARS + 8 * slots;
    let mut base = vec![0u32; slots];
    for s in 1..slots {
        base[s] = base[s - 1] + (1 << extra_bits(s - 1));
    }
    let mut b = Bits { src, pos: 0, buf: 0, left: 0 };
    let mut out: Vec<u8> = Vec::with_capacity(size);
    let mut main_lengths = vec![0u8; main_size];
    let mut length_lengths = vec![0u8; LENGTH_TREE];
    let mut recent = [1u32, 1, 1];
    while out.len() < size {
        let kind = b.read(3)?;
        // 32 KiB, or 16 bits (24 for windows of 64 KiB and more).
        let block = if b.read(1)? == 1 {
            32 * 1024
        } else if window_bits >= 16 {
            b.read(24)? as usize
        } else {
            b.read(16)? as usize
        };
        if block == 0 {
            return Err("lzx: empty block".into());
        }
        let end = out.len().saturating_add(block).min(size);
        match kind {
            3 => {
                b.align();
                for r in &mut recent {
                    *r = b.raw_u32()?;
                }
                let n = end - out.len();
                let raw = src.get(b.pos..b.pos + n).ok_or(CUT)?;
                out.extend_from_slice(raw);
                b.pos += n + (n & 1);
            }
            1 | 2 => {
                let aligned = if kind == 2 {
                    let mut l = [0u8; ALIGNED_TREE];
                    for x in &mut l {
                        *x = b.read(3)? as u8;
                    }
                    Some(Tree::new(&l)?)
                } else {
                    None
                };
                read_lengths(&mut b, &mut main_lengths[..NUM_CHARS])?;
                read_lengths(&mut b, &mut main_lengths[NUM_CHARS..])?;
                let main = Tree::new(&main_lengths)?;
                read_lengths(&mut b, &mut length_lengths)?;
                let lengths = Tree::new(&length_lengths)?;
                while out.len() < end {
                    let sym = main.decode(&mut b)?;
                    if sym < NUM_CHARS {
                        out.push(sym as u8);
                        continue;
                    }
                    let header = sym - NUM_CHARS;
                    let mut len = header & 7;
                    if len == 7 {
                        len += lengths.decode(&mut b)?;
                    }
                    len += MIN_MATCH;
                    let slot = header >> 3;
                    let offset = match slot {
                        0 => recent[0],
                        1 => {
                            recent.swap(0, 1);
                            recent[0]
                        }
                        2 => {
                            recent.swap(0, 2);
                            recent[0]
                        }
                        _ => {
                            let extra = extra_bits(slot);
                            let footer = match &aligned {
                                Some(a) if extra >= 3 => (b.read(extra - 3)? << 3) + a.decode(&mut b)? as u32,
                                _ => b.read(extra)?,
                            };
                            let offset = base[slot] + footer - 2;
                            recent = [offset, recent[0], recent[1]];
                            offset
                        }
                    } as usize;
                    if offset == 0 || offset > out.len() {
                        return Err(format!("lzx: match {offset} bytes back with {} decoded", out.len()));
                    }
                    if out.len() + len > size {
                        return Err("lzx: match past the chunk's end".into());
                    }
                    for _ in 0..len {
                        out.push(out[out.len() - offset]);
                    }
                }
            }
            k => return Err(format!("lzx: block type {k}")),
        }
    }
    undo_e8(&mut out);
    Ok(out)
}

/// Undo the E8 (x86 call) translation over a chunk.
fn undo_e8(data: &mut [u8]) {
    if data.len() <= 10 {
        return;
    }
    let mut i = 0;
    while i < data.len() - 10 {
        if data[i] != 0xE8 {
            i += 1;
            continue;
        }
        let pos = i as i32;
        let abs = i32::from_le_bytes([data[i + 1], data[i + 2], data[i + 3], data[i + 4]]);
        let rel = if abs >= 0 { (abs < E8_FILE_SIZE).then(|| abs - pos) } else { (abs >= -pos).then(|| abs + E8_FILE_SIZE) };
        if let Some(rel) = rel {
            data[i + 1..i + 5].copy_from_slice(&rel.to_le_bytes());
        }
        i += 5;
    }
}

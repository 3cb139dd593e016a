//! An interpreter for the 32-bit x86 integer instructions that unpacking
//! stubs use: data movement, arithmetic and logic with their flags, shifts
//! and rotates, string instructions with `rep`, branches, calls and the
//! stack. Instructions are decoded by `iced-x86`; their effects are this
//! file's. Privileged instructions (I/O, `hlt`, `cli`), `int3`, `ud2` and
//! faults raise the exception Windows would, for the program's handlers;
//! anything else (SSE, far calls) stops the run: a stub that needs it is not
//! emulated, never mis-emulated. x87 instructions are no-ops except
//! `fnstenv`, which reports where the last one was (stubs use it to find
//! their own address).

use super::mem::{Fault, Memory};
use iced_x86::{ConditionCode, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

pub(crate) const CF: u32 = 1 << 0;
pub(crate) const PF: u32 = 1 << 2;
pub(crate) const AF: u32 = 1 << 4;
pub(crate) const ZF: u32 = 1 << 6;
pub(crate) const SF: u32 = 1 << 7;
pub(crate) const TF: u32 = 1 << 8;
pub(crate) const DF: u32 = 1 << 10;
pub(crate) const OF: u32 = 1 << 11;
const ARITH: u32 = CF | PF | AF | ZF | SF | OF;

/// Windows exception codes the interpreter raises.
pub(crate) const ACCESS_VIOLATION: u32 = 0xC000_0005;
pub(crate) const BREAKPOINT: u32 = 0x8000_0003;
pub(crate) const SINGLE_STEP: u32 = 0x8000_0004;
pub(crate) const DIVIDE_BY_ZERO: u32 = 0xC000_0094;
pub(crate) const INTEGER_OVERFLOW: u32 = 0xC000_0095;
pub(crate) const PRIVILEGED: u32 = 0xC000_0096;
pub(crate) const ILLEGAL: u32 = 0xC000_001D;

pub(crate) const EAX: usize = 0;
pub(crate) const ECX: usize = 1;
pub(crate) const EDX: usize = 2;
pub(crate) const EBX: usize = 3;
pub(crate) const ESP: usize = 4;
pub(crate) const EBP: usize = 5;
pub(crate) const ESI: usize = 6;
pub(crate) const EDI: usize = 7;

/// Why an instruction did not complete.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Exit {
    /// A Windows exception at `eip` (the instruction's own address): code
    /// and, for an access violation, the address.
    Exception { code: u32, address: u32 },
    /// An instruction this interpreter does not implement.
    Unsupported(Mnemonic),
}

impl From<Fault> for Exit {
    fn from(f: Fault) -> Self {
        Exit::Exception { code: ACCESS_VIOLATION, address: f.0 }
    }
}

type Step<T = ()> = Result<T, Exit>;

pub(crate) struct Cpu {
    pub(crate) r: [u32; 8],
    pub(crate) eip: u32,
    pub(crate) flags: u32,
    pub(crate) fs_base: u32,
    /// Extra steps taken by `rep` instructions (counted against the budget).
    pub(crate) extra: u64,
    tsc: u64,
    fpu_ip: u32,
    /// Decoded instructions by address (direct-mapped), valid while the
    /// memory's code generation is the one they were decoded in.
    cache: Vec<(u32, u64, Instruction)>,
}

const CACHE_SLOTS: usize = 4096;

fn mask(size: usize) -> u32 {
    if size >= 4 { u32::MAX } else { (1u32 << (8 * size.max(1))) - 1 }
}

fn sign(size: usize) -> u32 {
    1u32 << (8 * size.clamp(1, 4) - 1)
}

fn sext(v: u32, size: usize) -> i64 {
    match size {
        1 => i64::from(v as u8 as i8),
        2 => i64::from(v as u16 as i16),
        _ => i64::from(v as i32),
    }
}

/// Which part of which general register an operand names.
enum Part {
    Full,
    Word,
    Low,
    High,
}

fn gpr(reg: Register) -> Option<(usize, Part)> {
    let n = reg as u32;
    let from = |r: Register| n.wrapping_sub(r as u32) as usize;
    let (k, part) = if (Register::EAX as u32..=Register::EDI as u32).contains(&n) {
        (from(Register::EAX), Part::Full)
    } else if (Register::AX as u32..=Register::DI as u32).contains(&n) {
        (from(Register::AX), Part::Word)
    } else if (Register::AL as u32..=Register::BL as u32).contains(&n) {
        (from(Register::AL), Part::Low)
    } else if (Register::AH as u32..=Register::BH as u32).contains(&n) {
        (from(Register::AH), Part::High)
    } else {
        return None;
    };
    Some((k, part))
}

fn unsupported(i: &Instruction) -> Exit {
    Exit::Unsupported(i.mnemonic())
}

impl Cpu {
    pub(crate) fn new() -> Self {
        Self {
            r: [0; 8],
            eip: 0,
            flags: 0x202,
            fs_base: 0,
            extra: 0,
            tsc: 0x1_0000_0000,
            fpu_ip: 0,
            cache: vec![(u32::MAX, u64::MAX, Instruction::default()); CACHE_SLOTS],
        }
    }

    fn flag(&self, f: u32) -> bool {
        self.flags & f != 0
    }

    fn set_flag(&mut self, f: u32, on: bool) {
        if on { self.flags |= f } else { self.flags &= !f }
    }

    // ---- registers and operands ----

    fn reg(&self, reg: Register) -> Option<u32> {
        Some(match gpr(reg) {
            Some((k, Part::Full)) => self.r[k],
            Some((k, Part::Word)) => self.r[k] & 0xFFFF,
            Some((k, Part::Low)) => self.r[k] & 0xFF,
            Some((k, Part::High)) => (self.r[k] >> 8) & 0xFF,
            None => match reg {
                Register::CS => 0x1B,
                Register::DS | Register::ES | Register::SS => 0x23,
                Register::FS => 0x3B,
                Register::GS => 0,
                _ => return None,
            },
        })
    }

    fn set_reg(&mut self, reg: Register, v: u32) -> Option<()> {
        match gpr(reg) {
            Some((k, Part::Full)) => self.r[k] = v,
            Some((k, Part::Word)) => self.r[k] = (self.r[k] & 0xFFFF_0000) | (v & 0xFFFF),
            Some((k, Part::Low)) => self.r[k] = (self.r[k] & 0xFFFF_FF00) | (v & 0xFF),
            Some((k, Part::High)) => self.r[k] = (self.r[k] & 0xFFFF_00FF) | ((v & 0xFF) << 8),
            // Loading a segment register changes nothing a stub can see.
            None if matches!(reg, Register::DS | Register::ES | Register::SS | Register::FS | Register::GS) => {}
            None => return None,
        }
        Some(())
    }

    /// The address a memory operand refers to, with the FS base applied.
    fn ea(&self, i: &Instruction) -> u32 {
        let mut a = i.memory_displacement32();
        if i.memory_base() != Register::None {
            a = a.wrapping_add(self.reg(i.memory_base()).unwrap_or(0));
        }
        if i.memory_index() != Register::None {
            a = a.wrapping_add(self.reg(i.memory_index()).unwrap_or(0).wrapping_mul(i.memory_index_scale()));
        }
        if i.memory_segment() == Register::FS {
            a = a.wrapping_add(self.fs_base);
        }
        a
    }

    fn size(i: &Instruction, n: u32) -> usize {
        match i.op_kind(n) {
            OpKind::Register => i.op_register(n).size(),
            OpKind::Memory => i.memory_size().size(),
            _ if n > 0 => Self::size(i, 0),
            _ => 4,
        }
    }

    fn read_mem(mem: &mut Memory, addr: u32, size: usize) -> Step<u32> {
        let mut b = [0u8; 4];
        mem.read(addr, &mut b[..size.min(4)])?;
        Ok(u32::from_le_bytes(b))
    }

    fn write_mem(mem: &mut Memory, addr: u32, size: usize, v: u32) -> Step {
        mem.write(addr, &v.to_le_bytes()[..size.min(4)])?;
        Ok(())
    }

    fn read(&self, mem: &mut Memory, i: &Instruction, n: u32) -> Step<u32> {
        match i.op_kind(n) {
            OpKind::Register => self.reg(i.op_register(n)).ok_or_else(|| unsupported(i)),
            OpKind::Memory => {
                let size = i.memory_size().size();
                if !(1..=4).contains(&size) {
                    return Err(unsupported(i));
                }
                Self::read_mem(mem, self.ea(i), size)
            }
            OpKind::Immediate8
            | OpKind::Immediate8_2nd
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32 => Ok(i.immediate(n) as u32),
            OpKind::NearBranch32 | OpKind::NearBranch16 => Ok(i.near_branch32()),
            _ => Err(unsupported(i)),
        }
    }

    fn write(&mut self, mem: &mut Memory, i: &Instruction, n: u32, v: u32) -> Step {
        match i.op_kind(n) {
            OpKind::Register => self.set_reg(i.op_register(n), v).ok_or_else(|| unsupported(i)),
            OpKind::Memory => {
                let size = i.memory_size().size();
                if !(1..=4).contains(&size) {
                    return Err(unsupported(i));
                }
                Self::write_mem(mem, self.ea(i), size, v)
            }
            _ => Err(unsupported(i)),
        }
    }

    pub(crate) fn push(&mut self, mem: &mut Memory, v: u32) -> Step {
        let sp = self.r[ESP].wrapping_sub(4);
        mem.put_u32(sp, v)?;
        self.r[ESP] = sp;
        Ok(())
    }

    pub(crate) fn pop(&mut self, mem: &mut Memory) -> Step<u32> {
        let v = mem.u32(self.r[ESP])?;
        self.r[ESP] = self.r[ESP].wrapping_add(4);
        Ok(v)
    }

    // ---- flags ----

    fn szp(&mut self, res: u32, size: usize) {
        let res = res & mask(size);
        self.set_flag(ZF, res == 0);
        self.set_flag(SF, res & sign(size) != 0);
        self.set_flag(PF, (res as u8).count_ones().is_multiple_of(2));
    }

    fn add(&mut self, a: u32, b: u32, carry: u32, size: usize) -> u32 {
        let m = mask(size);
        let (a, b) = (a & m, b & m);
        let full = u64::from(a) + u64::from(b) + u64::from(carry);
        let res = (full as u32) & m;
        self.set_flag(CF, full > u64::from(m));
        self.set_flag(OF, (a ^ res) & (b ^ res) & sign(size) != 0);
        self.set_flag(AF, (a ^ b ^ res) & 0x10 != 0);
        self.szp(res, size);
        res
    }

    fn sub(&mut self, a: u32, b: u32, borrow: u32, size: usize) -> u32 {
        let m = mask(size);
        let (a, b) = (a & m, b & m);
        let res = a.wrapping_sub(b).wrapping_sub(borrow) & m;
        self.set_flag(CF, u64::from(a) < u64::from(b) + u64::from(borrow));
        self.set_flag(OF, (a ^ b) & (a ^ res) & sign(size) != 0);
        self.set_flag(AF, (a ^ b ^ res) & 0x10 != 0);
        self.szp(res, size);
        res
    }

    fn logic(&mut self, res: u32, size: usize) -> u32 {
        self.flags &= !(CF | OF | AF);
        self.szp(res, size);
        res & mask(size)
    }

    fn cond(&self, cc: ConditionCode) -> bool {
        let f = |x| self.flag(x);
        match cc {
            ConditionCode::o => f(OF),
            ConditionCode::no => !f(OF),
            ConditionCode::b => f(CF),
            ConditionCode::ae => !f(CF),
            ConditionCode::e => f(ZF),
            ConditionCode::ne => !f(ZF),
            ConditionCode::be => f(CF) || f(ZF),
            ConditionCode::a => !f(CF) && !f(ZF),
            ConditionCode::s => f(SF),
            ConditionCode::ns => !f(SF),
            ConditionCode::p => f(PF),
            ConditionCode::np => !f(PF),
            ConditionCode::l => f(SF) != f(OF),
            ConditionCode::ge => f(SF) == f(OF),
            ConditionCode::le => f(ZF) || f(SF) != f(OF),
            ConditionCode::g => !f(ZF) && f(SF) == f(OF),
            ConditionCode::None => true,
        }
    }

    /// Shifts and rotates: `res`, with CF and OF as the hardware sets them.
    fn shift(&mut self, m: Mnemonic, a: u32, count: u32, size: usize) -> u32 {
        let bits = 8 * size as u32;
        let count = count & 0x1F;
        if count == 0 {
            return a & mask(size);
        }
        let a = a & mask(size);
        let msb = |v: u32| v & sign(size) != 0;
        match m {
            Mnemonic::Shl | Mnemonic::Sal => {
                let res = ((u64::from(a) << count) as u32) & mask(size);
                self.set_flag(CF, count <= bits && (u64::from(a) >> (bits - count)) & 1 != 0);
                self.szp(res, size);
                self.set_flag(OF, msb(res) != self.flag(CF));
                res
            }
            Mnemonic::Shr => {
                let res = (u64::from(a) >> count) as u32;
                self.set_flag(CF, (u64::from(a) >> (count - 1)) & 1 != 0);
                self.szp(res, size);
                self.set_flag(OF, msb(a));
                res
            }
            Mnemonic::Sar => {
                let s = sext(a, size);
                let res = ((s >> count.min(63)) as u32) & mask(size);
                self.set_flag(CF, (s >> (count - 1).min(63)) & 1 != 0);
                self.szp(res, size);
                self.set_flag(OF, false);
                res
            }
            Mnemonic::Rol | Mnemonic::Ror => {
                let c = count % bits;
                let res = if c == 0 {
                    a
                } else if m == Mnemonic::Rol {
                    ((a << c) | (a >> (bits - c))) & mask(size)
                } else {
                    ((a >> c) | (a << (bits - c))) & mask(size)
                };
                if m == Mnemonic::Rol {
                    self.set_flag(CF, res & 1 != 0);
                    self.set_flag(OF, msb(res) != (res & 1 != 0));
                } else {
                    self.set_flag(CF, msb(res));
                    self.set_flag(OF, msb(res) != (res & (sign(size) >> 1) != 0));
                }
                res
            }
            _ => {
                // Rcl, Rcr: one bit at a time through CF.
                let mut v = a;
                let mut cf = self.flag(CF);
                for _ in 0..count % (bits + 1) {
                    if m == Mnemonic::Rcl {
                        let out = msb(v);
                        v = ((v << 1) | u32::from(cf)) & mask(size);
                        cf = out;
                    } else {
                        let out = v & 1 != 0;
                        v = (v >> 1) | if cf { sign(size) } else { 0 };
                        cf = out;
                    }
                }
                self.set_flag(CF, cf);
                let of = if m == Mnemonic::Rcl { msb(v) != cf } else { msb(v) != (v & (sign(size) >> 1) != 0) };
                self.set_flag(OF, of);
                v
            }
        }
    }

    // ---- one instruction ----

    /// Decode and execute the instruction at `eip`. On `Err`, `eip` still
    /// points at it.
    pub(crate) fn step(&mut self, mem: &mut Memory) -> Step {
        let slot = (self.eip as usize ^ (self.eip as usize >> 12)) % CACHE_SLOTS;
        let (at, generation, cached) = &self.cache[slot];
        let i = if *at == self.eip && *generation == mem.generation {
            *cached
        } else {
            let mut buf = [0u8; 15];
            let n = mem.fetch(self.eip, &mut buf)?;
            let mut i = Instruction::default();
            Decoder::with_ip(32, &buf[..n], u64::from(self.eip), DecoderOptions::NONE).decode_out(&mut i);
            if i.is_invalid() {
                // Cut short by the end of a region: the next byte faults.
                if n < 15 {
                    return Err(Exit::Exception { code: ACCESS_VIOLATION, address: self.eip.wrapping_add(n as u32) });
                }
                return Err(Exit::Exception { code: ILLEGAL, address: self.eip });
            }
            self.cache[slot] = (self.eip, mem.generation, i);
            i
        };
        let trap = self.flag(TF);
        self.exec(mem, &i)?;
        if trap {
            self.flags &= !TF;
            return Err(Exit::Exception { code: SINGLE_STEP, address: self.eip });
        }
        Ok(())
    }

    fn exec(&mut self, mem: &mut Memory, i: &Instruction) -> Step {
        let next = i.next_ip32();
        let m = i.mnemonic();
        let size = Self::size(i, 0);
        match m {
            Mnemonic::Nop | Mnemonic::Wait | Mnemonic::Pause | Mnemonic::Lfence | Mnemonic::Mfence | Mnemonic::Sfence => {}
            Mnemonic::Prefetchnta | Mnemonic::Prefetcht0 | Mnemonic::Prefetcht1 | Mnemonic::Prefetcht2 => {}
            Mnemonic::Mov => {
                let v = self.read(mem, i, 1)?;
                self.write(mem, i, 0, v)?;
            }
            Mnemonic::Movzx => {
                let v = self.read(mem, i, 1)?;
                self.write(mem, i, 0, v)?;
            }
            Mnemonic::Movsx => {
                let v = self.read(mem, i, 1)?;
                self.write(mem, i, 0, sext(v, Self::size(i, 1)) as u32)?;
            }
            Mnemonic::Lea => {
                let mut a = self.ea(i);
                if i.memory_segment() == Register::FS {
                    a = a.wrapping_sub(self.fs_base);
                }
                self.write(mem, i, 0, a)?;
            }
            Mnemonic::Xchg => {
                let (a, b) = (self.read(mem, i, 0)?, self.read(mem, i, 1)?);
                self.write(mem, i, 0, b)?;
                self.write(mem, i, 1, a)?;
            }
            Mnemonic::Add | Mnemonic::Adc | Mnemonic::Sub | Mnemonic::Sbb | Mnemonic::Cmp => {
                let (a, b) = (self.read(mem, i, 0)?, self.read(mem, i, 1)?);
                let c = u32::from(self.flag(CF));
                let res = match m {
                    Mnemonic::Add => self.add(a, b, 0, size),
                    Mnemonic::Adc => self.add(a, b, c, size),
                    Mnemonic::Sbb => self.sub(a, b, c, size),
                    _ => self.sub(a, b, 0, size),
                };
                if m != Mnemonic::Cmp {
                    self.write(mem, i, 0, res)?;
                }
            }
            Mnemonic::And | Mnemonic::Or | Mnemonic::Xor | Mnemonic::Test => {
                let (a, b) = (self.read(mem, i, 0)?, self.read(mem, i, 1)?);
                let res = match m {
                    Mnemonic::Or => a | b,
                    Mnemonic::Xor => a ^ b,
                    _ => a & b,
                };
                let res = self.logic(res, size);
                if m != Mnemonic::Test {
                    self.write(mem, i, 0, res)?;
                }
            }
            Mnemonic::Inc | Mnemonic::Dec => {
                let a = self.read(mem, i, 0)?;
                let cf = self.flag(CF);
                let res = if m == Mnemonic::Inc { self.add(a, 1, 0, size) } else { self.sub(a, 1, 0, size) };
                self.set_flag(CF, cf);
                self.write(mem, i, 0, res)?;
            }
            Mnemonic::Neg => {
                let a = self.read(mem, i, 0)?;
                let res = self.sub(0, a, 0, size);
                self.write(mem, i, 0, res)?;
            }
            Mnemonic::Not => {
                let a = self.read(mem, i, 0)?;
                self.write(mem, i, 0, !a)?;
            }
            Mnemonic::Shl
            | Mnemonic::Sal
            | Mnemonic::Shr
            | Mnemonic::Sar
            | Mnemonic::Rol
            | Mnemonic::Ror
            | Mnemonic::Rcl
            | Mnemonic::Rcr => {
                let a = self.read(mem, i, 0)?;
                let count = if i.op_count() > 1 { self.read(mem, i, 1)? } else { 1 };
                let res = self.shift(m, a, count, size);
                self.write(mem, i, 0, res)?;
            }
            Mnemonic::Shld | Mnemonic::Shrd => {
                let (a, b, count) = (self.read(mem, i, 0)?, self.read(mem, i, 1)?, self.read(mem, i, 2)? & 0x1F);
                if count != 0 {
                    let bits = 8 * size as u32;
                    let res = if m == Mnemonic::Shld {
                        let wide = (u64::from(a) << bits) | u64::from(b & mask(size));
                        self.set_flag(CF, (u64::from(a) >> (bits - count.min(bits))) & 1 != 0);
                        ((wide << count) >> bits) as u32 & mask(size)
                    } else {
                        let wide = (u64::from(b & mask(size)) << bits) | u64::from(a & mask(size));
                        self.set_flag(CF, (u64::from(a) >> (count - 1)) & 1 != 0);
                        (wide >> count) as u32 & mask(size)
                    };
                    self.szp(res, size);
                    self.write(mem, i, 0, res)?;
                }
            }
            Mnemonic::Mul | Mnemonic::Imul if i.op_count() == 1 => {
                let b = self.read(mem, i, 0)?;
                let a = self.r[EAX] & mask(size);
                let bits = 8 * size as u32;
                let (lo, hi, overflow) = if m == Mnemonic::Mul {
                    let p = u64::from(a) * u64::from(b & mask(size));
                    (p as u32 & mask(size), (p >> bits) as u32 & mask(size), (p >> bits) != 0)
                } else {
                    let p = sext(a, size) * sext(b, size);
                    let lo = p as u32 & mask(size);
                    (lo, (p >> bits) as u32 & mask(size), p != sext(lo, size))
                };
                self.set_pair(size, lo, hi);
                self.set_flag(CF, overflow);
                self.set_flag(OF, overflow);
            }
            Mnemonic::Imul => {
                let (a, b) = if i.op_count() == 3 {
                    (self.read(mem, i, 1)?, self.read(mem, i, 2)?)
                } else {
                    (self.read(mem, i, 0)?, self.read(mem, i, 1)?)
                };
                let p = sext(a, size) * sext(b, size);
                let lo = p as u32 & mask(size);
                let overflow = p != sext(lo, size);
                self.set_flag(CF, overflow);
                self.set_flag(OF, overflow);
                self.write(mem, i, 0, lo)?;
            }
            Mnemonic::Div | Mnemonic::Idiv => self.divide(mem, i, size)?,
            Mnemonic::Cbw => self.r[EAX] = (self.r[EAX] & 0xFFFF_0000) | (sext(self.r[EAX], 1) as u32 & 0xFFFF),
            Mnemonic::Cwde => self.r[EAX] = sext(self.r[EAX], 2) as u32,
            Mnemonic::Cwd => {
                let hi = if self.r[EAX] & 0x8000 != 0 { 0xFFFF } else { 0 };
                self.r[EDX] = (self.r[EDX] & 0xFFFF_0000) | hi;
            }
            Mnemonic::Cdq => self.r[EDX] = if self.r[EAX] & 0x8000_0000 != 0 { u32::MAX } else { 0 },
            Mnemonic::Bswap => {
                let a = self.read(mem, i, 0)?;
                self.write(mem, i, 0, a.swap_bytes())?;
            }
            Mnemonic::Xadd => {
                let (a, b) = (self.read(mem, i, 0)?, self.read(mem, i, 1)?);
                let res = self.add(a, b, 0, size);
                self.write(mem, i, 1, a)?;
                self.write(mem, i, 0, res)?;
            }
            Mnemonic::Cmpxchg => {
                let a = self.read(mem, i, 0)?;
                let acc = self.r[EAX] & mask(size);
                self.sub(acc, a, 0, size);
                if self.flag(ZF) {
                    let v = self.read(mem, i, 1)?;
                    self.write(mem, i, 0, v)?;
                } else {
                    self.r[EAX] = (self.r[EAX] & !mask(size)) | (a & mask(size));
                }
            }
            Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc => {
                let a = self.read(mem, i, 0)?;
                let bit = self.read(mem, i, 1)? % (8 * size.clamp(1, 4) as u32);
                self.set_flag(CF, a & (1 << bit) != 0);
                let res = match m {
                    Mnemonic::Bts => a | (1 << bit),
                    Mnemonic::Btr => a & !(1 << bit),
                    Mnemonic::Btc => a ^ (1 << bit),
                    _ => a,
                };
                if m != Mnemonic::Bt {
                    self.write(mem, i, 0, res)?;
                }
            }
            Mnemonic::Bsf | Mnemonic::Bsr => {
                let v = self.read(mem, i, 1)? & mask(size);
                self.set_flag(ZF, v == 0);
                if v != 0 {
                    let bit = if m == Mnemonic::Bsf { v.trailing_zeros() } else { 31 - v.leading_zeros() };
                    self.write(mem, i, 0, bit)?;
                }
            }
            Mnemonic::Setb
            | Mnemonic::Setae
            | Mnemonic::Sete
            | Mnemonic::Setne
            | Mnemonic::Setbe
            | Mnemonic::Seta
            | Mnemonic::Sets
            | Mnemonic::Setns
            | Mnemonic::Setp
            | Mnemonic::Setnp
            | Mnemonic::Setl
            | Mnemonic::Setge
            | Mnemonic::Setle
            | Mnemonic::Setg
            | Mnemonic::Seto
            | Mnemonic::Setno => {
                let v = u32::from(self.cond(i.condition_code()));
                self.write(mem, i, 0, v)?;
            }
            Mnemonic::Cmovb
            | Mnemonic::Cmovae
            | Mnemonic::Cmove
            | Mnemonic::Cmovne
            | Mnemonic::Cmovbe
            | Mnemonic::Cmova
            | Mnemonic::Cmovs
            | Mnemonic::Cmovns
            | Mnemonic::Cmovp
            | Mnemonic::Cmovnp
            | Mnemonic::Cmovl
            | Mnemonic::Cmovge
            | Mnemonic::Cmovle
            | Mnemonic::Cmovg
            | Mnemonic::Cmovo
            | Mnemonic::Cmovno => {
                let v = self.read(mem, i, 1)?;
                if self.cond(i.condition_code()) {
                    self.write(mem, i, 0, v)?;
                }
            }
            Mnemonic::Clc => self.set_flag(CF, false),
            Mnemonic::Stc => self.set_flag(CF, true),
            Mnemonic::Cmc => self.flags ^= CF,
            Mnemonic::Cld => self.set_flag(DF, false),
            Mnemonic::Std => self.set_flag(DF, true),
            Mnemonic::Lahf => {
                let v = (self.flags & (SF | ZF | AF | PF | CF)) | 2;
                self.set_reg(Register::AH, v);
            }
            Mnemonic::Sahf => {
                let ah = (self.r[EAX] >> 8) & (SF | ZF | AF | PF | CF);
                self.flags = (self.flags & !(SF | ZF | AF | PF | CF)) | ah;
            }
            Mnemonic::Xlatb => {
                let a = self.r[EBX].wrapping_add(self.r[EAX] & 0xFF);
                let v = Self::read_mem(mem, a, 1)?;
                self.set_reg(Register::AL, v);
            }
            Mnemonic::Push => {
                let v = self.read(mem, i, 0)?;
                let width = (-i.stack_pointer_increment()) as u32;
                let sp = self.r[ESP].wrapping_sub(width);
                Self::write_mem(mem, sp, width as usize, v)?;
                self.r[ESP] = sp;
            }
            Mnemonic::Pop => {
                let width = i.stack_pointer_increment() as u32;
                let v = Self::read_mem(mem, self.r[ESP], width as usize)?;
                let old = self.r[ESP];
                self.r[ESP] = old.wrapping_add(width);
                if let Err(e) = self.write(mem, i, 0, v) {
                    self.r[ESP] = old;
                    return Err(e);
                }
            }
            Mnemonic::Pushad => {
                let sp = self.r[ESP];
                for k in [EAX, ECX, EDX, EBX] {
                    let v = self.r[k];
                    self.push(mem, v)?;
                }
                self.push(mem, sp)?;
                for k in [EBP, ESI, EDI] {
                    let v = self.r[k];
                    self.push(mem, v)?;
                }
            }
            Mnemonic::Popad => {
                for k in [EDI, ESI, EBP] {
                    self.r[k] = self.pop(mem)?;
                }
                self.pop(mem)?;
                for k in [EBX, EDX, ECX, EAX] {
                    self.r[k] = self.pop(mem)?;
                }
            }
            Mnemonic::Pushfd | Mnemonic::Pushf => {
                let v = self.flags & !TF;
                self.push(mem, v)?;
            }
            Mnemonic::Popfd | Mnemonic::Popf => {
                let v = self.pop(mem)?;
                self.flags = (self.flags & !(ARITH | DF | TF)) | (v & (ARITH | DF | TF)) | 2;
            }
            Mnemonic::Leave => {
                self.r[ESP] = self.r[EBP];
                self.r[EBP] = self.pop(mem)?;
            }
            Mnemonic::Enter => {
                let frame = i.immediate(0) as u32;
                let bp = self.r[EBP];
                self.push(mem, bp)?;
                self.r[EBP] = self.r[ESP];
                self.r[ESP] = self.r[ESP].wrapping_sub(frame);
            }
            Mnemonic::Jmp => {
                if !matches!(i.op0_kind(), OpKind::NearBranch32 | OpKind::Register | OpKind::Memory) {
                    return Err(unsupported(i));
                }
                self.eip = self.read(mem, i, 0)?;
                return Ok(());
            }
            Mnemonic::Call => {
                if !matches!(i.op0_kind(), OpKind::NearBranch32 | OpKind::Register | OpKind::Memory) {
                    return Err(unsupported(i));
                }
                let target = self.read(mem, i, 0)?;
                self.push(mem, next)?;
                self.eip = target;
                return Ok(());
            }
            Mnemonic::Ret => {
                let to = self.pop(mem)?;
                if i.op_count() == 1 {
                    self.r[ESP] = self.r[ESP].wrapping_add(i.immediate(0) as u32);
                }
                self.eip = to;
                return Ok(());
            }
            Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne => {
                self.r[ECX] = self.r[ECX].wrapping_sub(1);
                let go = self.r[ECX] != 0
                    && match m {
                        Mnemonic::Loope => self.flag(ZF),
                        Mnemonic::Loopne => !self.flag(ZF),
                        _ => true,
                    };
                self.eip = if go { i.near_branch32() } else { next };
                return Ok(());
            }
            Mnemonic::Jecxz => {
                self.eip = if self.r[ECX] == 0 { i.near_branch32() } else { next };
                return Ok(());
            }
            _ if i.is_jcc_short_or_near() => {
                self.eip = if self.cond(i.condition_code()) { i.near_branch32() } else { next };
                return Ok(());
            }
            _ if i.is_string_instruction() => self.string(mem, i)?,
            Mnemonic::Int3 => return Err(Exit::Exception { code: BREAKPOINT, address: self.eip }),
            Mnemonic::Int | Mnemonic::Int1 | Mnemonic::Into => {
                return Err(Exit::Exception { code: ACCESS_VIOLATION, address: u32::MAX });
            }
            Mnemonic::Ud2 | Mnemonic::Ud0 | Mnemonic::Ud1 => return Err(Exit::Exception { code: ILLEGAL, address: self.eip }),
            Mnemonic::Hlt | Mnemonic::Cli | Mnemonic::Sti | Mnemonic::In | Mnemonic::Out => {
                return Err(Exit::Exception { code: PRIVILEGED, address: self.eip });
            }
            Mnemonic::Rdtsc => {
                // Always later, never by much: timing checks pass.
                self.tsc += 0x2000;
                self.r[EAX] = self.tsc as u32;
                self.r[EDX] = (self.tsc >> 32) as u32;
            }
            Mnemonic::Cpuid => {
                // A plain Pentium-class answer.
                let leaf = self.r[EAX];
                self.r[EAX] = if leaf == 0 { 1 } else { 0x0000_0633 };
                self.r[EBX] = if leaf == 0 { 0x756E_6547 } else { 0 };
                self.r[ECX] = if leaf == 0 { 0x6C65_746E } else { 0 };
                self.r[EDX] = if leaf == 0 { 0x4965_6E69 } else { 0x0080_8111 };
            }
            Mnemonic::Fnstenv | Mnemonic::Fstenv => {
                let a = self.ea(i);
                let mut env = [0u8; 28];
                env[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
                env[8..10].copy_from_slice(&0xFFFFu16.to_le_bytes());
                env[12..16].copy_from_slice(&self.fpu_ip.to_le_bytes());
                mem.write(a, &env)?;
            }
            _ if is_x87(m) => {
                if !matches!(m, Mnemonic::Fninit | Mnemonic::Finit | Mnemonic::Fnclex | Mnemonic::Fclex | Mnemonic::Fldcw) {
                    self.fpu_ip = self.eip;
                }
                if matches!(m, Mnemonic::Fnstsw | Mnemonic::Fstsw) && i.op0_kind() == OpKind::Register {
                    self.set_reg(Register::AX, 0);
                } else if matches!(m, Mnemonic::Fnstsw | Mnemonic::Fstsw | Mnemonic::Fnstcw | Mnemonic::Fstcw)
                    && i.op0_kind() == OpKind::Memory
                {
                    Self::write_mem(mem, self.ea(i), 2, 0x037F)?;
                }
            }
            _ => return Err(unsupported(i)),
        }
        self.eip = next;
        Ok(())
    }

    fn divide(&mut self, mem: &mut Memory, i: &Instruction, size: usize) -> Step {
        let d = self.read(mem, i, 0)? & mask(size);
        if d == 0 {
            return Err(Exit::Exception { code: DIVIDE_BY_ZERO, address: self.eip });
        }
        let bits = 8 * size as u32;
        let dividend: u64 = match size {
            1 => u64::from(self.r[EAX] & 0xFFFF),
            2 => (u64::from(self.r[EDX] & 0xFFFF) << 16) | u64::from(self.r[EAX] & 0xFFFF),
            _ => (u64::from(self.r[EDX]) << 32) | u64::from(self.r[EAX]),
        };
        let overflow = Exit::Exception { code: INTEGER_OVERFLOW, address: self.eip };
        let (q, r) = if i.mnemonic() == Mnemonic::Div {
            let q = dividend / u64::from(d);
            if q > u64::from(mask(size)) {
                return Err(overflow);
            }
            (q as u32, (dividend % u64::from(d)) as u32)
        } else {
            let n = match size {
                1 => i64::from(dividend as u16 as i16),
                2 => i64::from(dividend as u32 as i32),
                _ => dividend as i64,
            };
            let dv = sext(d, size);
            let q = n.checked_div(dv).ok_or(overflow)?;
            let (lo, hi) = (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1);
            if q < lo || q > hi {
                return Err(overflow);
            }
            (q as u32 & mask(size), (n % dv) as u32 & mask(size))
        };
        self.set_pair(size, q, r);
        Ok(())
    }

    /// The accumulator pair of a multiply or divide: AH:AL, DX:AX or
    /// EDX:EAX by operand size.
    fn set_pair(&mut self, size: usize, low: u32, high: u32) {
        match size {
            1 => self.r[EAX] = (self.r[EAX] & 0xFFFF_0000) | (high << 8) | low,
            2 => {
                self.r[EAX] = (self.r[EAX] & 0xFFFF_0000) | low;
                self.r[EDX] = (self.r[EDX] & 0xFFFF_0000) | high;
            }
            _ => {
                self.r[EAX] = low;
                self.r[EDX] = high;
            }
        }
    }

    /// movs, stos, lods, scas, cmps, with `rep`/`repe`/`repne`.
    fn string(&mut self, mem: &mut Memory, i: &Instruction) -> Step {
        let m = i.mnemonic();
        let size = match m {
            Mnemonic::Movsb | Mnemonic::Stosb | Mnemonic::Lodsb | Mnemonic::Scasb | Mnemonic::Cmpsb => 1,
            Mnemonic::Movsw | Mnemonic::Stosw | Mnemonic::Lodsw | Mnemonic::Scasw | Mnemonic::Cmpsw => 2,
            Mnemonic::Movsd | Mnemonic::Stosd | Mnemonic::Lodsd | Mnemonic::Scasd | Mnemonic::Cmpsd => 4,
            Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd | Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => {
                return Err(Exit::Exception { code: PRIVILEGED, address: self.eip });
            }
            _ => return Err(unsupported(i)),
        };
        let step = if self.flag(DF) { (size as u32).wrapping_neg() } else { size as u32 };
        let repeated = i.has_rep_prefix() || i.has_repe_prefix() || i.has_repne_prefix();
        let src_base = if i.memory_segment() == Register::FS { self.fs_base } else { 0 };
        loop {
            if repeated && self.r[ECX] == 0 {
                break;
            }
            let (si, di) = (self.r[ESI], self.r[EDI]);
            let compares = match m {
                Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd => {
                    let v = Self::read_mem(mem, src_base.wrapping_add(si), size)?;
                    Self::write_mem(mem, di, size, v)?;
                    self.r[ESI] = si.wrapping_add(step);
                    self.r[EDI] = di.wrapping_add(step);
                    false
                }
                Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd => {
                    Self::write_mem(mem, di, size, self.r[EAX])?;
                    self.r[EDI] = di.wrapping_add(step);
                    false
                }
                Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd => {
                    let v = Self::read_mem(mem, src_base.wrapping_add(si), size)?;
                    self.r[EAX] = (self.r[EAX] & !mask(size)) | v;
                    self.r[ESI] = si.wrapping_add(step);
                    false
                }
                Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd => {
                    let v = Self::read_mem(mem, di, size)?;
                    self.sub(self.r[EAX], v, 0, size);
                    self.r[EDI] = di.wrapping_add(step);
                    true
                }
                _ => {
                    let (a, b) = (Self::read_mem(mem, src_base.wrapping_add(si), size)?, Self::read_mem(mem, di, size)?);
                    self.sub(a, b, 0, size);
                    self.r[ESI] = si.wrapping_add(step);
                    self.r[EDI] = di.wrapping_add(step);
                    true
                }
            };
            if !repeated {
                break;
            }
            self.r[ECX] = self.r[ECX].wrapping_sub(1);
            self.extra += 1;
            if compares && ((i.has_repe_prefix() && !self.flag(ZF)) || (i.has_repne_prefix() && self.flag(ZF))) {
                break;
            }
        }
        Ok(())
    }
}

fn is_x87(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Fld
            | M::Fld1
            | M::Fldz
            | M::Fldpi
            | M::Fldl2e
            | M::Fldl2t
            | M::Fldlg2
            | M::Fldln2
            | M::Fst
            | M::Fstp
            | M::Fild
            | M::Fist
            | M::Fistp
            | M::Fisttp
            | M::Fxch
            | M::Fnop
            | M::Fninit
            | M::Finit
            | M::Fnclex
            | M::Fclex
            | M::Fldcw
            | M::Fnstcw
            | M::Fstcw
            | M::Fnstsw
            | M::Fstsw
            | M::Fadd
            | M::Faddp
            | M::Fiadd
            | M::Fsub
            | M::Fsubp
            | M::Fsubr
            | M::Fsubrp
            | M::Fmul
            | M::Fmulp
            | M::Fimul
            | M::Fdiv
            | M::Fdivp
            | M::Fdivr
            | M::Fdivrp
            | M::Fchs
            | M::Fabs
            | M::Fcom
            | M::Fcomp
            | M::Fcompp
            | M::Fucom
            | M::Fucomp
            | M::Fucompp
            | M::Ftst
            | M::Fxam
            | M::Ffree
            | M::Fincstp
            | M::Fdecstp
            | M::Frndint
            | M::Fsqrt
            | M::Fscale
            | M::Fsin
            | M::Fcos
            | M::Fptan
            | M::Fpatan
            | M::F2xm1
            | M::Fyl2x
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `code` at 0x1000 with a stack until it runs off its end; the
    /// CPU afterwards, or the exit that stopped it.
    fn run(code: &[u8], setup: impl FnOnce(&mut Cpu)) -> Result<(Cpu, Memory), Exit> {
        let mut mem = Memory::new(1 << 20);
        assert!(mem.map(0x1000, 0x1000) && mem.map(0x10_0000, 0x1000) && mem.map(0x20_0000, 0x1000));
        mem.load(0x1000, code).unwrap();
        let mut cpu = Cpu::new();
        cpu.eip = 0x1000;
        cpu.r[ESP] = 0x10_0800;
        setup(&mut cpu);
        let end = 0x1000 + code.len() as u32;
        for _ in 0..10_000 {
            if cpu.eip == end {
                return Ok((cpu, mem));
            }
            cpu.step(&mut mem)?;
        }
        panic!("did not finish");
    }

    fn flags(c: &Cpu) -> [bool; 4] {
        [c.flags & CF != 0, c.flags & ZF != 0, c.flags & SF != 0, c.flags & OF != 0]
    }

    #[test]
    fn arithmetic_sets_the_flags_the_hardware_does() {
        // mov eax, -1; add eax, 1
        let (c, _) = run(&[0xB8, 0xFF, 0xFF, 0xFF, 0xFF, 0x83, 0xC0, 0x01], |_| {}).unwrap();
        assert_eq!((c.r[EAX], flags(&c)), (0, [true, true, false, false]));
        // mov al, 0x7F; add al, 1 (signed overflow; the rest of eax kept)
        let (c, _) = run(&[0xB0, 0x7F, 0x04, 0x01], |c| c.r[EAX] = 0x1234_5600).unwrap();
        assert_eq!((c.r[EAX], flags(&c)), (0x1234_5680, [false, false, true, true]));
        // stc; mov ecx, 5; sbb ecx, 5  -> -1 with borrow
        let (c, _) = run(&[0xF9, 0xB9, 5, 0, 0, 0, 0x83, 0xD9, 0x05], |_| {}).unwrap();
        assert_eq!((c.r[ECX], flags(&c)), (u32::MAX, [true, false, true, false]));
        // dec keeps CF: stc; mov edx, 1; dec edx
        let (c, _) = run(&[0xF9, 0xBA, 1, 0, 0, 0, 0x4A], |_| {}).unwrap();
        assert_eq!((c.r[EDX], flags(&c)), (0, [true, true, false, false]));
        // neg 0 clears CF, neg 1 sets it
        let (c, _) = run(&[0xF7, 0xD8], |c| c.r[EAX] = 1).unwrap();
        assert_eq!((c.r[EAX], flags(&c)[0]), (u32::MAX, true));
    }

    #[test]
    fn shifts_and_rotates_carry_out_the_right_bit() {
        // rol eax, 1 on 0x80000001 -> 3, CF=1
        let (c, _) = run(&[0xD1, 0xC0], |c| c.r[EAX] = 0x8000_0001).unwrap();
        assert_eq!((c.r[EAX], c.flags & CF), (3, CF));
        // rcr eax, 1 with CF set -> top bit from CF, CF from bit 0
        let (c, _) = run(&[0xF9, 0xD1, 0xD8], |c| c.r[EAX] = 2).unwrap();
        assert_eq!((c.r[EAX], c.flags & CF), (0x8000_0001, 0));
        // shl ebp, 1 (bit 31 out) as NRV-style bit readers use it
        let (c, _) = run(&[0xD1, 0xE5], |c| c.r[EBP] = 0x8000_0000).unwrap();
        assert_eq!((c.r[EBP], flags(&c)[..2].to_vec()), (0, vec![true, true]));
        // shld eax, ebp, cl (cl = 4)
        let (c, _) = run(&[0x0F, 0xA5, 0xE8], |c| {
            c.r[EAX] = 0x0000_0001;
            c.r[EBP] = 0xA000_0000;
            c.r[ECX] = 4;
        })
        .unwrap();
        assert_eq!(c.r[EAX], 0x1A);
        // sar keeps the sign
        let (c, _) = run(&[0xC1, 0xF8, 0x04], |c| c.r[EAX] = 0x8000_0000).unwrap();
        assert_eq!(c.r[EAX], 0xF800_0000);
    }

    #[test]
    fn multiply_divide_and_their_exceptions() {
        // mul ecx: 0x10000 * 0x10000 -> edx:eax = 1:0, CF=OF=1
        let (c, _) = run(&[0xF7, 0xE1], |c| {
            c.r[EAX] = 0x10000;
            c.r[ECX] = 0x10000;
        })
        .unwrap();
        assert_eq!((c.r[EDX], c.r[EAX], c.flags & (CF | OF)), (1, 0, CF | OF));
        // idiv ecx: -7 / 2 -> -3 rem -1
        let (c, _) = run(&[0x99, 0xF7, 0xF9], |c| {
            c.r[EAX] = (-7i32) as u32;
            c.r[ECX] = 2;
        })
        .unwrap();
        assert_eq!((c.r[EAX] as i32, c.r[EDX] as i32), (-3, -1));
        // div by zero raises the Windows exception at the instruction
        let e = run(&[0x90, 0xF7, 0xF1], |_| {}).err().unwrap();
        assert!(matches!(e, Exit::Exception { code: DIVIDE_BY_ZERO, address: 0x1001 }), "{e:?}");
        // imul eax, ecx, 3
        let (c, _) = run(&[0x6B, 0xC1, 0x03], |c| c.r[ECX] = 5).unwrap();
        assert_eq!(c.r[EAX], 15);
    }

    #[test]
    fn strings_stack_and_faults() {
        // std; rep movsb copies backwards
        let (_, mut mem) = run(&[0xFD, 0xF3, 0xA4, 0xFC], |c| {
            c.r[ESI] = 0x1000 + 3;
            c.r[EDI] = 0x20_0003;
            c.r[ECX] = 4;
        })
        .unwrap();
        let mut out = [0u8; 4];
        mem.read(0x20_0000, &mut out).unwrap();
        assert_eq!(out, [0xFD, 0xF3, 0xA4, 0xFC]);
        // repne scasb finds a byte
        let (c, _) = run(&[0xF2, 0xAE], |c| {
            c.r[EAX] = 0xAE;
            c.r[EDI] = 0x1000;
            c.r[ECX] = 100;
        })
        .unwrap();
        assert_eq!((c.r[EDI], c.r[ECX], c.flags & ZF), (0x1002, 98, ZF));
        // pushad; popad round trip, esp restored
        let (c, _) = run(&[0x60, 0x31, 0xC0, 0x61], |c| c.r[EAX] = 77).unwrap();
        assert_eq!((c.r[EAX], c.r[ESP]), (77, 0x10_0800));
        // call/ret
        let (c, _) = run(&[0xE8, 0x02, 0, 0, 0, 0xEB, 0x02, 0x40, 0xC3], |_| {}).unwrap();
        assert_eq!((c.r[EAX], c.r[ESP]), (1, 0x10_0800));
        // an unmapped read faults with its address
        let e = run(&[0xA1, 0x44, 0x33, 0x22, 0x11], |_| {}).err().unwrap();
        assert!(matches!(e, Exit::Exception { code: ACCESS_VIOLATION, address: 0x1122_3344 }), "{e:?}");
        // SSE is not emulated; I/O is privileged, as on Windows
        assert!(matches!(run(&[0x0F, 0x57, 0xC0], |_| {}).err().unwrap(), Exit::Unsupported(_)));
        for io in [&[0xE4, 0x60][..], &[0x6E]] {
            assert!(matches!(run(io, |_| {}).err().unwrap(), Exit::Exception { code: PRIVILEGED, .. }));
        }
    }
}

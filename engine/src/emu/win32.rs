//! Just enough of a Win32 process for an unpacking stub: the image mapped
//! at its base with its imports bound, a stack, the TEB and PEB with a
//! loader list naming ntdll and kernel32, fake system DLLs whose export
//! tables point into "thunk" pages, the few API functions stubs call before
//! they reach the program (module and procedure lookup, memory allocation
//! and protection, a handful of harmless queries), and structured exception
//! dispatch through the `fs:[0]` chain (stubs raise exceptions on purpose).
//! Calling any other API ends the run: by then a stub has unpacked.

use super::cpu::{Cpu, EAX, ECX, EDX, ESP, Exit};
use super::mem::{Fault, Memory};

pub(crate) const KERNEL32: u32 = 0x7C80_0000;
pub(crate) const NTDLL: u32 = 0x7C90_0000;
/// Other DLLs a stub loads: one 64 KiB slot each from here.
const OTHER_DLLS: u32 = 0x7700_0000;
const MAX_OTHER_DLLS: u32 = 32;
/// Procedure names remembered for dynamic thunks.
const MAX_NAMES: usize = 4096;
const DLL_SIZE: u32 = 0x10000;
/// Functions are 4-byte slots in a DLL's last 32 KiB.
const THUNKS_AT: u32 = 0x8000;
const THUNK: u32 = 4;
const STACK_BASE: u32 = 0x0010_0000;
const STACK_SIZE: u32 = 0x40000;
const TEB: u32 = 0x7FFD_F000;
const PEB: u32 = 0x7FFD_E000;
const LDR: u32 = 0x7FFD_D000;
const PROCESS_PAGES: u32 = 0x7FFD_D000;
/// Where VirtualAlloc places what a stub asks for.
const HEAP_FROM: u32 = 0x0090_0000;

/// The kernel32 functions this process implements: name and how many
/// argument bytes `stdcall` pops. Position = thunk slot.
const KERNEL32_API: &[(&str, u32)] = &[
    ("ExitThread", 4),
    ("__seh_return", 0),
    ("__seh_last", 0),
    ("LoadLibraryA", 4),
    ("LoadLibraryW", 4),
    ("LoadLibraryExA", 12),
    ("GetModuleHandleA", 4),
    ("GetModuleHandleW", 4),
    ("GetProcAddress", 8),
    ("VirtualAlloc", 16),
    ("VirtualFree", 12),
    ("VirtualProtect", 16),
    ("ExitProcess", 4),
    ("IsDebuggerPresent", 0),
    ("GetTickCount", 0),
    ("GetVersion", 0),
    ("GetLastError", 0),
    ("SetLastError", 4),
    ("FlushInstructionCache", 12),
    ("GetCurrentProcess", 0),
    ("GetCurrentProcessId", 0),
    ("GetCurrentThreadId", 0),
    ("Sleep", 4),
    ("CloseHandle", 4),
    ("GetModuleFileNameA", 12),
    ("GetCommandLineA", 0),
    ("GetStartupInfoA", 4),
    ("SetErrorMode", 4),
    ("GetSystemTimeAsFileTime", 4),
    ("QueryPerformanceCounter", 4),
    ("CreateFileA", 28),
    ("GetFileSize", 8),
    ("ReadFile", 20),
    ("SetFilePointer", 16),
    ("CreateFileMappingA", 24),
    ("MapViewOfFile", 20),
    ("UnmapViewOfFile", 4),
    ("GlobalAlloc", 8),
    ("GlobalFree", 4),
    ("LocalAlloc", 8),
    ("LocalFree", 4),
];

/// The program's own file, as `GetModuleFileNameA` names it: stubs that
/// check their integrity read it back (a copy in the emulator's memory;
/// no host file is opened).
const MODULE_PATH: &[u8] = b"C:\\Program Files\\sample.exe";
const FILE_HANDLE: u32 = 0x44;
const MAPPING_HANDLE: u32 = 0x48;

/// Further kernel32 exports, so that a stub resolving its functions from
/// the export table finds them all; calling one ends the run.
const KERNEL32_NAMED: &[&str] = &[
    "AddAtomA",
    "CompareStringA",
    "CopyFileA",
    "CreateDirectoryA",
    "CreateEventA",
    "CreateFileW",
    "CreateMutexA",
    "CreateProcessA",
    "CreateThread",
    "CreateToolhelp32Snapshot",
    "DeleteCriticalSection",
    "DeleteFileA",
    "DeviceIoControl",
    "EnterCriticalSection",
    "EnumResourceNamesA",
    "FindClose",
    "FindFirstFileA",
    "FindNextFileA",
    "FindResourceA",
    "FlushFileBuffers",
    "FormatMessageA",
    "FreeEnvironmentStringsA",
    "FreeLibrary",
    "FreeResource",
    "GetACP",
    "GetCPInfo",
    "GetCommandLineW",
    "GetComputerNameA",
    "GetConsoleMode",
    "GetCurrentDirectoryA",
    "GetDriveTypeA",
    "GetEnvironmentStrings",
    "GetEnvironmentVariableA",
    "GetExitCodeProcess",
    "GetFileAttributesA",
    "GetFileType",
    "GetFullPathNameA",
    "GetLocalTime",
    "GetLogicalDrives",
    "GetModuleFileNameW",
    "GetOEMCP",
    "GetPrivateProfileStringA",
    "GetProcessHeap",
    "GetShortPathNameA",
    "GetStdHandle",
    "GetStringTypeA",
    "GetStringTypeW",
    "GetSystemDirectoryA",
    "GetSystemInfo",
    "GetSystemTime",
    "GetTempFileNameA",
    "GetTempPathA",
    "GetThreadContext",
    "GetTimeZoneInformation",
    "GetVersionExA",
    "GetVolumeInformationA",
    "GetWindowsDirectoryA",
    "GlobalLock",
    "GlobalUnlock",
    "HeapAlloc",
    "HeapCreate",
    "HeapDestroy",
    "HeapFree",
    "HeapReAlloc",
    "HeapSize",
    "InitializeCriticalSection",
    "InterlockedDecrement",
    "InterlockedExchange",
    "InterlockedIncrement",
    "IsBadCodePtr",
    "IsBadReadPtr",
    "IsBadWritePtr",
    "LCMapStringA",
    "LCMapStringW",
    "LeaveCriticalSection",
    "LoadResource",
    "LockResource",
    "Module32First",
    "Module32Next",
    "MoveFileA",
    "MultiByteToWideChar",
    "OpenFile",
    "OpenMutexA",
    "OpenProcess",
    "OutputDebugStringA",
    "Process32First",
    "Process32Next",
    "RaiseException",
    "ReadProcessMemory",
    "ReleaseMutex",
    "ResumeThread",
    "RtlUnwind",
    "SetConsoleCtrlHandler",
    "SetCurrentDirectoryA",
    "SetEndOfFile",
    "SetEnvironmentVariableA",
    "SetFileAttributesA",
    "SetHandleCount",
    "SetStdHandle",
    "SetThreadContext",
    "SetUnhandledExceptionFilter",
    "SizeofResource",
    "SuspendThread",
    "TerminateProcess",
    "TerminateThread",
    "TlsAlloc",
    "TlsFree",
    "TlsGetValue",
    "TlsSetValue",
    "UnhandledExceptionFilter",
    "VirtualAllocEx",
    "VirtualQuery",
    "WaitForSingleObject",
    "WideCharToMultiByte",
    "WinExec",
    "WriteFile",
    "WriteProcessMemory",
    "lstrcatA",
    "lstrcmpA",
    "lstrcmpiA",
    "lstrcpyA",
    "lstrcpynA",
    "lstrlenA",
];

/// The function a stub called that ends the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Called {
    /// ExitProcess, ExitThread, or returning from the entry point.
    Exit,
    /// A function not implemented here (`dll!name`).
    Other(String),
    /// An exception no handler took.
    Unhandled(u32),
}

/// An exception handler called by the dispatcher, and what it was given.
struct Dispatch {
    frame: u32,
    record: u32,
    context: u32,
}

pub(crate) struct Process {
    /// Names of functions behind dynamic thunks (unknown imports and
    /// `GetProcAddress` results), in slot order per DLL.
    dynamic: Vec<(u32, String)>,
    /// Loaded other DLLs (name, base).
    dlls: Vec<(String, u32)>,
    dispatching: Vec<Dispatch>,
    tick: u32,
    /// The submitted file (what the program's own path reads as) and the
    /// position of its one open handle.
    file: Vec<u8>,
    file_pos: u32,
    last_error: u32,
}

/// The context record layout (x86 `CONTEXT`) offsets used.
mod ctx {
    pub(super) const FLAGS: u32 = 0x00;
    pub(super) const EDI: u32 = 0x9C;
    pub(super) const ESI: u32 = 0xA0;
    pub(super) const EBX: u32 = 0xA4;
    pub(super) const EDX: u32 = 0xA8;
    pub(super) const ECX: u32 = 0xAC;
    pub(super) const EAX: u32 = 0xB0;
    pub(super) const EBP: u32 = 0xB4;
    pub(super) const EIP: u32 = 0xB8;
    pub(super) const CS: u32 = 0xBC;
    pub(super) const EFLAGS: u32 = 0xC0;
    pub(super) const ESP: u32 = 0xC4;
    pub(super) const SS: u32 = 0xC8;
    pub(super) const SIZE: u32 = 0x2CC;
}

fn thunk(dll: u32, slot: u32) -> u32 {
    dll + THUNKS_AT + slot * THUNK
}

fn kernel32_slot(name: &str) -> Option<u32> {
    let names = KERNEL32_API.iter().map(|&(n, _)| n).chain(KERNEL32_NAMED.iter().copied());
    names.into_iter().position(|n| n.eq_ignore_ascii_case(name)).map(|p| p as u32)
}

/// Write a minimal DLL image at `base`: MZ and PE headers, and an export
/// directory whose functions are the thunk slots of `names`.
fn write_dll(mem: &mut Memory, base: u32, dll_name: &str, names: &[&str]) -> Result<(), Fault> {
    let mut h = vec![0u8; 0x1000];
    h[0..2].copy_from_slice(b"MZ");
    h[0x3C..0x40].copy_from_slice(&0x80u32.to_le_bytes());
    h[0x80..0x84].copy_from_slice(b"PE\0\0");
    h[0x84..0x86].copy_from_slice(&0x14Cu16.to_le_bytes());
    h[0x94..0x96].copy_from_slice(&0xE0u16.to_le_bytes());
    h[0x96..0x98].copy_from_slice(&0x2102u16.to_le_bytes());
    let opt = 0x98;
    h[opt..opt + 2].copy_from_slice(&0x10Bu16.to_le_bytes());
    h[opt + 28..opt + 32].copy_from_slice(&base.to_le_bytes());
    h[opt + 32..opt + 36].copy_from_slice(&0x1000u32.to_le_bytes());
    h[opt + 36..opt + 40].copy_from_slice(&0x200u32.to_le_bytes());
    h[opt + 56..opt + 60].copy_from_slice(&DLL_SIZE.to_le_bytes());
    h[opt + 92..opt + 96].copy_from_slice(&16u32.to_le_bytes());
    // Export directory at RVA 0x1000: table, functions, names, ordinals, strings.
    let n = names.len() as u32;
    let dir = 0x1000u32;
    let (funcs, name_ptrs, ords, strings) = (dir + 0x28, dir + 0x28 + 4 * n, dir + 0x28 + 8 * n, dir + 0x28 + 10 * n);
    h[opt + 96..opt + 100].copy_from_slice(&dir.to_le_bytes());
    h[opt + 100..opt + 104].copy_from_slice(&(0x1000 + 10 * n + 0x400).to_le_bytes());
    mem.load(base, &h)?;
    // Names must be sorted for a binary search by the stub.
    let mut sorted: Vec<(usize, &str)> = names.iter().copied().enumerate().collect();
    sorted.sort_by(|a, b| a.1.cmp(b.1));
    let mut table = vec![0u8; 0x28];
    let put = |t: &mut Vec<u8>, o: usize, v: u32| t[o..o + 4].copy_from_slice(&v.to_le_bytes());
    let mut text = Vec::new();
    let name_rva = strings;
    text.extend_from_slice(dll_name.as_bytes());
    text.push(0);
    put(&mut table, 12, name_rva);
    put(&mut table, 16, 1);
    put(&mut table, 20, n);
    put(&mut table, 24, n);
    put(&mut table, 28, funcs);
    put(&mut table, 32, name_ptrs);
    put(&mut table, 36, ords);
    mem.load(base + dir, &table)?;
    for (k, &(slot, name)) in sorted.iter().enumerate() {
        let k = k as u32;
        mem.load(base + funcs + 4 * slot as u32, &(THUNKS_AT + slot as u32 * THUNK).to_le_bytes())?;
        mem.load(base + name_ptrs + 4 * k, &(strings + text.len() as u32).to_le_bytes())?;
        mem.load(base + ords + 2 * k, &(slot as u16).to_le_bytes())?;
        text.extend_from_slice(name.as_bytes());
        text.push(0);
    }
    mem.load(base + strings, &text)?;
    // Every thunk is a `ret`, should anything read it as code.
    mem.load(base + THUNKS_AT, &vec![0xC3; (DLL_SIZE - THUNKS_AT) as usize])?;
    Ok(())
}

impl Process {
    /// Map the stack, process structures and system DLLs; point the CPU at
    /// the entry point of the image already mapped at `base`.
    pub(crate) fn new(cpu: &mut Cpu, mem: &mut Memory, file: &[u8], base: u32, size: u32, entry: u32) -> Result<Self, Fault> {
        let mut p = Self {
            dynamic: Vec::new(),
            dlls: Vec::new(),
            dispatching: Vec::new(),
            tick: 0x0100_0000,
            last_error: 0,
            file: file.to_vec(),
            file_pos: 0,
        };
        let names: Vec<&str> = KERNEL32_API.iter().map(|&(n, _)| n).chain(KERNEL32_NAMED.iter().copied()).collect();
        for (at, name, exports) in [(KERNEL32, "KERNEL32.dll", &names[..]), (NTDLL, "ntdll.dll", &[][..])] {
            if !mem.map(at, DLL_SIZE) {
                return Err(Fault(at));
            }
            write_dll(mem, at, name, exports)?;
        }
        let stack = if mem.map(STACK_BASE, STACK_SIZE) {
            STACK_BASE
        } else {
            let at = mem.find_free(0x0100_0000, STACK_SIZE).ok_or(Fault(0))?;
            if !mem.map(at, STACK_SIZE) {
                return Err(Fault(at));
            }
            at
        };
        let top = stack + STACK_SIZE;
        if !mem.map(PROCESS_PAGES, 0x3000) {
            return Err(Fault(PROCESS_PAGES));
        }
        // The last SEH frame (the system's) at the top of the stack.
        let last_frame = top - 8;
        mem.load(last_frame, &u32::MAX.to_le_bytes())?;
        mem.load(last_frame + 4, &thunk(KERNEL32, 2).to_le_bytes())?;
        // TEB: SEH chain, stack bounds, self, PEB.
        for (o, v) in [(0, last_frame), (4, top), (8, stack), (0x18, TEB), (0x20, 0x100), (0x24, 0x104), (0x30, PEB)] {
            mem.load(TEB + o, &v.to_le_bytes())?;
        }
        // PEB: image base, loader data (BeingDebugged and NtGlobalFlag stay 0).
        mem.load(PEB + 8, &base.to_le_bytes())?;
        mem.load(PEB + 0x0C, &LDR.to_le_bytes())?;
        mem.load(PEB + 0x18, &0x0015_0000u32.to_le_bytes())?;
        p.loader_list(mem, &[(base, entry, size), (NTDLL, 0, DLL_SIZE), (KERNEL32, 0, DLL_SIZE)])?;
        cpu.fs_base = TEB;
        cpu.r[ESP] = top - 0x40;
        // The entry point is called like a DLL's (harmless for a program),
        // returning into kernel32.
        for v in [0, 1, base, thunk(KERNEL32, 0)] {
            cpu.push(mem, v).map_err(|_| Fault(top))?;
        }
        cpu.r[EAX] = entry;
        cpu.r[super::cpu::EBX] = PEB;
        cpu.r[super::cpu::EBP] = top - 0x30;
        cpu.eip = entry;
        Ok(p)
    }

    /// PEB_LDR_DATA with the three module lists, in load order.
    fn loader_list(&mut self, mem: &mut Memory, modules: &[(u32, u32, u32)]) -> Result<(), Fault> {
        let entry = |k: usize| LDR + 0x40 + 0x60 * k as u32;
        let n = modules.len();
        // List heads at LDR+0x0C (load), +0x14 (memory), +0x1C (init).
        for (list, off) in [(0x0C, 0), (0x14, 8), (0x1C, 0x10)] {
            let head = LDR + list;
            let link = |k: usize| if k == n { head } else { entry(k) + off };
            mem.load(head, &link(0).to_le_bytes())?;
            mem.load(head + 4, &link(n - 1).to_le_bytes())?;
            for k in 0..n {
                let prev = if k == 0 { head } else { link(k - 1) };
                mem.load(link(k), &link(k + 1).to_le_bytes())?;
                mem.load(link(k) + 4, &prev.to_le_bytes())?;
            }
        }
        for (k, &(base, ep, size)) in modules.iter().enumerate() {
            let e = entry(k);
            mem.load(e + 0x18, &base.to_le_bytes())?;
            mem.load(e + 0x1C, &ep.to_le_bytes())?;
            mem.load(e + 0x20, &size.to_le_bytes())?;
        }
        mem.load(LDR, &0x28u32.to_le_bytes())?;
        mem.load(LDR + 4, &1u32.to_le_bytes())?;
        Ok(())
    }

    /// Bind the image's imports: each IAT slot gets the address of the
    /// function's thunk (the real one for kernel32 functions implemented
    /// here, a named dynamic one otherwise). At most 4,096 imports.
    pub(crate) fn bind_imports(&mut self, mem: &mut Memory, base: u32, dir_rva: u32) {
        let mut left = 4096u32;
        for d in 0..256u32 {
            let desc = base.wrapping_add(dir_rva).wrapping_add(20 * d);
            let (Ok(lookup), Ok(name_rva), Ok(iat)) =
                (mem.u32(desc), mem.u32(desc.wrapping_add(12)), mem.u32(desc.wrapping_add(16)))
            else {
                return;
            };
            if name_rva == 0 || iat == 0 {
                return;
            }
            let dll = String::from_utf8_lossy(&mem.c_string(base.wrapping_add(name_rva), 256).unwrap_or_default()).into_owned();
            let dll_base = self.module(&dll);
            let table = if lookup != 0 { lookup } else { iat };
            for k in 0..4096 {
                if left == 0 {
                    return;
                }
                let Ok(entry) = mem.u32(base.wrapping_add(table).wrapping_add(4 * k)) else { break };
                if entry == 0 {
                    break;
                }
                let name = if entry & 0x8000_0000 != 0 {
                    format!("#{}", entry & 0xFFFF)
                } else {
                    let raw = mem.c_string(base.wrapping_add(entry).wrapping_add(2), 256).unwrap_or_default();
                    String::from_utf8_lossy(&raw).into_owned()
                };
                let address = self.procedure(dll_base, &dll, &name);
                if mem.put_u32(base.wrapping_add(iat).wrapping_add(4 * k), address).is_err() {
                    break;
                }
                left -= 1;
            }
        }
    }

    /// The base of the DLL called `name`, loading a fake one if needed
    /// (`None` when no slot is left).
    fn module(&mut self, name: &str) -> Option<u32> {
        let lower = name.to_ascii_lowercase();
        let stem = lower.trim_end_matches(".dll");
        if stem == "kernel32" {
            return Some(KERNEL32);
        }
        if stem == "ntdll" {
            return Some(NTDLL);
        }
        if let Some(&(_, b)) = self.dlls.iter().find(|(n, _)| *n == stem) {
            return Some(b);
        }
        let k = self.dlls.len() as u32;
        (k < MAX_OTHER_DLLS).then(|| {
            let b = OTHER_DLLS + k * DLL_SIZE;
            self.dlls.push((stem.to_string(), b));
            b
        })
    }

    fn load_module(&mut self, mem: &mut Memory, name: &str) -> u32 {
        let Some(b) = self.module(name) else { return 0 };
        if mem.region(b).is_none() && (!mem.map(b, DLL_SIZE) || write_dll(mem, b, name, &[]).is_err()) {
            return 0;
        }
        b
    }

    /// The address of `dll!name`: a real thunk for kernel32 functions
    /// implemented here, a new named dynamic thunk otherwise.
    fn procedure(&mut self, dll: Option<u32>, dll_name: &str, name: &str) -> u32 {
        if dll == Some(KERNEL32)
            && let Some(slot) = kernel32_slot(name)
        {
            return thunk(KERNEL32, slot);
        }
        let owner = dll.unwrap_or(OTHER_DLLS);
        let full = format!("{dll_name}!{name}");
        if let Some(&(a, _)) = self.dynamic.iter().find(|(_, n)| *n == full) {
            return a;
        }
        let slots = (DLL_SIZE - THUNKS_AT) / THUNK;
        let used = self.dynamic.iter().filter(|(a, _)| a & !(DLL_SIZE - 1) == owner).count() as u32;
        // Past the slots a DLL has, every further name shares the last (and
        // past MAX_NAMES, is not remembered: a stub asking for endless
        // names costs neither memory nor time).
        let slot = ((KERNEL32_API.len() + KERNEL32_NAMED.len()) as u32 + used).min(slots - 1);
        let a = thunk(owner, slot);
        if self.dynamic.len() < MAX_NAMES {
            self.dynamic.push((a, full));
        }
        a
    }

    /// Whether `eip` is in a fake DLL's thunk pages.
    pub(crate) fn is_thunk(eip: u32) -> bool {
        let dll = eip & !(DLL_SIZE - 1);
        let is_dll = dll == KERNEL32 || dll == NTDLL || (OTHER_DLLS..OTHER_DLLS + MAX_OTHER_DLLS * DLL_SIZE).contains(&dll);
        is_dll && eip - dll >= THUNKS_AT
    }

    /// Run the function whose thunk `cpu.eip` is at, returning to its caller
    /// (`Err` ends the run).
    pub(crate) fn call(&mut self, cpu: &mut Cpu, mem: &mut Memory) -> Result<(), Called> {
        let eip = cpu.eip;
        let slot = (eip & (DLL_SIZE - 1)).saturating_sub(THUNKS_AT) / THUNK;
        let in_kernel32 = eip & !(DLL_SIZE - 1) == KERNEL32;
        let known = in_kernel32.then(|| KERNEL32_API.get(slot as usize)).flatten();
        if in_kernel32 && let Some(name) = (slot as usize).checked_sub(KERNEL32_API.len()).and_then(|k| KERNEL32_NAMED.get(k)) {
            return Err(Called::Other(format!("kernel32!{name}")));
        }
        let Some(&(name, pops)) = known else {
            let name = self.dynamic.iter().find(|(a, _)| *a == eip).map_or_else(|| format!("{eip:#x}"), |(_, n)| n.clone());
            return Err(Called::Other(name));
        };
        let sp = cpu.r[ESP];
        let arg = |mem: &mut Memory, k: u32| mem.u32(sp.wrapping_add(4 + 4 * k)).unwrap_or(0);
        let ret = match name {
            "ExitThread" | "ExitProcess" => return Err(Called::Exit),
            "__seh_return" => return self.seh_return(cpu, mem),
            "__seh_last" => return Err(Called::Unhandled(0)),
            "LoadLibraryA" | "LoadLibraryExA" | "GetModuleHandleA" | "LoadLibraryW" | "GetModuleHandleW" => {
                let p = arg(mem, 0);
                let wide = name.ends_with('W');
                if p == 0 && name.starts_with("GetModuleHandle") {
                    mem.u32(PEB + 8).unwrap_or(0)
                } else {
                    let raw = mem.c_string(p, 256).unwrap_or_default();
                    let raw: Vec<u8> = if wide { wide_string(mem, p) } else { raw };
                    let dll = String::from_utf8_lossy(&raw).into_owned();
                    if dll.is_empty() { 0 } else { self.load_module(mem, &dll) }
                }
            }
            "GetProcAddress" => {
                let (module, p) = (arg(mem, 0), arg(mem, 1));
                let proc_name = if p < 0x10000 {
                    format!("#{p}")
                } else {
                    String::from_utf8_lossy(&mem.c_string(p, 256).unwrap_or_default()).into_owned()
                };
                let dll_name = if module == KERNEL32 {
                    "kernel32".to_string()
                } else if module == NTDLL {
                    "ntdll".to_string()
                } else {
                    self.dlls.iter().find(|&&(_, b)| b == module).map_or_else(|| format!("{module:#x}"), |(n, _)| n.clone())
                };
                let known = [KERNEL32, NTDLL].contains(&module) || self.dlls.iter().any(|&(_, b)| b == module);
                if known { self.procedure(Some(module), &dll_name, &proc_name) } else { 0 }
            }
            "VirtualAlloc" => {
                let (want, len) = (arg(mem, 0), arg(mem, 1));
                let len = len.max(1);
                if want != 0 && mem.region(want & !0xFFF).is_some() {
                    // Committing what is already reserved.
                    want
                } else {
                    let at = if want != 0 && mem.map(want & !0xFFFF, len) {
                        Some(want & !0xFFFF)
                    } else {
                        mem.find_free(HEAP_FROM, len).filter(|&a| mem.map(a, len))
                    };
                    at.unwrap_or(0)
                }
            }
            "VirtualFree" => {
                let a = arg(mem, 0);
                u32::from(mem.unmap(a) || a != 0)
            }
            "VirtualProtect" => {
                let old = arg(mem, 3);
                if old != 0 {
                    let _ = mem.put_u32(old, 0x40);
                }
                1
            }
            "GetTickCount" => {
                self.tick += 16;
                self.tick
            }
            "GetVersion" => 0x0A28_0105,
            "GetLastError" => self.last_error,
            "SetLastError" => {
                self.last_error = arg(mem, 0);
                0
            }
            "GetCurrentProcess" => u32::MAX,
            "GetCurrentProcessId" => 0x0F00,
            "GetCurrentThreadId" => 0x0F04,
            "FlushInstructionCache" | "CloseHandle" => 1,
            "GetCommandLineA" => PROCESS_PAGES + 0x2F00,
            "GetStartupInfoA" => {
                let p = arg(mem, 0);
                let _ = mem.write(p, &[0u8; 0x44]);
                let _ = mem.put_u32(p, 0x44);
                0
            }
            "GetModuleFileNameA" => {
                let (p, len) = (arg(mem, 1), arg(mem, 2) as usize);
                let n = MODULE_PATH.len().min(len.saturating_sub(1));
                let mut s = MODULE_PATH[..n].to_vec();
                s.push(0);
                if mem.write(p, &s).is_ok() { n as u32 } else { 0 }
            }
            "CreateFileA" => {
                let p = arg(mem, 0);
                let name = mem.c_string(p, 260).unwrap_or_default();
                let own = name.eq_ignore_ascii_case(MODULE_PATH);
                self.file_pos = 0;
                if own { FILE_HANDLE } else { u32::MAX }
            }
            "GetFileSize" => {
                if arg(mem, 0) == FILE_HANDLE {
                    let high = arg(mem, 1);
                    if high != 0 {
                        let _ = mem.put_u32(high, 0);
                    }
                    self.file.len() as u32
                } else {
                    u32::MAX
                }
            }
            "SetFilePointer" => {
                let (h, dist, method) = (arg(mem, 0), arg(mem, 1), arg(mem, 3));
                if h != FILE_HANDLE {
                    u32::MAX
                } else {
                    let from = match method {
                        1 => self.file_pos,
                        2 => self.file.len() as u32,
                        _ => 0,
                    };
                    self.file_pos = from.wrapping_add(dist);
                    self.file_pos
                }
            }
            "ReadFile" => {
                let (h, buf, want, done) = (arg(mem, 0), arg(mem, 1), arg(mem, 2), arg(mem, 3));
                if h != FILE_HANDLE {
                    0
                } else {
                    let at = (self.file_pos as usize).min(self.file.len());
                    let n = (want as usize).min(self.file.len() - at).min(64 << 20);
                    let ok = mem.write(buf, &self.file[at..at + n]).is_ok();
                    let n = if ok { n as u32 } else { 0 };
                    self.file_pos = self.file_pos.wrapping_add(n);
                    if done != 0 {
                        let _ = mem.put_u32(done, n);
                    }
                    u32::from(ok)
                }
            }
            "CreateFileMappingA" if arg(mem, 0) == FILE_HANDLE => MAPPING_HANDLE,
            "MapViewOfFile" => {
                let len = self.file.len() as u32;
                let at =
                    if arg(mem, 0) == MAPPING_HANDLE { mem.find_free(HEAP_FROM, len).filter(|&a| mem.map(a, len)) } else { None };
                match at {
                    Some(a) if mem.load(a, &self.file).is_ok() => a,
                    _ => 0,
                }
            }
            "UnmapViewOfFile" => {
                let a = arg(mem, 0);
                u32::from(mem.unmap(a))
            }
            "GlobalAlloc" | "LocalAlloc" => {
                let len = arg(mem, 1).max(1);
                mem.find_free(HEAP_FROM, len).filter(|&a| mem.map(a, len)).unwrap_or(0)
            }
            "GlobalFree" | "LocalFree" => {
                let a = arg(mem, 0);
                mem.unmap(a);
                0
            }
            // IsDebuggerPresent, Sleep, SetErrorMode, ...
            _ => 0,
        };
        cpu.r[EAX] = ret;
        let to = cpu.pop(mem).map_err(|_| Called::Unhandled(0))?;
        cpu.r[ESP] = cpu.r[ESP].wrapping_add(pops);
        cpu.eip = to;
        Ok(())
    }

    /// Hand an exception to the first handler of the `fs:[0]` chain, as
    /// Windows' dispatcher does: an EXCEPTION_RECORD and a CONTEXT on the
    /// stack, then `handler(record, frame, context, dispatcher_context)`
    /// returning into the dispatcher. `Err` when no handler is left.
    pub(crate) fn raise(&mut self, cpu: &mut Cpu, mem: &mut Memory, exit: Exit) -> Result<(), Called> {
        let Exit::Exception { code, address } = exit else { return Err(Called::Unhandled(0)) };
        if self.dispatching.len() >= 8 {
            return Err(Called::Unhandled(code));
        }
        let sp = cpu.r[ESP].wrapping_sub(0x100) & !3;
        let context = sp.wrapping_sub(ctx::SIZE);
        let record = context.wrapping_sub(0x50);
        let mut rec = [0u8; 0x50];
        rec[0..4].copy_from_slice(&code.to_le_bytes());
        rec[12..16].copy_from_slice(&cpu.eip.to_le_bytes());
        if code == super::cpu::ACCESS_VIOLATION {
            rec[16..20].copy_from_slice(&2u32.to_le_bytes());
            rec[24..28].copy_from_slice(&address.to_le_bytes());
        }
        let mut c = vec![0u8; ctx::SIZE as usize];
        let regs = [
            (ctx::FLAGS, 0x0001_0007),
            (ctx::EDI, cpu.r[7]),
            (ctx::ESI, cpu.r[6]),
            (ctx::EBX, cpu.r[3]),
            (ctx::EDX, cpu.r[EDX]),
            (ctx::ECX, cpu.r[ECX]),
            (ctx::EAX, cpu.r[EAX]),
            (ctx::EBP, cpu.r[5]),
            (ctx::EIP, cpu.eip),
            (ctx::CS, 0x1B),
            (ctx::EFLAGS, cpu.flags),
            (ctx::ESP, cpu.r[ESP]),
            (ctx::SS, 0x23),
        ];
        for (o, v) in regs {
            c[o as usize..o as usize + 4].copy_from_slice(&v.to_le_bytes());
        }
        mem.write(record, &rec).map_err(|_| Called::Unhandled(code))?;
        mem.write(context, &c).map_err(|_| Called::Unhandled(code))?;
        cpu.r[ESP] = record;
        let frame = mem.u32(cpu.fs_base).map_err(|_| Called::Unhandled(code))?;
        self.dispatching.push(Dispatch { frame, record, context });
        self.call_handler(cpu, mem, code)
    }

    fn call_handler(&mut self, cpu: &mut Cpu, mem: &mut Memory, code: u32) -> Result<(), Called> {
        let Some(d) = self.dispatching.last() else { return Err(Called::Unhandled(code)) };
        let (frame, record, context) = (d.frame, d.record, d.context);
        let handler = if frame == u32::MAX { None } else { mem.u32(frame.wrapping_add(4)).ok() };
        let Some(handler) = handler.filter(|&h| h != thunk(KERNEL32, 2)) else {
            return Err(Called::Unhandled(code));
        };
        for v in [0, context, frame, record, thunk(KERNEL32, 1)] {
            cpu.push(mem, v).map_err(|_| Called::Unhandled(code))?;
        }
        cpu.eip = handler;
        Ok(())
    }

    /// A handler returned: continue at its (possibly edited) context, or
    /// try the next frame.
    fn seh_return(&mut self, cpu: &mut Cpu, mem: &mut Memory) -> Result<(), Called> {
        let Some(d) = self.dispatching.last() else { return Err(Called::Unhandled(0)) };
        let (frame, record, context) = (d.frame, d.record, d.context);
        let code = mem.u32(record).unwrap_or(0);
        match cpu.r[EAX] {
            0 => {
                self.dispatching.pop();
                let get = |mem: &mut Memory, o: u32| mem.u32(context.wrapping_add(o)).map_err(|_| Called::Unhandled(code));
                cpu.r[7] = get(mem, ctx::EDI)?;
                cpu.r[6] = get(mem, ctx::ESI)?;
                cpu.r[3] = get(mem, ctx::EBX)?;
                cpu.r[EDX] = get(mem, ctx::EDX)?;
                cpu.r[ECX] = get(mem, ctx::ECX)?;
                cpu.r[EAX] = get(mem, ctx::EAX)?;
                cpu.r[5] = get(mem, ctx::EBP)?;
                cpu.eip = get(mem, ctx::EIP)?;
                cpu.flags = (get(mem, ctx::EFLAGS)? & 0x0000_0FD5) | 2;
                cpu.r[ESP] = get(mem, ctx::ESP)?;
                Ok(())
            }
            1 => {
                let next = mem.u32(frame).map_err(|_| Called::Unhandled(code))?;
                if let Some(d) = self.dispatching.last_mut() {
                    d.frame = next;
                }
                cpu.r[ESP] = record;
                self.call_handler(cpu, mem, code)
            }
            _ => Err(Called::Unhandled(code)),
        }
    }
}

fn wide_string(mem: &mut Memory, p: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for k in 0..256u32 {
        let mut b = [0u8; 2];
        if mem.read(p.wrapping_add(2 * k), &mut b).is_err() || b == [0, 0] {
            break;
        }
        out.push(b[0]);
    }
    out
}

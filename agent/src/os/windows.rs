//! The agent's OS specifics on Windows: a file's identity is its volume
//! serial number and file index, links, junctions and every other
//! reparse point are opened as themselves (`FILE_FLAG_OPEN_REPARSE_POINT`)
//! and never followed, an opened file's real path is checked against the
//! path asked for (a directory on the way swapped for a junction is
//! refused), files locked by another process are skipped with that reason,
//! directories the agent keeps to itself get a protected access list
//! (SYSTEM and Administrators, and the user running it when not elevated),
//! and priorities are a priority class and background mode. Alternate data
//! streams are not scanned (only a file's unnamed stream is read). Long
//! paths work: std prefixes them with `\\?\` where needed.

use std::ffi::OsString;
use std::fs::{File, Metadata, OpenOptions};
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::fs::{MetadataExt, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::{Component, Path, PathBuf, Prefix};
use std::time::Duration;
use windows_sys::Win32::Foundation as foundation;
use windows_sys::Win32::Storage::FileSystem as fs;

/// Where secrets live on a Windows desktop (globs match `/` for `\`, case
/// ignored): browser and mail profiles, DPAPI master keys, credential and
/// vault stores, SSH and GnuPG keys. Looked up, never uploaded, unless the
/// admin says otherwise (`--upload-exclude`, `scan.upload_exclude`).
pub const PRIVATE_DATA: &[&str] = &[
    "**/.ssh/**",
    "**/.gnupg/**",
    "**/AppData/Roaming/gnupg/**",
    "**/AppData/Roaming/Mozilla/Firefox/Profiles/**",
    "**/AppData/Roaming/Thunderbird/Profiles/**",
    "**/AppData/Local/Google/Chrome/User Data/**",
    "**/AppData/Local/Microsoft/Edge/User Data/**",
    "**/AppData/Local/Chromium/User Data/**",
    "**/AppData/Local/BraveSoftware/Brave-Browser/User Data/**",
    "**/AppData/Local/Microsoft/Outlook/**",
    "**/AppData/Roaming/Microsoft/Protect/**",
    "**/AppData/Roaming/Microsoft/Credentials/**",
    "**/AppData/Local/Microsoft/Credentials/**",
    "**/AppData/Local/Microsoft/Vault/**",
    "**/AppData/Roaming/Microsoft/Crypto/**",
];

/// Whether the agent runs elevated (an administrator's token, or SYSTEM as
/// a service): it then keeps its files in `%ProgramData%\Qala`.
pub fn is_root() -> bool {
    use windows_sys::Win32::Security::{GetTokenInformation, TOKEN_ELEVATION, TOKEN_QUERY, TokenElevation};
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
    let mut token: foundation::HANDLE = std::ptr::null_mut();
    // SAFETY: the pseudo-handle of this process and a valid out-pointer.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return false;
    }
    let mut elevation = TOKEN_ELEVATION { TokenIsElevated: 0 };
    let mut len = 0u32;
    // SAFETY: an open token and a buffer of the size passed.
    let ok = unsafe {
        GetTokenInformation(
            token,
            TokenElevation,
            (&mut elevation as *mut TOKEN_ELEVATION).cast(),
            size_of::<TOKEN_ELEVATION>() as u32,
            &mut len,
        )
    };
    // SAFETY: the token was opened above.
    unsafe { foundation::CloseHandle(token) };
    ok != 0 && elevation.TokenIsElevated != 0
}

/// What this machine runs, for the inventory (`Windows 10.0.19045`).
pub fn os_description() -> String {
    use windows_sys::Wdk::System::SystemServices::RtlGetVersion;
    use windows_sys::Win32::System::SystemInformation::OSVERSIONINFOW;
    // SAFETY: plain data; the size field is set before the call.
    let mut v: OSVERSIONINFOW = unsafe { std::mem::zeroed() };
    v.dwOSVersionInfoSize = size_of::<OSVERSIONINFOW>() as u32;
    // SAFETY: a valid, sized OSVERSIONINFOW.
    if unsafe { RtlGetVersion(&mut v) } != 0 {
        return "Windows".into();
    }
    format!("Windows {}.{}.{}", v.dwMajorVersion, v.dwMinorVersion, v.dwBuildNumber)
}

/// Which file a path was (volume serial number and file index) and the
/// fields that must all be unchanged for what the agent knows of its
/// content to hold (size, last write and last change time, in nanoseconds
/// since the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// 100-ns ticks since 1601 as nanoseconds since 1970.
fn filetime_ns(ticks: i64) -> i64 {
    const EPOCH_DIFF_TICKS: i64 = 116_444_736_000_000_000;
    ticks.saturating_sub(EPOCH_DIFF_TICKS).saturating_mul(100)
}

/// Nanoseconds since 1970 as 100-ns ticks since 1601.
fn ns_filetime(ns: i64) -> foundation::FILETIME {
    let ticks = ns.div_euclid(100).saturating_add(116_444_736_000_000_000) as u64;
    foundation::FILETIME { dwLowDateTime: ticks as u32, dwHighDateTime: (ticks >> 32) as u32 }
}

impl FileStamp {
    /// The stamp of the open `file`.
    pub fn of_handle(file: &File) -> std::io::Result<Self> {
        let h = file.as_raw_handle() as foundation::HANDLE;
        // SAFETY: plain data filled by the calls below.
        let mut info: fs::BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
        // SAFETY: an open handle and a valid out-pointer.
        if unsafe { fs::GetFileInformationByHandle(h, &mut info) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        let mut basic: fs::FILE_BASIC_INFO = unsafe { std::mem::zeroed() };
        // SAFETY: an open handle and a buffer of the size passed.
        let ok = unsafe {
            fs::GetFileInformationByHandleEx(
                h,
                fs::FileBasicInfo,
                (&mut basic as *mut fs::FILE_BASIC_INFO).cast(),
                size_of::<fs::FILE_BASIC_INFO>() as u32,
            )
        };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            dev: u64::from(info.dwVolumeSerialNumber),
            ino: (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow),
            size: (u64::from(info.nFileSizeHigh) << 32) | u64::from(info.nFileSizeLow),
            mtime_ns: filetime_ns(basic.LastWriteTime),
            ctime_ns: filetime_ns(basic.ChangeTime),
        })
    }

    /// The stamp of the file at `path` (a link or junction itself, never
    /// what it points to), opened for its attributes only: the metadata
    /// the walk has lacks the file's identity.
    pub fn at(path: &Path, _m: &Metadata) -> std::io::Result<Self> {
        let f = OpenOptions::new()
            .access_mode(fs::FILE_READ_ATTRIBUTES)
            .share_mode(SHARE_ALL)
            .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_OPEN_REPARSE_POINT)
            .open(path)?;
        Self::of_handle(&f)
    }

    /// The stamp of the open `file`.
    pub fn open(file: &File, _m: &Metadata) -> std::io::Result<Self> {
        Self::of_handle(file)
    }

    /// Whether `other` is the same file (not one put at its path since).
    pub fn same_file(&self, other: &FileStamp) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// Others may read, write, rename and delete a file the agent has open:
/// the agent never stands in a user's way.
const SHARE_ALL: u32 = fs::FILE_SHARE_READ | fs::FILE_SHARE_WRITE | fs::FILE_SHARE_DELETE;

/// Whether `m` is a reparse point (a symbolic link, a junction, a mount
/// point, a cloud placeholder...).
fn is_reparse(m: &Metadata) -> bool {
    m.file_attributes() & fs::FILE_ATTRIBUTE_REPARSE_POINT != 0
}

/// A path without its `\\?\` prefix where the rest is an ordinary drive or
/// UNC path, lower-cased: for comparing a handle's real path with the path
/// that was opened.
fn comparable(path: &Path) -> String {
    let mut parts = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Prefix(p) => match p.kind() {
                Prefix::VerbatimDisk(d) | Prefix::Disk(d) => parts.push(format!("{}:", d as char)),
                Prefix::VerbatimUNC(server, share) | Prefix::UNC(server, share) => {
                    parts.push(format!(r"\\{}\{}", server.to_string_lossy(), share.to_string_lossy()))
                }
                _ => parts.push(p.as_os_str()),
            },
            Component::RootDir => parts.push(r"\"),
            other => parts.push(other.as_os_str()),
        }
    }
    parts.to_string_lossy().to_lowercase()
}

/// The real path of an open handle (links and junctions resolved by the
/// system), as `\\?\C:\...`.
fn final_path(file: &File) -> std::io::Result<PathBuf> {
    let h = file.as_raw_handle() as foundation::HANDLE;
    let mut buf = vec![0u16; 1024];
    loop {
        // SAFETY: an open handle and a buffer of the length passed.
        let n = unsafe { fs::GetFinalPathNameByHandleW(h, buf.as_mut_ptr(), buf.len() as u32, fs::FILE_NAME_NORMALIZED) };
        if n == 0 {
            let e = std::io::Error::last_os_error();
            // Wine answers a short buffer this way, Windows with the length.
            if e.raw_os_error() == Some(foundation::ERROR_MORE_DATA as i32) && buf.len() < 1 << 16 {
                buf.resize(buf.len() * 4, 0);
                continue;
            }
            return Err(e);
        }
        if (n as usize) < buf.len() {
            return Ok(PathBuf::from(OsString::from_wide(&buf[..n as usize])));
        }
        buf.resize(n as usize + 1, 0);
    }
}

/// Refuse `file` unless it is where `path` says: a directory on the way
/// that is (or became) a link or junction leads elsewhere. The handle's
/// real path equal to `path` settles it in one call; where it differs
/// (mapped and `subst` drives, short names) or the system cannot name it
/// (Wine's `GetFinalPathNameByHandleW` stops at 260 characters), each
/// directory on the way is checked instead.
fn check_where(file: &File, path: &Path) -> std::io::Result<()> {
    let asked = std::path::absolute(path)?;
    let real = match final_path(file) {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(foundation::ERROR_MORE_DATA as i32) => return check_ancestors(&asked),
        Err(e) => return Err(e),
    };
    if comparable(&asked) == comparable(&real) {
        return Ok(());
    }
    // Another name for the same place (a mapped network drive or `subst`
    // drive names its target, a short 8.3 name its long one): then no
    // directory on the way may be a link or junction.
    check_ancestors(&asked).map_err(|e| std::io::Error::other(format!("{e} (the file is at {})", real.display())))
}

/// No directory above `path` is a link, junction or other reparse point.
fn check_ancestors(path: &Path) -> std::io::Result<()> {
    for dir in path.ancestors().skip(1) {
        if dir.parent().is_none() {
            break;
        }
        if is_reparse(&std::fs::symlink_metadata(dir)?) {
            return Err(std::io::Error::other(format!("{}: a link or junction on the way; not followed", dir.display())));
        }
    }
    Ok(())
}

/// Whether `e` says another process holds the file locked (opened without
/// sharing, or a locked byte range).
pub fn is_locked(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(c) if c == foundation::ERROR_SHARING_VIOLATION as i32 || c == foundation::ERROR_LOCK_VIOLATION as i32)
}

/// Open `path` for reading, sharing it with every other process, as itself
/// (a link or junction is refused, not followed) and only where `path`
/// says (no link or junction among its directories). Only a regular file;
/// with its metadata, taken before anything is read. A file another
/// process holds locked is an error that [`is_locked`] recognises.
pub fn open_regular(path: &Path) -> std::io::Result<(File, Metadata)> {
    let f = OpenOptions::new()
        .read(true)
        .share_mode(SHARE_ALL)
        .custom_flags(fs::FILE_FLAG_OPEN_REPARSE_POINT | fs::FILE_FLAG_SEQUENTIAL_SCAN)
        .open(path)
        .map_err(|e| if is_locked(&e) { std::io::Error::new(e.kind(), locked_message(&e)) } else { e })?;
    let m = f.metadata()?;
    if is_reparse(&m) {
        return Err(std::io::Error::other(format!("{}: a link, junction or other reparse point; not followed", path.display())));
    }
    if !m.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    check_where(&f, path)?;
    Ok((f, m))
}

fn locked_message(e: &std::io::Error) -> String {
    format!("locked by another process ({e})")
}

/// Nothing on Windows is a view of the kernel to leave out.
pub fn is_pseudo_fs(_path: &Path) -> bool {
    false
}

/// Mount points are reparse points, never entered; nothing more to tell.
pub fn is_mount_point(_dir: &Path) -> bool {
    false
}

/// Priority for the agent's scans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    Idle,
    BestEffortLow,
    Unchanged,
}

/// Lower this process's priority: `nice` above 0 is the below-normal
/// priority class (10 and above: idle), and a lower I/O class puts the
/// process in background mode (low I/O and memory priority). Returns what
/// could not be set.
pub fn lower_priority(nice: i32, io: IoClass) -> Vec<String> {
    use windows_sys::Win32::System::Threading::{
        BELOW_NORMAL_PRIORITY_CLASS, GetCurrentProcess, IDLE_PRIORITY_CLASS, PROCESS_MODE_BACKGROUND_BEGIN, SetPriorityClass,
    };
    let mut failed = Vec::new();
    let class = match nice {
        n if n >= 10 => Some(IDLE_PRIORITY_CLASS),
        n if n > 0 => Some(BELOW_NORMAL_PRIORITY_CLASS),
        _ => None,
    };
    if let Some(class) = class {
        // SAFETY: this process's pseudo-handle; no pointers.
        if unsafe { SetPriorityClass(GetCurrentProcess(), class) } == 0 {
            failed.push(format!("priority class: {}", std::io::Error::last_os_error()));
        }
    }
    if io != IoClass::Unchanged {
        // SAFETY: as above.
        if unsafe { SetPriorityClass(GetCurrentProcess(), PROCESS_MODE_BACKGROUND_BEGIN) } == 0 {
            failed.push(format!("background mode: {}", std::io::Error::last_os_error()));
        }
    }
    failed
}

/// CPU time this process has used (kernel and user).
pub fn process_cpu() -> Duration {
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessTimes};
    let zero = foundation::FILETIME { dwLowDateTime: 0, dwHighDateTime: 0 };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: this process's pseudo-handle and four valid out-pointers.
    if unsafe { GetProcessTimes(GetCurrentProcess(), &mut created, &mut exited, &mut kernel, &mut user) } == 0 {
        return Duration::ZERO;
    }
    let ticks = |t: foundation::FILETIME| (u64::from(t.dwHighDateTime) << 32) | u64::from(t.dwLowDateTime);
    Duration::from_nanos((ticks(kernel) + ticks(user)).saturating_mul(100))
}

/// All bytes this process has read so far (the I/O counters' read
/// transfer count: files, the hash cache, sockets): what the summary
/// reports next to the file content read.
pub fn bytes_read() -> u64 {
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, GetProcessIoCounters, IO_COUNTERS};
    // SAFETY: plain data.
    let mut io: IO_COUNTERS = unsafe { std::mem::zeroed() };
    // SAFETY: this process's pseudo-handle and a valid out-pointer.
    if unsafe { GetProcessIoCounters(GetCurrentProcess(), &mut io) } == 0 {
        return 0;
    }
    io.ReadTransferCount
}

/// Create `path`, which must not exist (not even as a link); its access
/// list is its directory's ([`mkdir_private`]).
pub fn create_private(path: &Path) -> std::io::Result<File> {
    qala_common::files::create_new(path, 0o600)
}

/// The access list of the agent's own directories, inherited by what is
/// made in them: protected (nothing inherited from above), full control
/// for SYSTEM and Administrators; [`private_sddl`] adds the user running
/// the agent.
pub const PRIVATE_SDDL: &str = "D:P(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)";

/// [`PRIVATE_SDDL`] and the user running the agent (a non-elevated agent
/// could not read its own files otherwise; for the service, SYSTEM, no
/// one more).
pub fn private_sddl() -> String {
    match user_sid() {
        Some(sid) if sid != "S-1-5-18" => format!("{PRIVATE_SDDL}(A;OICI;FA;;;{sid})"),
        _ => PRIVATE_SDDL.to_string(),
    }
}

/// The SID of the user this process runs as (`S-1-5-21-...`).
fn user_sid() -> Option<String> {
    use windows_sys::Win32::Security::Authorization::ConvertSidToStringSidW;
    use windows_sys::Win32::Security::{GetTokenInformation, TOKEN_QUERY, TOKEN_USER, TokenUser};
    use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};
    let mut token: foundation::HANDLE = std::ptr::null_mut();
    // SAFETY: this process's pseudo-handle and a valid out-pointer.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) } == 0 {
        return None;
    }
    let mut buf = vec![0u64; 64];
    let mut len = 0u32;
    // SAFETY: an open token and a buffer of the size passed (u64s: aligned for TOKEN_USER).
    let ok = unsafe { GetTokenInformation(token, TokenUser, buf.as_mut_ptr().cast(), (buf.len() * 8) as u32, &mut len) };
    // SAFETY: the token was opened above.
    unsafe { foundation::CloseHandle(token) };
    if ok == 0 {
        return None;
    }
    // SAFETY: the call filled a TOKEN_USER at the start of the buffer.
    let user = unsafe { &*(buf.as_ptr() as *const TOKEN_USER) };
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: the SID lives in buf; text is a valid out-pointer.
    if unsafe { ConvertSidToStringSidW(user.User.Sid, &mut text) } == 0 {
        return None;
    }
    // SAFETY: a NUL-terminated string the call allocated.
    let len = (0..).take_while(|&i| unsafe { *text.add(i) } != 0).count();
    // SAFETY: `len` units at `text`.
    let sid = String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len) });
    // SAFETY: allocated with LocalAlloc by the conversion.
    unsafe { foundation::LocalFree(text as _) };
    Some(sid)
}

/// `sddl` parsed by the system and printed back (what the system makes of
/// the access list the agent sets): for checking where, as under Wine, the
/// list cannot be read back from the file system.
pub fn sddl_round_trip(sddl: &str) -> std::io::Result<String> {
    use windows_sys::Win32::Security::Authorization::ConvertSecurityDescriptorToStringSecurityDescriptorW;
    use windows_sys::Win32::Security::DACL_SECURITY_INFORMATION;
    let sd = Descriptor::parse(sddl)?;
    descriptor_text(sd.0, ConvertSecurityDescriptorToStringSecurityDescriptorW, DACL_SECURITY_INFORMATION)
}

/// A security descriptor the system made from SDDL, freed when dropped.
struct Descriptor(windows_sys::Win32::Security::PSECURITY_DESCRIPTOR);

impl Descriptor {
    fn parse(sddl: &str) -> std::io::Result<Self> {
        use windows_sys::Win32::Security::Authorization::{
            ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
        };
        let text = wide(std::ffi::OsStr::new(sddl));
        let mut sd = std::ptr::null_mut();
        // SAFETY: a NUL-terminated string and a valid out-pointer.
        if unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(text.as_ptr(), SDDL_REVISION_1, &mut sd, std::ptr::null_mut())
        } == 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self(sd))
    }
}

impl Drop for Descriptor {
    fn drop(&mut self) {
        // SAFETY: allocated with LocalAlloc by the conversion, freed once.
        unsafe { foundation::LocalFree(self.0 as _) };
    }
}

type ToText = unsafe extern "system" fn(
    windows_sys::Win32::Security::PSECURITY_DESCRIPTOR,
    u32,
    windows_sys::Win32::Security::OBJECT_SECURITY_INFORMATION,
    *mut *mut u16,
    *mut u32,
) -> windows_sys::core::BOOL;

/// A security descriptor's `info` parts as SDDL.
fn descriptor_text(
    sd: windows_sys::Win32::Security::PSECURITY_DESCRIPTOR,
    to_text: ToText,
    info: windows_sys::Win32::Security::OBJECT_SECURITY_INFORMATION,
) -> std::io::Result<String> {
    let mut text: *mut u16 = std::ptr::null_mut();
    let mut len = 0u32;
    // SAFETY: a valid descriptor and out-pointers.
    if unsafe { to_text(sd, windows_sys::Win32::Security::Authorization::SDDL_REVISION_1, info, &mut text, &mut len) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the conversion wrote `len` UTF-16 units (with the NUL) at `text`.
    let s =
        String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(text, len as usize) }).trim_end_matches('\0').to_string();
    // SAFETY: allocated with LocalAlloc by the conversion.
    unsafe { foundation::LocalFree(text as _) };
    Ok(s)
}

/// Create directory `dir` and its parents, `dir` itself with
/// [`private_sddl`] (set again if it existed); refused if `dir` is a link,
/// junction or not a directory.
pub fn mkdir_private(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let m = std::fs::symlink_metadata(dir)?;
    if is_reparse(&m) || !m.is_dir() {
        return Err(std::io::Error::other(format!("{}: a link, junction or not a directory", dir.display())));
    }
    set_sddl(dir, &private_sddl())
}

fn wide(p: &std::ffi::OsStr) -> Vec<u16> {
    p.encode_wide().chain(std::iter::once(0)).collect()
}

/// Set the access list of `path` from an SDDL string (`SetFileSecurityW`:
/// the descriptor as it is, with its protected flag; what a directory
/// made for the agent needs, as nothing in it predates the list. Wine
/// maps it to the Unix mode, where `SetNamedSecurityInfoW` left others
/// their read access).
pub fn set_sddl(path: &Path, sddl: &str) -> std::io::Result<()> {
    use windows_sys::Win32::Security::{DACL_SECURITY_INFORMATION, SetFileSecurityW};
    let sd = Descriptor::parse(sddl)?;
    let name = wide(path.as_os_str());
    // SAFETY: a NUL-terminated path and a live descriptor.
    if unsafe { SetFileSecurityW(name.as_ptr(), DACL_SECURITY_INFORMATION, sd.0) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The access list of `path` as SDDL (for checks and tests).
pub fn sddl_of(path: &Path) -> std::io::Result<String> {
    use windows_sys::Win32::Security::Authorization::{
        ConvertSecurityDescriptorToStringSecurityDescriptorW, GetNamedSecurityInfoW, SE_FILE_OBJECT,
    };
    use windows_sys::Win32::Security::{DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR};
    let name = wide(path.as_os_str());
    let mut sd: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    // SAFETY: a NUL-terminated path and valid out-pointers.
    let e = unsafe {
        GetNamedSecurityInfoW(
            name.as_ptr(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut sd,
        )
    };
    if e != 0 {
        return Err(std::io::Error::from_raw_os_error(e as i32));
    }
    let result = descriptor_text(sd, ConvertSecurityDescriptorToStringSecurityDescriptorW, DACL_SECURITY_INFORMATION);
    // SAFETY: sd was allocated with LocalAlloc by GetNamedSecurityInfoW.
    unsafe { foundation::LocalFree(sd as _) };
    result
}

/// The regular files below directory `dir`, never entering a link,
/// junction or other reparse point; directories `skip` matches are not
/// entered.
pub fn files_below(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> std::io::Result<Vec<PathBuf>> {
    let m = std::fs::symlink_metadata(dir)?;
    if is_reparse(&m) || !m.is_dir() {
        return Err(std::io::Error::other(format!("{}: a link, junction or not a directory", dir.display())));
    }
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        if skip(&d) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if is_reparse(&m) {
                continue;
            }
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() && !skip(&e.path()) {
                files.push(e.path());
            }
        }
    }
    Ok(files)
}

/// An open directory and every directory above it, each held open without
/// `FILE_SHARE_DELETE` so none can be renamed, removed or replaced by a
/// junction while this is held; names are created and removed in it.
pub struct DirFd {
    path: PathBuf,
    _held: Vec<File>,
}

impl DirFd {
    /// Open directory `dir` (absolute) one component at a time, never
    /// following a link or junction, holding each.
    pub fn open_nofollow(dir: &Path) -> std::io::Result<DirFd> {
        let dir = std::path::absolute(dir)?;
        let mut at = PathBuf::new();
        let mut held = Vec::new();
        for c in dir.components() {
            at.push(c.as_os_str());
            if matches!(c, Component::Prefix(_)) {
                continue;
            }
            let f = OpenOptions::new()
                .access_mode(fs::FILE_READ_ATTRIBUTES | fs::FILE_TRAVERSE)
                .share_mode(fs::FILE_SHARE_READ | fs::FILE_SHARE_WRITE)
                .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_OPEN_REPARSE_POINT)
                .open(&at)?;
            let m = f.metadata()?;
            if is_reparse(&m) || !m.is_dir() {
                return Err(std::io::Error::other(format!("{}: a link, junction or not a directory", at.display())));
            }
            held.push(f);
        }
        Ok(DirFd { path: dir, _held: held })
    }

    /// Create `name` in this directory for writing: never over an existing
    /// file, never through a link.
    pub fn create_new(&self, name: &std::ffi::OsStr) -> std::io::Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .share_mode(SHARE_ALL)
            .custom_flags(fs::FILE_FLAG_OPEN_REPARSE_POINT)
            .open(self.path.join(name))
    }

    /// The stamp of `name` in this directory, not following a link.
    pub fn stat(&self, name: &std::ffi::OsStr) -> std::io::Result<FileStamp> {
        let p = self.path.join(name);
        let m = std::fs::symlink_metadata(&p)?;
        FileStamp::at(&p, &m)
    }

    /// Remove `name` from this directory.
    pub fn unlink(&self, name: &std::ffi::OsStr) -> std::io::Result<()> {
        std::fs::remove_file(self.path.join(name))
    }
}

/// A path the admin named (a root to scan or watch), with links and
/// junctions in it resolved once, here (without the `\\?\` prefix where
/// the path is an ordinary one); what the agent opens below it is then
/// reached without following any. A path that does not resolve is made
/// absolute as it is.
pub fn resolve_root(path: &Path) -> PathBuf {
    match std::fs::canonicalize(path) {
        Ok(p) => plain(&p),
        Err(_) => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}

/// `\\?\C:\x` as `C:\x` and `\\?\UNC\server\share\x` as
/// `\\server\share\x` when short enough for every API; else as it is.
fn plain(p: &Path) -> PathBuf {
    let s = p.as_os_str().to_string_lossy();
    let stripped = if let Some(rest) = s.strip_prefix(r"\\?\UNC\") {
        format!(r"\\{rest}")
    } else if let Some(rest) = s.strip_prefix(r"\\?\") {
        if rest.as_bytes().get(1) == Some(&b':') { rest.to_string() } else { return p.to_path_buf() }
    } else {
        return p.to_path_buf();
    };
    if stripped.len() < 260 { PathBuf::from(stripped) } else { p.to_path_buf() }
}

/// Remove `path` only if it is still the file `stamp` describes, reached
/// where `path` says (no link or junction on the way): opened for deletion
/// as itself, checked, and deleted through that handle.
pub fn remove_same(path: &Path, stamp: &FileStamp) -> std::io::Result<()> {
    const DELETE: u32 = 0x0001_0000;
    let f = OpenOptions::new()
        .access_mode(DELETE | fs::FILE_READ_ATTRIBUTES)
        .share_mode(SHARE_ALL)
        .custom_flags(fs::FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)?;
    if is_reparse(&f.metadata()?) {
        return Err(std::io::Error::other(format!("{}: a link or junction; not removed", path.display())));
    }
    check_where(&f, path)?;
    if !FileStamp::of_handle(&f)?.same_file(stamp) {
        return Err(std::io::Error::other(format!("{}: replaced since it was scanned; not removed", path.display())));
    }
    let info = fs::FILE_DISPOSITION_INFO { DeleteFile: true };
    // SAFETY: an open handle with DELETE access and a buffer of the size passed.
    let ok = unsafe {
        fs::SetFileInformationByHandle(
            f.as_raw_handle() as foundation::HANDLE,
            fs::FileDispositionInfo,
            (&info as *const fs::FILE_DISPOSITION_INFO).cast(),
            size_of::<fs::FILE_DISPOSITION_INFO>() as u32,
        )
    };
    if ok == 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
}

/// What of a file is put back on a restored copy: its attributes (read-only,
/// hidden, system, archive) and times. (`uid`/`gid` are Unix's and stay 0;
/// the copy takes the access list of its directory.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    /// The file's attributes.
    pub mode: u32,
    pub atime_ns: i64,
    pub mtime_ns: i64,
}

impl Ownership {
    pub fn of(m: &Metadata) -> Self {
        const KEPT: u32 =
            fs::FILE_ATTRIBUTE_READONLY | fs::FILE_ATTRIBUTE_HIDDEN | fs::FILE_ATTRIBUTE_SYSTEM | fs::FILE_ATTRIBUTE_ARCHIVE;
        Self {
            uid: 0,
            gid: 0,
            mode: m.file_attributes() & KEPT,
            atime_ns: filetime_ns(m.last_access_time() as i64),
            mtime_ns: filetime_ns(m.last_write_time() as i64),
        }
    }

    /// Set these times and attributes on the open `file`.
    pub fn apply(&self, file: &File) -> std::io::Result<()> {
        let h = file.as_raw_handle() as foundation::HANDLE;
        let (atime, mtime) = (ns_filetime(self.atime_ns), ns_filetime(self.mtime_ns));
        // SAFETY: an open handle with write access and two valid FILETIMEs.
        if unsafe { fs::SetFileTime(h, std::ptr::null(), &atime, &mtime) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let attributes = if self.mode == 0 { fs::FILE_ATTRIBUTE_NORMAL } else { self.mode };
        // SAFETY: plain data.
        let mut basic: fs::FILE_BASIC_INFO = unsafe { std::mem::zeroed() };
        basic.FileAttributes = attributes;
        // SAFETY: an open handle and a buffer of the size passed (zero times are left as they are).
        let ok = unsafe {
            fs::SetFileInformationByHandle(
                h,
                fs::FileBasicInfo,
                (&basic as *const fs::FILE_BASIC_INFO).cast(),
                size_of::<fs::FILE_BASIC_INFO>() as u32,
            )
        };
        if ok == 0 { Err(std::io::Error::last_os_error()) } else { Ok(()) }
    }
}

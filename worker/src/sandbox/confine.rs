//! What a scan child gives up before it reads a hostile byte: resource
//! limits, the file system and the network (landlock, where the kernel has
//! it), and every system call a scan does not need (seccomp, required).

use std::collections::BTreeMap;

/// Memory a child may use: `data` bytes of heap (RLIMIT_DATA: brk and
/// private writable mappings, what decoders and yara-x allocate), and an
/// address space of `data` plus 8 GiB (RLIMIT_AS: room for wasmtime's
/// reserved, never-touched guard regions and the mapped file).
pub fn limit_resources(data: u64) -> Result<(), String> {
    use nix::sys::resource::{Resource, setrlimit};
    let set = |what, r, v: u64| setrlimit(r, v, v).map_err(|e| format!("setrlimit {what}: {e}"));
    set("DATA", Resource::RLIMIT_DATA, data)?;
    set("AS", Resource::RLIMIT_AS, data.saturating_add(8 << 30))?;
    // No core files of hostile input's victims; few descriptors.
    set("CORE", Resource::RLIMIT_CORE, 0)?;
    set("NOFILE", Resource::RLIMIT_NOFILE, 32)?;
    Ok(())
}

/// Close every descriptor but stdin (the socket), stdout and stderr: the
/// worker's own are close-on-exec, but whatever the worker inherited
/// without that flag (a parent's pipes) must not reach a scan child.
pub fn close_inherited() {
    // SAFETY: close_range on descriptors this process does not use.
    let done = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    if done != 0 {
        for fd in 3..1024 {
            // SAFETY: as above, one at a time (kernels before 5.9).
            unsafe { libc::close(fd) };
        }
    }
}

/// Die with the worker (a child never outlives it). `worker` is the pid
/// the worker gave (it may be 1: a worker that is a container's first
/// process); without it, a parent that is pid 1 means the worker is gone.
pub fn die_with_parent(worker: Option<i32>) -> Result<(), String> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(|e| format!("prctl PDEATHSIG: {e}"))?;
    // The worker may have died before the line above: then this process
    // has another parent (init, or a subreaper).
    let parent = nix::unistd::getppid().as_raw();
    let gone = match worker {
        Some(w) => parent != w,
        None => parent == 1,
    };
    if gone {
        return Err("the worker is gone".into());
    }
    Ok(())
}

/// No file system access at all and no TCP, if the kernel has landlock.
/// Returns what was enforced, for the worker's log.
pub fn landlock() -> String {
    use landlock::{ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetStatus};
    let abi = ABI::V5;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self());
    match status {
        Ok(s) => match s.ruleset {
            RulesetStatus::FullyEnforced => "landlock (no files, no TCP)".into(),
            RulesetStatus::PartiallyEnforced => "landlock (partly: older kernel ABI)".into(),
            RulesetStatus::NotEnforced => "no landlock (kernel without it)".into(),
        },
        Err(e) => format!("no landlock ({e})"),
    }
}

/// System calls a scan child may make once confined: memory, reading the
/// descriptors it was given, its socket to the worker, time, signals and
/// exiting. Not opening files, not creating sockets or processes, not
/// executing anything: those fail with EPERM.
fn allowed() -> Vec<i64> {
    let mut calls = vec![
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_pread64,
        libc::SYS_close,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_lseek,
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mprotect,
        libc::SYS_mremap,
        libc::SYS_madvise,
        libc::SYS_brk,
        libc::SYS_futex,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_getrandom,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettid,
        libc::SYS_getpid,
        libc::SYS_getppid,
        libc::SYS_tgkill,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigaction,
        libc::SYS_sigaltstack,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_fcntl,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_restart_syscall,
        libc::SYS_membarrier,
        libc::SYS_getrusage,
        // A thread started just before the filter (yara-x's timer) may
        // still be running glibc's thread start-up, which registers these.
        libc::SYS_rseq,
        libc::SYS_set_robust_list,
    ];
    #[cfg(target_arch = "x86_64")]
    calls.push(libc::SYS_arch_prctl);
    calls
}

/// Apply the seccomp filter to every thread of the process.
pub fn seccomp() -> Result<(), String> {
    use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};
    let arch = if cfg!(target_arch = "x86_64") {
        TargetArch::x86_64
    } else if cfg!(target_arch = "aarch64") {
        TargetArch::aarch64
    } else {
        return Err("seccomp filter not written for this architecture".into());
    };
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = allowed().into_iter().map(|c| (c, Vec::new())).collect();
    let filter = SeccompFilter::new(rules, SeccompAction::Errno(libc::EPERM as u32), SeccompAction::Allow, arch)
        .map_err(|e| format!("seccomp filter: {e}"))?;
    let program: BpfProgram = filter.try_into().map_err(|e: seccompiler::BackendError| format!("seccomp filter: {e}"))?;
    seccompiler::apply_filter_all_threads(&program).map_err(|e| format!("seccomp: {e}"))
}

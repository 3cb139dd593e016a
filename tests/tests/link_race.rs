//! A local user cannot steer the root agent through a link: for 30 s a
//! swapper exchanges a watched directory, where it keeps dropping EICAR,
//! with a link to a root-only directory holding a canary of the same name
//! (`renameat2(RENAME_EXCHANGE)`), while the service watches the tree and
//! quarantines what it finds. The canary must never be opened or read
//! (inotify `IN_OPEN`/`IN_ACCESS` on it and its directory, logged for the
//! whole run), uploaded, looked up, quarantined or deleted. Run with each
//! watch backend: inotify (the agent's own, `os::inotify`) and fanotify.

use qala_tests::{Cluster, Proc, bin, eicar, repo_root, sha256_hex, wait_for, zip_of};
use serde_json::Value;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const RACE: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// inotify on `paths` for opens, reads and changes, logged until `stop`.
fn monitor(paths: &[PathBuf], stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<String>> {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    assert!(fd >= 0);
    let mask = libc::IN_OPEN | libc::IN_ACCESS | libc::IN_ATTRIB | libc::IN_MODIFY | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF;
    let mut names = std::collections::HashMap::new();
    for p in paths {
        // SAFETY: an inotify descriptor and a valid C string.
        let wd = unsafe { libc::inotify_add_watch(fd, cstr(p).as_ptr(), mask) };
        assert!(wd >= 0, "{}", std::io::Error::last_os_error());
        names.insert(wd, p.display().to_string());
    }
    std::thread::spawn(move || {
        let mut log = Vec::new();
        let mut buf = vec![0u8; 4096];
        let started = Instant::now();
        loop {
            let done = stop.load(Ordering::Relaxed);
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            let mut off = 0usize;
            let head = std::mem::size_of::<libc::inotify_event>();
            while n > 0 && off + head <= n as usize {
                // SAFETY: a whole event; read unaligned.
                let ev: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
                let name =
                    String::from_utf8_lossy(&buf[off + head..off + head + ev.len as usize]).trim_end_matches('\0').to_string();
                log.push(format!("{:?} {} {name:?} mask {:#x}", started.elapsed(), names[&ev.wd], ev.mask));
                off += head + ev.len as usize;
            }
            if done {
                // SAFETY: fd is ours.
                unsafe { libc::close(fd) };
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

fn exchange(a: &Path, b: &Path) {
    // SAFETY: valid C strings.
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, cstr(a).as_ptr(), libc::AT_FDCWD, cstr(b).as_ptr(), libc::RENAME_EXCHANGE) };
    assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
}

fn events(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

fn race(backend: &str) {
    if !is_root() {
        eprintln!("not root: the agent's service watches as the user here; this test is about a root agent");
        return;
    }
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let d = cluster.dir.path();
    // A private tmpfs holds the tree: fanotify marks cover this mount only.
    let mnt = d.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    assert!(Command::new("mount").args(["-t", "tmpfs", "-o", "size=64m", "qala-race"]).arg(&mnt).status().unwrap().success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _umount = Unmount(mnt.clone());
    let (watched, secret) = (mnt.join("home"), mnt.join("root-only"));
    let (inbox, link) = (watched.join("inbox"), watched.join("link"));
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::create_dir(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The canary: malicious too (EICAR in a zip), so any read of it would
    // show as an upload, a lookup or a quarantine; named as the dropped file.
    let canary = secret.join("evil.com");
    let canary_bytes = zip_of(&[("payload.com", &eicar())]);
    std::fs::write(&canary, &canary_bytes).unwrap();
    let canary_sha = sha256_hex(&canary_bytes);
    let canary_meta = std::fs::metadata(&canary).unwrap();
    std::os::unix::fs::symlink(&secret, &link).unwrap();

    let config = d.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nurl = {:?}\nca = {:?}\ntoken_file = {:?}\n\n[watch]\npaths = [{:?}]\ndebounce_ms = 20\nbackend = {backend:?}\n\n[actions]\nmalicious = \"quarantine\"\n\n[paths]\nquarantine = {:?}\nspool = {:?}\nhash_cache = {:?}\ncrl_cache = {:?}\nheld = {:?}\n",
            cluster.url(),
            cluster.ca(),
            cluster.token_file("agent"),
            watched,
            d.join("quarantine"),
            d.join("spool"),
            d.join("hashes"),
            d.join("crls.pem"),
            d.join("held")
        ),
    )
    .unwrap();
    let args = ["--config".to_string(), config.display().to_string(), "service".to_string()];
    let svc = Proc::spawn(&format!("agent-{backend}"), &bin("qala-agent"), &args, d).unwrap();
    wait_for("the service to start", Duration::from_secs(30), || {
        events(&svc.log).iter().any(|e| e["event"] == "started").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", svc.log_text()));

    let stop = Arc::new(AtomicBool::new(false));
    let watching = monitor(&[secret.clone(), canary.clone()], stop.clone());
    // The swapper: drop EICAR in the real directory (wherever it is now),
    // then exchange it with the link, at uneven intervals.
    let started = Instant::now();
    let (mut swaps, mut drops, mut real_at_inbox, mut seed) = (0u64, 0u64, true, 0x2545_F491_4F6C_DD1Du64);
    while started.elapsed() < RACE {
        let real = if real_at_inbox { &inbox } else { &link };
        if std::fs::write(real.join("evil.com"), eicar()).is_ok() {
            drops += 1;
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_micros(seed % 20_000));
        exchange(&inbox, &link);
        real_at_inbox = !real_at_inbox;
        swaps += 1;
        std::thread::sleep(Duration::from_micros((seed >> 20) % 20_000));
    }
    if !real_at_inbox {
        exchange(&inbox, &link);
    }
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let touched = watching.join().unwrap();
    let ev = events(&svc.log);
    svc.terminate().unwrap();

    let count = |kind: &str| ev.iter().filter(|e| e["event"] == kind).count();
    let refused = ev.iter().filter(|e| e.to_string().contains("symbolic link")).count();
    eprintln!(
        "{backend}: {swaps} exchanges and {drops} drops in {RACE:?}; the service answered {} verdicts, took {} actions, refused {refused} paths through a link; canary touched {} times",
        count("verdict"),
        count("action"),
        touched.len()
    );
    assert!(touched.is_empty(), "the canary or its directory was opened or changed:\n{}", touched.join("\n"));
    assert!(count("action") > 0, "the race was not exercised: no quarantine of the dropped files: {}", svc_log_tail(&ev));
    // Still there, unchanged, never uploaded, looked up or quarantined.
    let now = std::fs::metadata(&canary).unwrap();
    assert_eq!((now.ino(), now.mode(), now.size()), (canary_meta.ino(), canary_meta.mode(), canary_meta.size()));
    assert_eq!(std::fs::read(&canary).unwrap(), canary_bytes);
    let audit = std::fs::read_to_string(cluster.audit_log("coordinator")).unwrap_or_default();
    assert!(!audit.is_empty() && !audit.contains(&canary_sha), "the coordinator saw the canary's digest");
    for f in std::fs::read_dir(d.join("quarantine")).map(|r| r.flatten().collect::<Vec<_>>()).unwrap_or_default() {
        let text = std::fs::read(f.path()).unwrap();
        assert!(!String::from_utf8_lossy(&text).contains(&canary_sha), "the canary was quarantined: {}", f.path().display());
    }
    assert!(!ev.iter().any(|e| e.to_string().contains("root-only")), "a path of the root-only directory was reported");
}

fn svc_log_tail(ev: &[Value]) -> String {
    ev.iter().rev().take(20).map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
}

#[test]
fn a_swapped_link_never_steers_the_inotify_watch() {
    race("inotify");
}

#[test]
fn a_swapped_link_never_steers_the_fanotify_watch() {
    race("fanotify");
}

//! Scans run in sandboxed children of the worker: a file that kills its scan
//! process costs a child, never the worker; it is retried once, alone, then
//! answered `unscannable` (`worker_crash`), put on a poison list every
//! coordinator sees, and sent to no more workers. Children cannot open files
//! or sockets, and hold no key.

use qala_tests::{Cluster, Redis, children_of, eicar, repo_root, scan_messages, sha256_hex, wait_for};
use std::io::Write;
use std::time::Duration;

/// A gzip of `mib` MiB of zeros (about 1 KiB per MiB).
fn zeros_gz(mib: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..mib {
        gz.write_all(&block).unwrap();
    }
    gz.finish().unwrap()
}

/// `zINSTREAM` of `data` to a clamd listener: its reply.
fn clamd_instream(port: u16, data: &[u8]) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"zINSTREAM\0").unwrap();
    for c in data.chunks(64 << 10) {
        s.write_all(&(c.len() as u32).to_be_bytes()).unwrap();
        s.write_all(c).unwrap();
    }
    s.write_all(&[0, 0, 0, 0]).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_kills_scan_children_is_poisoned_not_the_worker() {
    let d = tempfile::tempdir().unwrap();
    let redis = Redis::start(d.path()).unwrap();
    // A policy that lets a member decompress 150 MiB of zeros (no ratio
    // cap), and scan children with 96 MiB of heap: decoding it runs one out
    // of memory, a real crash.
    let clamd_port = qala_tests::free_port();
    let options = qala_tests::Options {
        coordinator_args: ["--max-ratio", "1000000", "--clamd-listen", &format!("127.0.0.1:{clamd_port}")]
            .map(String::from)
            .to_vec(),
        ..Default::default()
    };
    let mut cluster = Cluster::start_with(&repo_root().join("rules"), Some(&redis.url()), 0, options).unwrap();
    // (The clamd listener on the first coordinator only.)
    cluster.options.coordinator_args.truncate(2);
    let second = cluster.add_coordinator().unwrap();
    let tls = cluster.worker_tls("w1").unwrap();
    let flags = ["--tls", tls.to_str().unwrap(), "--scan-child-memory-mib", "96"].map(String::from);
    cluster.add_worker_with("w1", &flags).unwrap();
    cluster.wait_ready(1).unwrap();

    let files = tempfile::tempdir().unwrap();
    let bomb = zeros_gz(150);
    std::fs::write(files.path().join("zeros.gz"), &bomb).unwrap();
    std::fs::write(files.path().join("eicar.com"), eicar()).unwrap();
    let (code, lines) = cluster.scan(&[files.path()]).unwrap();
    assert_eq!(code, 1, "a detection: {lines:?}");
    let by_name =
        |lines: &[serde_json::Value], n: &str| lines.iter().find(|l| l["path"].as_str().unwrap().ends_with(n)).cloned().unwrap();
    let poisoned = by_name(&lines, "zeros.gz");
    assert_eq!(poisoned["verdict"], "unscannable", "{poisoned}");
    assert_eq!(poisoned["limits_hit"][0]["limit"], "worker_crash", "{poisoned}");
    assert!(poisoned["limits_hit"][0]["detail"].as_str().unwrap().contains("SIGABRT"), "{poisoned}");
    // The worker lived on and scanned the other file.
    assert_eq!(by_name(&lines, "eicar.com")["verdict"], "malicious");
    let worker = cluster.workers[0].pid();
    assert!(std::path::Path::new(&format!("/proc/{worker}")).exists(), "the worker died");
    let logs = cluster.logs();
    assert_eq!(logs.matches("replacing the scan child").count(), 2, "retried once, alone, then given up on: {logs}");

    // The next run answers it from the store: no upload, no retry.
    let (_, again) = cluster.scan(&[files.path()]).unwrap();
    let again = by_name(&again, "zeros.gz");
    assert_eq!((again["verdict"].as_str(), again["cached"].as_bool()), (Some("unscannable"), Some(true)), "{again}");
    // A clamd client (a mail gateway) is told it could not be scanned, so
    // its own on-fail policy applies (clamav-milter's: tempfail), not OK.
    let reply = clamd_instream(clamd_port, &bomb);
    assert!(
        reply.starts_with("stream: Can't scan: the scan process died on this file each time") && reply.ends_with(" ERROR\0"),
        "{reply}"
    );

    // Uploaded to the other coordinator, it goes to no worker: the stored
    // verdict answers it; and with that verdict gone (a new ruleset has
    // none), the poison list, shared by every coordinator, still does.
    let ruleset = cluster.status().unwrap()["rules"]["ruleset_id"].as_str().unwrap().to_string();
    let key = format!("qala:v1:verdict:{ruleset}:{}", sha256_hex(&bomb));
    let deleted: i64 = qala_tests::redis_cmd(redis.port, &["DEL", &key]).unwrap();
    assert_eq!(deleted, 1, "the poison file's verdict is stored (for an hour)");
    let entry: Vec<u8> = qala_tests::redis_cmd(redis.port, &["HGET", "qala:v1:poisoned", &sha256_hex(&bomb)]).unwrap();
    let entry = <qala_coordinator::store::Poisoned as prost::Message>::decode(entry.as_slice()).unwrap();
    let ttl = entry.until_ms - qala_common::now_ms();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "poison list entry for an hour: {ttl} ms");
    assert!(entry.detail.contains("SIGABRT"), "{entry:?}");
    // The worker's count of scans comes with its heartbeats: eicar.com and
    // the poison file, once each.
    let scanned = || cluster.status().ok()?["workers"][0]["scanned"].as_u64();
    let scanned_before =
        wait_for("the heartbeat's scan count", Duration::from_secs(10), || scanned().filter(|n| *n >= 2)).unwrap();
    assert_eq!(scanned_before, 2);
    let mut client = cluster.scanner_with(&second, Some("agent")).await;
    let answer = client.scan(tokio_stream::iter(scan_messages(&bomb, ""))).await.unwrap().into_inner();
    let v = answer.verdict.unwrap();
    assert_eq!((v.sha256.as_str(), v.limits_hit[0].limit.as_str()), (sha256_hex(&bomb).as_str(), "worker_crash"));
    assert!(v.errors[0].contains("poison list"), "{:?}", v.errors);
    std::thread::sleep(Duration::from_millis(2500)); // one heartbeat
    assert_eq!(scanned(), Some(scanned_before), "a poison file reached a worker");
    assert_eq!(cluster.logs().matches("replacing the scan child").count(), 2);
}

#[test]
fn scan_children_are_confined_and_replaced() {
    let mut cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let worker = cluster.workers[0].pid();
    // Loading the rules started a child per scan thread (2 here) with them,
    // before any file: the first files do not pay for the rules' compile.
    let warm = wait_for("warm scan children", Duration::from_secs(10), || Some(children_of(worker)).filter(|c| c.len() == 2));
    assert!(warm.is_ok(), "children before the first file: {:?}", children_of(worker));
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("eicar.com"), eicar()).unwrap();
    assert_eq!(cluster.scan(&[files.path()]).unwrap().0, 1);
    let children =
        wait_for("a scan child", Duration::from_secs(10), || Some(children_of(worker)).filter(|c| !c.is_empty())).unwrap();
    for child in &children {
        let status = std::fs::read_to_string(format!("/proc/{child}/status")).unwrap();
        let field = |k: &str| status.lines().find(|l| l.starts_with(k)).unwrap_or_default().to_string();
        assert!(field("Seccomp:").ends_with('2'), "seccomp filter mode: {status}");
        assert!(field("NoNewPrivs:").ends_with('1'), "{status}");
        // No descriptor but its socket, /dev/null and stderr: no TLS key
        // file, no listening or client socket of the worker's.
        let fds: Vec<String> = std::fs::read_dir(format!("/proc/{child}/fd"))
            .unwrap()
            .flatten()
            .map(|e| {
                format!("{} -> {}", e.file_name().to_string_lossy(), std::fs::read_link(e.path()).unwrap_or_default().display())
            })
            .collect();
        assert!(fds.len() <= 4, "child descriptors: {fds:?}");
        let environ = std::fs::read(format!("/proc/{child}/environ")).unwrap();
        assert!(environ.is_empty(), "the child's environment is empty");
        let limits = std::fs::read_to_string(format!("/proc/{child}/limits")).unwrap();
        assert!(limits.lines().any(|l| l.starts_with("Max data size") && l.contains(&(1024u64 << 20).to_string())), "{limits}");
    }
    // A child that dies is replaced at the next file.
    for child in &children {
        let _ = std::process::Command::new("kill").args(["-KILL", &child.to_string()]).status();
    }
    std::fs::write(files.path().join("other.txt"), b"nothing to see").unwrap();
    let (code, lines) = cluster.scan(&[files.path()]).unwrap();
    assert_eq!(code, 1, "{lines:?}");
    assert!(cluster.workers[0].is_running(), "the worker outlives its children");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_upload_is_mapped_from_disk_not_held_in_worker_memory() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let worker = cluster.workers[0].pid();
    let data = qala_tests::pseudo_random(77, 96 << 20);
    let mut client = cluster.scanner().await;
    let scan = tokio::spawn(async move { client.scan(tokio_stream::iter(scan_messages(&data, ""))).await });
    // While it is scanned, a scan child maps an unlinked file of the
    // temporary directory, not a memfd, and the worker holds no copy.
    let tmp = std::env::temp_dir().display().to_string();
    let mut seen = None;
    let mut worker_shmem_kib = 0;
    while !scan.is_finished() {
        for child in children_of(worker) {
            let maps = std::fs::read_to_string(format!("/proc/{child}/maps")).unwrap_or_default();
            if let Some(line) = maps.lines().find(|l| l.contains(&tmp) && l.ends_with("(deleted)")) {
                seen = Some(line.to_string());
            }
            assert!(!maps.contains("memfd:qala-upload"), "a 96 MiB upload was held in a memfd");
        }
        worker_shmem_kib = worker_shmem_kib.max(qala_tests::status_kib(worker, "RssShmem:"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let v = scan.await.unwrap().unwrap().into_inner().verdict.unwrap();
    assert_eq!(v.verdict, qala_proto::v1::VerdictKind::Clean as i32, "{v:?}");
    assert!(seen.is_some(), "no scan child mapped the upload from {tmp}");
    assert!(worker_shmem_kib < 16 << 10, "worker RssShmem {worker_shmem_kib} KiB");
    // Hashed by the coordinator as it arrived: the worker's resident
    // memory never took the file's pages.
    let data = qala_tests::pseudo_random(77, 96 << 20);
    assert_eq!((v.md5.as_str(), v.sha1.as_str()), (tool_hex("md5sum", &data).as_str(), tool_hex("sha1sum", &data).as_str()));
    let hwm = qala_tests::status_kib(worker, "VmHWM:");
    assert!(hwm < 200 << 10, "worker VmHWM {hwm} KiB after a 96 MiB upload");
}

/// The inode and size of a file of the temporary directory, deleted, that
/// `pid` holds a descriptor of (a kept upload file), if any.
fn held_deleted_tmp_file(pid: u32) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let tmp = std::env::temp_dir().display().to_string();
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten().find_map(|fd| {
        let target = std::fs::read_link(fd.path()).ok()?.display().to_string();
        (target.starts_with(&tmp) && target.ends_with("(deleted)")).then_some(())?;
        std::fs::metadata(fd.path()).ok().map(|m| (m.ino(), m.len()))
    })
}

/// A large upload's file is kept after its scan (no child holds it) and the
/// next large upload is written over it, cut to its own size: its scan and
/// its digests see its bytes alone, none of the earlier, longer upload's.
#[tokio::test(flavor = "multi_thread")]
async fn the_next_large_upload_is_written_over_a_kept_file_and_sees_only_its_own_bytes() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let worker = cluster.workers[0].pid();
    let mut client = cluster.scanner().await;
    assert_eq!(held_deleted_tmp_file(worker), None, "nothing kept before the first large upload");
    let first = qala_tests::pseudo_random(81, 80 << 20);
    let v = client.scan(tokio_stream::iter(scan_messages(&first, ""))).await.unwrap().into_inner().verdict.unwrap();
    assert_eq!(v.verdict, qala_proto::v1::VerdictKind::Clean as i32, "{v:?}");
    drop(first);
    let (kept, len) = held_deleted_tmp_file(worker).expect("the first upload's file is kept");
    assert_eq!(len, 80 << 20);

    let second = qala_tests::pseudo_random(82, (70 << 20) + 12_345);
    let want = (tool_hex("md5sum", &second), tool_hex("sha1sum", &second));
    let msgs = scan_messages(&second, "");
    let mut client2 = client.clone();
    let scan = tokio::spawn(async move { client2.scan(tokio_stream::iter(msgs)).await });
    let tmp = std::env::temp_dir().display().to_string();
    let mut mapped = std::collections::BTreeSet::new();
    while !scan.is_finished() {
        for child in children_of(worker) {
            let maps = std::fs::read_to_string(format!("/proc/{child}/maps")).unwrap_or_default();
            for line in maps.lines().filter(|l| l.contains(&tmp) && l.ends_with("(deleted)")) {
                mapped.extend(line.split_whitespace().nth(4).and_then(|i| i.parse::<u64>().ok()));
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let v = scan.await.unwrap().unwrap().into_inner().verdict.unwrap();
    assert_eq!(mapped.into_iter().collect::<Vec<_>>(), [kept], "the child mapped the kept file");
    assert_eq!(v.verdict, qala_proto::v1::VerdictKind::Clean as i32, "{v:?}");
    assert_eq!(v.size, second.len() as u64);
    assert_eq!((v.md5, v.sha1), want, "digests of the second upload's bytes alone");
    assert_eq!(held_deleted_tmp_file(worker), Some((kept, second.len() as u64)), "kept again, at its new length");
}

/// The lower-case hex digest a coreutils tool (`md5sum`, `sha1sum`) prints.
fn tool_hex(tool: &str, data: &[u8]) -> String {
    use std::process::{Command, Stdio};
    let mut p = Command::new(tool).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    p.stdin.take().unwrap().write_all(data).unwrap();
    String::from_utf8_lossy(&p.wait_with_output().unwrap().stdout).split_whitespace().next().unwrap().to_string()
}

/// The root's md5 and sha1 in a verdict are the content's, computed by the
/// coordinator as it receives the upload (in memory, spilled to disk, cut
/// through to the worker while arriving; the worker hashes none of the
/// root), and a cached answer carries the same.
#[tokio::test(flavor = "multi_thread")]
async fn root_digests_are_the_contents_whoever_computes_them() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let mut client = cluster.scanner().await;
    let mib = 1 << 20;
    for (seed, size) in [(1, 0), (2, 1000), (3, 8 * mib - 1), (4, 20 * mib + 3 * 65_536 + 17)] {
        let data = qala_tests::pseudo_random(seed, size);
        let want = (tool_hex("md5sum", &data), tool_hex("sha1sum", &data));
        for pass in ["fresh", "cached"] {
            let msgs = scan_messages(&data, "");
            let v = client.scan(tokio_stream::iter(msgs)).await.unwrap().into_inner().verdict.unwrap();
            assert_eq!(v.verdict, qala_proto::v1::VerdictKind::Clean as i32, "{size} bytes, {pass}: {v:?}");
            assert_eq!(v.sha256, sha256_hex(&data), "{size} bytes, {pass}");
            assert_eq!((v.md5, v.sha1), want.clone(), "{size} bytes, {pass}");
        }
    }
}

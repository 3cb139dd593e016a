//! The agent walks like a scanner: exclusions, a size cap, FIFOs and links
//! never opened, and rescans of an unchanged tree answered from its hash
//! cache without reading file content (measured by its own counters and
//! `/proc/self/io`).

use qala_tests::{Cluster, eicar, repo_root};
use serde_json::Value;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// Run the agent, killing it if it is still running after 60 s (a walk that
/// opened a FIFO would block for ever).
fn run(cluster: &Cluster, args: &[&str]) -> Output {
    let mut child = cluster
        .agent_command(&cluster.url(), "agent")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the agent hung (a FIFO opened?)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The per-file JSON lines, and the summary's counters: content bytes
/// read, files answered from the hash cache, rchar.
fn scan(cluster: &Cluster, extra: &[&str], path: &Path) -> (Vec<Value>, u64, u64, u64) {
    let mut args = vec!["scan", "--json"];
    args.extend_from_slice(extra);
    let path = path.display().to_string();
    args.push(&path);
    let out = run(cluster, &args);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let summary = String::from_utf8_lossy(&out.stderr).lines().find(|l| l.starts_with("scanned ")).unwrap().to_string();
    let number = |after: &str| -> u64 {
        let rest = &summary[summary.find(after).unwrap_or_else(|| panic!("{after:?} in {summary}")) + after.len()..];
        rest.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    };
    (lines, number("read "), number("content ("), number("rchar "))
}

fn by_name<'a>(lines: &'a [Value], name: &str) -> Option<&'a Value> {
    lines.iter().find(|l| l["path"].as_str().is_some_and(|p| p.ends_with(name)))
}

#[test]
fn exclusions_size_cap_fifos_and_links() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("notes.txt"), b"plain text").unwrap();
    std::fs::write(d.join("sub/eicar.com"), eicar()).unwrap();
    std::fs::write(d.join("disk.iso"), vec![7u8; 100_000]).unwrap();
    std::fs::write(d.join("huge.dat"), vec![1u8; 300_000]).unwrap();
    let fifo = std::ffi::CString::new(d.join("pipe").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    std::os::unix::fs::symlink("/etc/passwd", d.join("link")).unwrap();

    let (lines, ..) = scan(&cluster, &["--exclude", "*.iso", "--max-file-size", "200K"], d);
    assert_eq!(by_name(&lines, "notes.txt").unwrap()["verdict"], "clean", "{lines:?}");
    assert_eq!(by_name(&lines, "sub/eicar.com").unwrap()["verdict"], "malicious", "{lines:?}");
    let huge = by_name(&lines, "huge.dat").unwrap();
    assert_eq!(huge["verdict"], "skipped", "{huge}");
    assert!(huge["reason"].as_str().unwrap().contains("max-file-size"), "{huge}");
    for left_out in ["disk.iso", "pipe", "link"] {
        assert!(by_name(&lines, left_out).is_none(), "{left_out} must not be scanned: {lines:?}");
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    // A glob that does not parse is one clear error before anything is read.
    let out = run(&cluster, &["scan", "--exclude", "a[", d.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--exclude"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    // Named explicitly, a FIFO is reported skipped, never opened.
    let (lines, ..) = scan(&cluster, &[], &d.join("pipe"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["verdict"], "skipped", "{lines:?}");
    assert!(lines[0]["reason"].as_str().unwrap().contains("FIFO"), "{lines:?}");
}

#[test]
fn a_rescan_of_an_unchanged_tree_reads_no_file_content() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut total = 0u64;
    let mut seed: u32 = 7;
    for i in 0..40 {
        // 256 KiB of distinct, incompressible-ish content per file: 10 MiB.
        let body: Vec<u8> = (0..256 * 1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        total += body.len() as u64;
        std::fs::write(dir.path().join(format!("f{i:02}.bin")), body).unwrap();
    }
    // Files changed in the last two seconds are never cached (their stamp
    // may still move within one clock tick): let the tree settle.
    std::thread::sleep(Duration::from_millis(2100));
    let (first, read, cached, rchar_first) = scan(&cluster, &[], dir.path());
    assert_eq!(first.len(), 40);
    assert_eq!((read, cached), (total, 0), "the first scan reads everything");
    assert!(rchar_first >= total, "rchar {rchar_first} < {total}");

    let (second, read, cached, rchar) = scan(&cluster, &[], dir.path());
    assert_eq!((read, cached), (0, 40), "an unchanged tree is answered from the hash cache");
    // Everything the process read(2): the cache file, certificates, the
    // network; not the 10 MiB of content.
    assert!(rchar < total / 4, "rchar {rchar} on a rescan of {total} bytes");
    let verdicts =
        |l: &[Value]| l.iter().map(|v| (v["path"].clone(), v["sha256"].clone(), v["verdict"].clone())).collect::<Vec<_>>();
    let (mut a, mut b) = (verdicts(&first), verdicts(&second));
    a.sort_by_key(|v| v.0.to_string());
    b.sort_by_key(|v| v.0.to_string());
    assert_eq!(a, b, "the same digests and verdicts");

    // One file changed (same size, new bytes): only it is read again.
    std::thread::sleep(Duration::from_millis(10));
    let changed = dir.path().join("f07.bin");
    let mut body = std::fs::read(&changed).unwrap();
    body[0] ^= 0xFF;
    std::fs::write(&changed, &body).unwrap();
    let (third, read, cached, _) = scan(&cluster, &[], dir.path());
    assert_eq!((read, cached), (256 * 1024, 39));
    let new = by_name(&third, "f07.bin").unwrap();
    assert_eq!(new["sha256"], qala_tests::sha256_hex(&body), "{new}");

    // --no-cache reads it all again.
    let (_, read, cached, _) = scan(&cluster, &["--no-cache"], dir.path());
    assert_eq!((read, cached), (total, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn brief_answers_leave_out_executable_summaries_the_store_keeps_them() {
    use qala_proto::v1::{LookupRequest, ScanRequest, scan_request::Msg};
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let program = std::fs::read("/bin/ls").unwrap();
    let other = std::fs::read("/bin/cat").unwrap();
    std::fs::write(dir.path().join("ls"), &program).unwrap();
    // The agent's text scan uploads with brief answers.
    let (lines, ..) = tokio::task::block_in_place(|| scan(&cluster, &[], dir.path()));
    assert_eq!(lines[0]["verdict"], "clean", "{lines:?}");
    let sha = qala_tests::sha256_hex(&program);
    let mut client = cluster.scanner().await;
    let ask = |sha: &str, brief| LookupRequest { sha256: vec![sha.to_string()], brief, ..Default::default() };
    let full = client.lookup(ask(&sha, false)).await.unwrap().into_inner().verdicts.remove(0);
    let brief = client.lookup(ask(&sha, true)).await.unwrap().into_inner().verdicts.remove(0);
    assert!(!full.executables.is_empty(), "the store keeps the whole verdict: {full:?}");
    assert!(brief.executables.is_empty() && brief.object_meta.is_empty(), "{brief:?}");
    assert_eq!((brief.verdict, brief.detections.len()), (full.verdict, full.detections.len()));

    // A brief scan answer, fresh, is the whole verdict without its
    // summaries; the whole one is what a later plain scan of it gets.
    let upload = |data: &[u8], brief: bool| {
        let mut msgs = qala_tests::scan_messages(data, "");
        if let Some(ScanRequest { msg: Some(Msg::Header(h)) }) = msgs.first_mut() {
            h.brief = brief;
        }
        tokio_stream::iter(msgs)
    };
    let fresh = client.scan(upload(&other, true)).await.unwrap().into_inner();
    let fresh_verdict = fresh.verdict.unwrap();
    assert!(!fresh.cached && fresh_verdict.executables.is_empty(), "{fresh_verdict:?}");
    let again = client.scan(upload(&other, false)).await.unwrap().into_inner();
    let whole = again.verdict.unwrap();
    assert!(again.cached && !whole.executables.is_empty(), "{whole:?}");
    assert_eq!(fresh_verdict, qala_proto::v1::Verdict { executables: Vec::new(), ..whole });
}

#[test]
fn lookup_only_and_private_paths_upload_nothing() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join(".ssh")).unwrap();
    std::fs::write(d.join(".ssh/id_ed25519"), b"-----BEGIN OPENSSH PRIVATE KEY----- not a real key").unwrap();
    std::fs::write(d.join("a.txt"), b"a known file").unwrap();
    std::fs::write(d.join("eicar.com"), eicar()).unwrap();
    // A normal scan uploads what is unknown, except a private path.
    let out = run(&cluster, &["scan", "--json", d.to_str().unwrap()]);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let key = by_name(&lines, ".ssh/id_ed25519").unwrap();
    assert_eq!((key["verdict"].as_str(), key["uploaded"].as_u64()), (Some("unknown"), Some(0)), "{key}");
    assert_eq!(by_name(&lines, "a.txt").unwrap()["verdict"], "clean");
    assert_eq!(out.status.code(), Some(1), "EICAR was detected");
    // --lookup-only: known content answered, new content `unknown`, nothing sent.
    std::fs::write(d.join("new.txt"), b"content the cluster has never seen").unwrap();
    std::fs::remove_file(d.join("eicar.com")).unwrap();
    let out = run(&cluster, &["scan", "--lookup-only", d.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("a.txt: clean (cached)"), "{text}");
    assert!(text.contains("new.txt: unknown (not uploaded)"), "{text}");
    assert!(text.contains("0 uploaded (0 bytes); 0 skipped, 2 unknown"), "{text}");
    assert_eq!(out.status.code(), Some(0), "unknown is not an error: {text}");
    let (lines, ..) = scan(&cluster, &["--lookup-only"], d);
    assert_eq!(by_name(&lines, "new.txt").unwrap()["verdict"], "unknown");
}

/// `-i` prints only what is not clean (and the summary); on a terminal a
/// progress bar is drawn on standard error, never into a pipe.
#[test]
fn infected_only_output_and_a_progress_bar_on_a_terminal() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..50 {
        std::fs::write(d.join(format!("clean{i}.txt")), format!("clean file {i}")).unwrap();
    }
    std::fs::write(d.join("eicar.com"), eicar()).unwrap();
    let out = run(&cluster, &["scan", "-i", &d.display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one detection and the summary: {text}");
    assert!(lines[0].contains("eicar.com") && lines[0].contains("malicious"), "{text}");
    assert!(lines[1].starts_with("scanned 51 files"), "{text}");
    // Not a terminal: no progress bar in the output.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("files,"), "{}", String::from_utf8_lossy(&out.stderr));

    // A terminal (script(1) gives the agent a pseudo-terminal).
    let cmd = cluster.agent_command(&cluster.url(), "agent");
    let mut line = vec![cmd.get_program().to_string_lossy().into_owned()];
    line.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    line.extend(["scan".into(), "--no-cache".into(), d.display().to_string()]);
    let shell = line.iter().map(|a| format!("'{a}'")).collect::<Vec<_>>().join(" ");
    let tty = std::process::Command::new("script")
        .args(["-qec", &shell, "/dev/null"])
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&tty.stdout);
    assert!(shown.contains("51 files, 1 detected"), "no progress bar on a terminal:\n{shown}");
}

/// `qala-agent setup` (what the MSI runs) with bad and empty input: a CA
/// file that is not a certificate is refused and nothing is written;
/// empty values (MSI properties not given) change nothing; a join token
/// the coordinator cannot take yet is kept, private, for the service.
#[test]
fn setup_refuses_a_bad_ca_ignores_empty_values_and_keeps_a_join_token_it_cannot_use() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let config = d.path().join("etc/agent.toml");
    let setup = |args: &[&str]| {
        std::process::Command::new(qala_tests::bin("qala-agent"))
            .arg("--config")
            .arg(&config)
            .arg("setup")
            .args(args)
            .output()
            .unwrap()
    };
    let junk = d.path().join("junk.pem");
    std::fs::write(&junk, b"\x00\x01 not a certificate").unwrap();
    let out = setup(&["--server", "https://q.example:7000", "--ca-file", junk.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a PEM certificate"));
    assert!(!config.exists(), "nothing written on a refusal");
    let out = setup(&["--server", "https://127.0.0.1:1", "--ca-file", "", "--join-token", ""]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let written = std::fs::read_to_string(&config).unwrap();
    let out = setup(&["--server", "", "--ca-file", "", "--join-token", ""]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read_to_string(&config).unwrap(), written, "empty values change nothing");
    assert!(written.contains("url = \"https://127.0.0.1:1\""), "{written}");
    let dir_mode = std::fs::metadata(config.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700);
    // Nothing listens there: the token waits for the service.
    let out = setup(&["--join-token", "qala_join_token_for_later"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not enrolled yet"), "{}", String::from_utf8_lossy(&out.stdout));
    let pending = d.path().join("etc/join.token");
    assert_eq!(std::fs::read_to_string(&pending).unwrap().trim(), "qala_join_token_for_later");
    assert_eq!(std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777, 0o600);
}

//! End-to-end: coordinator + two workers + agent as real processes, on the
//! embedded store and on a real redis-server.

use qala_tests::{Cluster, Redis, RedisCluster, RedisSentinel, eicar, repo_root, sha256_hex, wait_for, zip_of};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// A tree with EICAR bare and nested, clean files, and duplicate content.
fn make_tree(root: &Path, distinct_clean: usize) {
    std::fs::create_dir_all(root.join("docs/deeper")).unwrap();
    std::fs::write(root.join("eicar.com"), eicar()).unwrap();
    let inner = zip_of(&[("readme.txt", b"inner readme"), ("eicar.com", &eicar())]);
    std::fs::write(root.join("nested.zip"), zip_of(&[("inner.zip", &inner), ("notes.txt", b"notes")])).unwrap();
    for i in 0..distinct_clean {
        std::fs::write(root.join(format!("docs/clean-{i}.txt")), format!("report number {i}\n").repeat(i + 1)).unwrap();
    }
    // Same content as clean-0: uploaded once, answered twice.
    std::fs::write(root.join("docs/deeper/copy-of-clean-0.txt"), "report number 0\n").unwrap();
    std::fs::write(root.join("docs/.hidden"), b"\x00\x01binary\xff").unwrap();
    std::fs::write(root.join("docs/empty"), b"").unwrap();
}

fn by_name<'a>(lines: &'a [Value], suffix: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["path"].as_str().unwrap().ends_with(suffix))
        .unwrap_or_else(|| panic!("no line for {suffix}: {lines:#?}"))
}

fn suite(store: Option<&str>) {
    let cluster = Cluster::start(&repo_root().join("rules"), store, 2).unwrap();
    let tree = tempfile::tempdir().unwrap();
    make_tree(tree.path(), 24);
    let files = 24 + 5;

    // First scan: everything uploaded (duplicates once), verdicts right.
    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(lines.len(), files, "{lines:#?}\n{}", cluster.logs());
    assert_eq!(code, 1, "exit code 1 when something is detected");

    let e = by_name(&lines, "/eicar.com");
    assert_eq!(e["verdict"], "malicious");
    assert_eq!(e["sha256"], sha256_hex(&eicar()));
    assert_eq!(e["detections"][0]["rule"], "EICAR_Test_File");
    assert_eq!(e["detections"][0]["namespace"], "eicar");
    assert_eq!(e["detections"][0]["object"], "eicar.com");
    assert_eq!(e["cached"], false);
    assert_eq!(e["uploaded"], eicar().len());
    assert_eq!(e["limits_hit"], serde_json::json!([]));

    let n = by_name(&lines, "/nested.zip");
    assert_eq!(n["verdict"], "malicious");
    let objects: Vec<&str> = n["detections"].as_array().unwrap().iter().map(|d| d["object"].as_str().unwrap()).collect();
    assert_eq!(objects, ["nested.zip/inner.zip/eicar.com"]);
    assert_eq!(n["file_type"], "zip");

    for l in &lines {
        let p = l["path"].as_str().unwrap();
        if !p.ends_with("eicar.com") && !p.ends_with("nested.zip") {
            assert_eq!(l["verdict"], "clean", "{l}");
            assert!(l["detections"].as_array().unwrap().is_empty());
        }
        assert!(l["ruleset_id"].as_str().unwrap().len() == 32, "{l}");
        assert!(l.get("error").is_none(), "{l}");
    }
    // Identical content was uploaded once.
    let uploads_of_clean0: Vec<u64> = lines
        .iter()
        .filter(|l| l["path"].as_str().unwrap().ends_with("clean-0.txt"))
        .map(|l| l["uploaded"].as_u64().unwrap())
        .collect();
    assert_eq!(uploads_of_clean0.iter().filter(|&&u| u > 0).count(), 1, "{uploads_of_clean0:?}");

    // Both workers took part; each sha256 went to one.
    let workers: HashSet<&str> = lines.iter().filter_map(|l| l["worker_id"].as_str()).collect();
    assert_eq!(workers, HashSet::from(["w1", "w2"]), "files were not spread over both workers");

    // Second scan: nothing uploaded, everything cached, same verdicts.
    let (code2, again) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(code2, 1);
    assert_eq!(again.len(), files);
    for (a, b) in lines.iter().zip(&again) {
        assert_eq!(a["path"], b["path"]);
        assert_eq!(a["verdict"], b["verdict"]);
        assert_eq!(b["cached"], true, "{b}");
        assert_eq!(b["uploaded"], 0, "{b}");
    }

    // lookup by hash.
    let out = cluster.agent(&["lookup", "--json", &sha256_hex(&eicar())]).unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "malicious");
    assert_eq!(v["detections"][0]["rule"], "EICAR_Test_File");
    assert_eq!(out.status.code(), Some(1));
    let unknown = sha256_hex(b"never uploaded");
    let out = cluster.agent(&["lookup", &unknown]).unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{unknown}: unknown"));
    assert_eq!(out.status.code(), Some(0));

    // A clean-only scan exits 0; a missing path is an error (exit 2), not silence.
    let (code, clean) = cluster.scan(&[&tree.path().join("docs/clean-3.txt")]).unwrap();
    assert_eq!((code, clean.len()), (0, 1));
    let (code, missing) = cluster.scan(&[&tree.path().join("does-not-exist")]).unwrap();
    assert_eq!(code, 2);
    assert_eq!(missing[0]["verdict"], "error");
}

#[test]
fn end_to_end_on_embedded_store() {
    suite(None);
}

#[test]
fn end_to_end_on_redis() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path()).unwrap();
    suite(Some(&redis.url()));
}

#[test]
fn end_to_end_on_redis_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start(dir.path(), 3).unwrap();
    suite(Some(&cluster.url()));
}

#[test]
fn end_to_end_on_redis_sentinel() {
    let dir = tempfile::tempdir().unwrap();
    let group = RedisSentinel::start(dir.path()).unwrap();
    suite(Some(&group.url()));
}

#[test]
fn embedded_verdicts_survive_a_coordinator_restart() {
    let mut cluster = Cluster::start(&repo_root().join("rules"), None, 2).unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("eicar.com"), eicar()).unwrap();
    let (code, _) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(code, 1);

    let status = cluster.coordinator.take().unwrap().terminate().unwrap();
    assert!(status.success(), "coordinator exit on SIGTERM: {status:?}");
    cluster.start_coordinator().unwrap();
    cluster.wait_ready(2).unwrap();

    let out = cluster.agent(&["lookup", "--json", &sha256_hex(&eicar())]).unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}\n{}", cluster.logs()));
    assert_eq!(v["verdict"], "malicious", "{v}");
    let (_, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(lines[0]["cached"], true);
}

#[test]
fn placement_is_stable_per_sha256() {
    let mut cluster = Cluster::start(&repo_root().join("rules"), None, 2).unwrap();
    let tree = tempfile::tempdir().unwrap();
    for i in 0..20 {
        std::fs::write(tree.path().join(format!("f{i}")), format!("content {i}")).unwrap();
    }
    let (_, first) = cluster.scan(&[tree.path()]).unwrap();
    let placed: HashMap<String, String> =
        first.iter().map(|l| (l["sha256"].as_str().unwrap().into(), l["worker_id"].as_str().unwrap().into())).collect();
    let used: HashSet<&String> = placed.values().collect();
    assert_eq!(used.len(), 2, "{placed:?}");

    // A new coordinator with an empty store sends everything again: each
    // file lands on the same worker as before.
    cluster.coordinator.take().unwrap().terminate().unwrap();
    cluster.store = format!("embedded:{}", cluster.dir.path().join("second.redb").display());
    cluster.add_token_offline("admin", "admin").unwrap();
    cluster.add_token_offline("agent", "agent").unwrap();
    cluster.start_coordinator().unwrap();
    cluster.wait_ready(2).unwrap();
    let (_, second) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(second.len(), 20);
    for l in &second {
        assert_eq!(l["cached"], false, "{l}");
        assert_eq!(placed[l["sha256"].as_str().unwrap()], l["worker_id"].as_str().unwrap(), "{l}");
    }
}

#[test]
fn broken_rule_file_is_reported_and_old_rules_stay() {
    let rules = tempfile::tempdir().unwrap();
    copy_bundled_rules(rules.path());
    let cluster = Cluster::start(rules.path(), None, 2).unwrap();
    let before = cluster.status().unwrap()["rules"]["ruleset_id"].as_str().unwrap().to_string();

    std::fs::write(rules.path().join("broken.yar"), "rule broken { strings: $a = \"x\" condition: $a and undefined_thing }")
        .unwrap();
    let failed = wait_for("reload failure reported", Duration::from_secs(20), || {
        let s = cluster.status().ok()?;
        (!s["rules"]["last_errors"].as_array()?.is_empty()).then_some(s)
    })
    .unwrap();
    let err = &failed["rules"]["last_errors"][0];
    assert!(err["path"].as_str().unwrap().ends_with("broken.yar"), "{err}");
    assert!(err["message"].as_str().unwrap().contains("undefined_thing"), "{err}");
    assert_eq!(failed["rules"]["ruleset_id"], before.as_str(), "old rules stay in force");
    assert!(cluster.coordinator.as_ref().unwrap().log_text().contains("broken.yar"));

    // Still detecting with the old rules (new content, so not from cache).
    let tree = tempfile::tempdir().unwrap();
    let mut padded = eicar();
    padded.extend_from_slice(b"   \r\n");
    std::fs::write(tree.path().join("eicar-padded.com"), &padded).unwrap();
    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines[0]["verdict"], "malicious");
    assert_eq!(lines[0]["ruleset_id"], before.as_str());
    assert_eq!(lines[0]["cached"], false);

    // Fixing the file brings in new rules, shipped to both workers.
    std::fs::write(
        rules.path().join("broken.yar"),
        "rule fixed_marker : suspicious { strings: $a = \"qala-marker-7781\" condition: $a }",
    )
    .unwrap();
    let after = wait_for("fixed rules in force", Duration::from_secs(30), || {
        let s = cluster.status().ok()?;
        let id = s["rules"]["ruleset_id"].as_str()?.to_string();
        let workers_have_it = s["workers"].as_array()?.iter().all(|w| w["ruleset_id"] == id.as_str());
        (id != before && workers_have_it && s["rules"]["last_errors"].as_array()?.is_empty()).then_some(id)
    })
    .unwrap();
    std::fs::write(tree.path().join("marker.txt"), "this has qala-marker-7781 inside").unwrap();
    let (_, lines) = cluster.scan(&[&tree.path().join("marker.txt")]).unwrap();
    assert_eq!(lines[0]["verdict"], "suspicious", "{}", lines[0]);
    assert_eq!(lines[0]["ruleset_id"], after.as_str());
    // The old verdict is not served as current under the new rules.
    let (_, lines) = cluster.scan(&[&tree.path().join("eicar-padded.com")]).unwrap();
    assert_eq!(lines[0]["cached"], false);
    assert_eq!(lines[0]["ruleset_id"], after.as_str());
}

/// A Kubernetes ConfigMap mounted as the rules directory: `..data` links to
/// a timestamped directory holding the files, and each key is a link
/// through `..data`. Each rule is compiled once, with the plain folder's
/// ruleset id; an update swaps `..data` to a new directory, as the kubelet
/// does, and the running coordinator reloads to one copy of each new rule.
#[test]
fn a_configmap_rules_volume_compiles_each_rule_once_and_follows_its_updates() {
    use std::os::unix::fs::symlink;
    let plain = tempfile::tempdir().unwrap();
    copy_bundled_rules(plain.path());
    let names: Vec<String> =
        std::fs::read_dir(plain.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("eicar.com"), eicar()).unwrap();
    let (want, want_detections) = {
        let cluster = Cluster::start(plain.path(), None, 1).unwrap();
        let (_, lines) = cluster.scan(&[tree.path()]).unwrap();
        (cluster.status().unwrap()["rules"].clone(), lines[0]["detections"].clone())
    };

    let volume = tempfile::tempdir().unwrap();
    let first = volume.path().join("..2026_12_01_10_00_00.123456789");
    std::fs::create_dir(&first).unwrap();
    copy_bundled_rules(&first);
    symlink(first.file_name().unwrap(), volume.path().join("..data")).unwrap();
    for n in &names {
        symlink(Path::new("..data").join(n), volume.path().join(n)).unwrap();
    }
    let cluster = Cluster::start_with_poll(volume.path(), None, 1, 200).unwrap();
    let got = cluster.status().unwrap()["rules"].clone();
    assert_eq!(got["ruleset_id"], want["ruleset_id"], "the plain folder's ruleset id: {got}");
    assert_eq!((&got["rule_count"], &got["file_count"]), (&want["rule_count"], &want["file_count"]), "each rule once: {got}");

    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines[0]["detections"], want_detections, "each rule matched once, as in the plain folder");

    // The update: a new directory with one rule more, `..data` swapped to it
    // at once (a rename over the link), the new key's link added.
    let second = volume.path().join("..2026_12_02_10_00_00.987654321");
    std::fs::create_dir(&second).unwrap();
    copy_bundled_rules(&second);
    std::fs::write(second.join("marker.yar"), "rule configmap_marker { strings: $a = \"qala-configmap-5521\" condition: $a }")
        .unwrap();
    symlink(second.file_name().unwrap(), volume.path().join("..data_tmp")).unwrap();
    std::fs::rename(volume.path().join("..data_tmp"), volume.path().join("..data")).unwrap();
    symlink(Path::new("..data").join("marker.yar"), volume.path().join("marker.yar")).unwrap();
    std::fs::remove_dir_all(&first).unwrap();
    let rule_count = want["rule_count"].as_u64().unwrap();
    let after = wait_for("the updated rules in force", Duration::from_secs(30), || {
        let s = cluster.status().ok()?;
        let r = &s["rules"];
        let id = r["ruleset_id"].as_str()?.to_string();
        (id != want["ruleset_id"].as_str()? && s["workers"][0]["ruleset_id"] == id.as_str()).then(|| r.clone())
    })
    .unwrap();
    assert_eq!(after["rule_count"].as_u64(), Some(rule_count + 1), "one copy of each new rule: {after}");
    assert_eq!(after["file_count"].as_u64(), Some(names.len() as u64 + 1), "{after}");
    std::fs::write(tree.path().join("marker.txt"), "qala-configmap-5521").unwrap();
    let (_, lines) = cluster.scan(&[&tree.path().join("marker.txt")]).unwrap();
    let rules: Vec<&str> = lines[0]["detections"].as_array().unwrap().iter().filter_map(|d| d["rule"].as_str()).collect();
    assert_eq!(rules, ["configmap_marker"], "{}", lines[0]);
}

fn copy_bundled_rules(to: &Path) {
    for f in std::fs::read_dir(repo_root().join("rules")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn sighup_reloads_rules_at_once() {
    let rules = tempfile::tempdir().unwrap();
    copy_bundled_rules(rules.path());
    // Polling every hour: only the signal can explain a reload.
    let cluster = Cluster::start_with_poll(rules.path(), None, 1, 3_600_000).unwrap();
    let before = cluster.status().unwrap()["rules"]["ruleset_id"].as_str().unwrap().to_string();
    std::fs::write(rules.path().join("extra.yar"), "rule hup_marker { strings: $a = \"qala-hup-4411\" condition: $a }").unwrap();
    let pid = cluster.coordinator.as_ref().unwrap().pid();
    std::process::Command::new("kill").args(["-HUP", &pid.to_string()]).status().unwrap();
    let after = wait_for("reload after SIGHUP", Duration::from_secs(20), || {
        let s = cluster.status().ok()?;
        let id = s["rules"]["ruleset_id"].as_str()?.to_string();
        (id != before && s["workers"][0]["ruleset_id"] == id.as_str()).then_some(id)
    })
    .unwrap();
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("m.txt"), "qala-hup-4411").unwrap();
    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!(code, 1);
    assert_eq!(lines[0]["detections"][0]["rule"], "hup_marker");
    assert_eq!(lines[0]["ruleset_id"], after.as_str());
}

#[test]
fn reversinglabs_rules_load_in_the_cluster() {
    let cluster = Cluster::start(&repo_root().join("tests/data/reversinglabs"), None, 1).unwrap();
    let s = cluster.status().unwrap();
    assert!(s["rules"]["rule_count"].as_u64().unwrap() > 1000, "{s}");
    let tree = tempfile::tempdir().unwrap();
    std::fs::write(tree.path().join("a.txt"), "hello").unwrap();
    let (code, lines) = cluster.scan(&[tree.path()]).unwrap();
    assert_eq!((code, lines[0]["verdict"].as_str()), (0, Some("clean")));
}

/// Peak resident memory (VmHWM) of a running process, in KiB.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn large_files_are_streamed_not_held_in_agent_memory() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let tree = tempfile::tempdir().unwrap();
    let size: usize = 128 << 20;
    // Incompressible-looking content (an LCG), written in pieces.
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(tree.path().join("big.bin")).unwrap());
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let mut buf = Vec::with_capacity(1 << 20);
        for _ in 0..size / (1 << 20) {
            buf.clear();
            for _ in 0..(1 << 17) {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                buf.extend_from_slice(&x.to_le_bytes());
            }
            std::io::Write::write_all(&mut f, &buf).unwrap();
        }
    }
    let mut child = cluster
        .agent_command(&cluster.url(), "agent")
        .args(["scan", "--json"])
        .arg(tree.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    while child.try_wait().unwrap().is_none() {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    let line: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}\n{}", cluster.logs()));
    assert_eq!(line["verdict"], "clean", "{line}");
    assert_eq!(line["uploaded"], size as u64);
    assert_eq!(line["size"], size as u64);
    assert!(peak > 0, "agent memory was never sampled");
    assert!(peak < 64 * 1024, "agent peak RSS {peak} KiB for a {} MiB file", size >> 20);
}

//! Hunts on real processes: content agents hold, clean under the old
//! rules, is judged again when a rule that matches it comes into force.
//! One holder uploads it once; every holder acts on the new verdict; a
//! lookup-only agent is never asked; a private path is declined; the
//! coordinator restarted mid-hunt finishes it; agent and analyst tokens
//! cannot start one; a hunt with nothing new to find uploads nothing.

use qala_tests::fleet::{Agent, agent};
use qala_tests::{Cluster, Options, pseudo_random, repo_root, sha256_hex, wait_for};
use serde_json::Value;
use std::time::Duration;

const MARKER: &[u8] = b"QALA-HUNT-TEST-MARKER-5d1c9e";

/// `qala-coordinator hunt ARGS --json` as the token `who`: the JSON lines
/// printed, or the error text.
fn hunt(cluster: &Cluster, who: &str, args: &[&str]) -> Result<Vec<Value>, String> {
    let (ca, token) = (cluster.ca().display().to_string(), cluster.token_file(who).display().to_string());
    let mut all: Vec<&str> = vec!["hunt"];
    all.extend_from_slice(args);
    let url = cluster.url();
    all.extend(["--json", "--server", &url, "--ca", &ca, "--token-file", &token]);
    let out = std::process::Command::new(qala_tests::bin("qala-coordinator")).args(&all).output().unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect())
}

fn status(cluster: &Cluster, id: &str) -> Value {
    hunt(cluster, "analyst", &["status", id]).unwrap().remove(0)
}

fn n(v: &Value, field: &str) -> u64 {
    v[field].as_u64().unwrap_or_else(|| panic!("{field} in {v}"))
}

/// Uploads of `sha` the coordinators scanned (not answered from the store).
fn scans_of(cluster: &Cluster, sha: &str) -> usize {
    let names = ["coordinator", "coordinator-2"];
    let lines: String = names.iter().map(|n| std::fs::read_to_string(cluster.audit_log(n)).unwrap_or_default()).collect();
    lines
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "scan" && e["sha256"] == sha && e["cached"] == false && e["what_if"].is_null())
        .count()
}

fn audit_events(cluster: &Cluster, event: &str) -> Vec<Value> {
    let names = ["coordinator", "coordinator-2"];
    let lines: String = names.iter().map(|n| std::fs::read_to_string(cluster.audit_log(n)).unwrap_or_default()).collect();
    lines.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|e| e["event"] == event).collect()
}

fn acted(a: &Agent, file: &str) -> Value {
    wait_for(&format!("{} to act on {file}", a.proc.name), Duration::from_secs(60), || a.action_on(file))
        .unwrap_or_else(|e| panic!("{e}: {}", a.proc.log_text()))
}

/// A copy of the repository's rules, to add one to.
fn rules() -> tempfile::TempDir {
    let rules = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(repo_root().join("rules")).unwrap().flatten() {
        std::fs::copy(f.path(), rules.path().join(f.file_name())).unwrap();
    }
    rules
}

/// Every coordinator's flags (REST on `port`: one coordinator only).
fn options(port: Option<u16>) -> Options {
    let mut options = Options::default();
    options.coordinator_args.extend(["--hunt-ask-timeout-secs", "20"].map(String::from));
    if let Some(port) = port {
        options.coordinator_args.extend(["--http-listen".to_string(), format!("127.0.0.1:{port}")]);
    }
    options
}

#[test]
fn a_hunt_finds_what_new_rules_catch_on_every_holder_and_survives_a_restart() {
    let (port, rules) = (qala_tests::free_port(), rules());
    let mut cluster = Cluster::start_with(rules.path(), None, 1, options(Some(port))).unwrap();
    let url = cluster.url();
    hunt_flow(&mut cluster, &url, rules.path(), Some(port));
}

/// The same through Redis with two coordinators: the agents sit on the
/// second, the hunt is started at (and restarted with) the first.
#[test]
fn a_hunt_crosses_coordinators_through_redis() {
    let redis_dir = tempfile::tempdir().unwrap();
    let redis = qala_tests::Redis::start(redis_dir.path()).unwrap();
    let rules = rules();
    let mut cluster = Cluster::start_with(rules.path(), Some(&redis.url()), 0, options(None)).unwrap();
    let second = cluster.add_coordinator().unwrap();
    cluster.add_worker("w1").unwrap();
    cluster.wait_ready(1).unwrap();
    cluster.wait_ready_at(&second, 1).unwrap();
    hunt_flow(&mut cluster, &second, rules.path(), None);
}

/// Agents on `url`; the hunt at the first coordinator (REST on `port`, if given).
fn hunt_flow(cluster: &mut Cluster, url: &str, rules: &std::path::Path, port: Option<u16>) {
    for (role, name) in [("agent", "agent-a"), ("agent", "agent-b"), ("agent", "agent-l"), ("analyst", "analyst")] {
        cluster.add_token(role, name).unwrap();
    }
    // Y: clean under the old rules, caught by the new one; Z1-Z3 clean
    // under both; P only on A's private path; W only on the lookup-only agent.
    let mut y = pseudo_random(0x61, 4000);
    y.extend_from_slice(MARKER);
    let zs: Vec<Vec<u8>> = (0..3).map(|i| pseudo_random(0x70 + i, 2000 + 100 * i as usize)).collect();
    let (p, w) = (pseudo_random(0x81, 1500), pseudo_random(0x82, 1600));
    let sy = sha256_hex(&y);
    // Every coordinator knows the new tokens.
    for u in cluster.urls() {
        for name in ["agent-a", "agent-b", "agent-l"] {
            wait_for(&format!("{u} to know {name}"), Duration::from_secs(30), || {
                let out = cluster.agent_as(&u, name, &["lookup", &"0".repeat(64)]).unwrap();
                (out.status.code() != Some(2)).then_some(())
            })
            .unwrap();
        }
    }
    let a_files: Vec<(&str, &[u8])> =
        vec![("y.bin", &y), ("z1.bin", &zs[0]), ("z2.bin", &zs[1]), ("z3.bin", &zs[2]), ("private/p.bin", &p)];
    let a = agent(cluster, url, "agent-a", &a_files, "upload_exclude = [\"**/private/**\"]", "quarantine");
    let b = agent(cluster, url, "agent-b", &[("y.bin", &y)], "", "quarantine");
    let l = agent(cluster, url, "agent-l", &[("y.bin", &y), ("w.bin", &w)], "lookup_only = true", "quarantine");
    assert_eq!(scans_of(cluster, &sy), 1, "Y was scanned once, clean, under the old rules");

    // Only admins start hunts; analysts read them.
    for who in ["agent-a", "analyst"] {
        let e = hunt(cluster, who, &["start", "--dry-run"]).unwrap_err();
        assert!(e.contains("PermissionDenied"), "{who}: {e}");
    }
    // Before the rule: only what was never scanned is unknown (P, W).
    // (sightings reach the store within a second or so: each coordinator
    // writes them in batches)
    let dry = wait_for("P and W in scope", Duration::from_secs(15), || {
        let d = hunt(cluster, "admin", &["start", "--dry-run"]).unwrap().remove(0);
        (n(&d, "in_scope") == 2).then_some(d)
    })
    .unwrap();
    assert_eq!(n(&dry, "size_unknown"), 2, "{dry}");
    assert_eq!(dry["state"], "dry run");
    assert!(hunt(cluster, "analyst", &["status"]).unwrap().is_empty(), "a dry run queues nothing");

    // A rule that matches Y comes into force: all six contents are unknown now.
    let marker = String::from_utf8_lossy(MARKER);
    std::fs::write(rules.join("hunt.yar"), format!("rule Hunt_Test_Marker {{ strings: $m = \"{marker}\" condition: $m }}\n"))
        .unwrap();
    let dry = wait_for("the new rules in force", Duration::from_secs(60), || {
        let d = hunt(cluster, "admin", &["start", "--dry-run"]).unwrap().remove(0);
        (n(&d, "in_scope") == 6).then_some(d)
    })
    .unwrap();
    let known: u64 = [y.len(), zs[0].len(), zs[1].len(), zs[2].len()].iter().map(|l| *l as u64).sum();
    assert_eq!((n(&dry, "bytes_in_scope"), n(&dry, "size_unknown")), (known, 2), "{dry}");

    // The hunt, slowly (one upload asked every 2 s), with the coordinator
    // restarted once it has rescanned something.
    let started = hunt(cluster, "admin", &["start", "--since", "1h", "--rate", "0.5"]).unwrap().remove(0);
    assert_eq!((n(&started, "in_scope"), started["state"].as_str()), (6, Some("queued")), "the scope is printed first");
    let id = started["id"].as_str().unwrap().to_string();
    wait_for("the hunt to rescan something", Duration::from_secs(60), || {
        let s = status(cluster, &id);
        (n(&s, "rescanned") >= 1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", status(cluster, &id), cluster.logs()));
    let before = status(cluster, &id);
    assert_eq!(before["state"], "running", "{before}");
    cluster.coordinator.take().unwrap().terminate().unwrap();
    cluster.start_coordinator().unwrap();
    cluster.wait_ready(1).unwrap();
    let done = wait_for("the hunt to finish after the restart", Duration::from_secs(180), || {
        let s = hunt(cluster, "analyst", &["status", &id]).ok()?.remove(0);
        (s["state"] == "done").then_some(s)
    })
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", status(cluster, &id), cluster.logs()));
    println!("before the restart: {before}\nafter: {done}");
    assert_eq!(n(&done, "rescanned") + n(&done, "judged_meanwhile"), 4, "Y, Z1, Z2, Z3: {done}");
    assert_eq!(n(&done, "changed"), 1, "Y only: {done}");
    assert_eq!(n(&done, "declined"), 1, "P is on a private path: {done}");
    assert_eq!(n(&done, "no_holder_online"), 1, "W is held by the lookup-only agent only: {done}");
    assert_eq!(n(&done, "unanswered"), 0, "{done}");

    // Every holder of Y acts on the new verdict, the lookup-only one too;
    // Y was uploaded once more in all (by one of them).
    for ag in [&a, &b, &l] {
        let act = acted(ag, "y.bin");
        assert_eq!((act["action"].as_str(), act["sha256"].as_str()), (Some("quarantine"), Some(sy.as_str())), "{act}");
        assert!(!ag.home.join("y.bin").exists());
    }
    assert_eq!(scans_of(cluster, &sy), 2, "Y uploaded and scanned once by the hunt");
    for f in ["z1.bin", "z2.bin", "z3.bin", "private/p.bin"] {
        assert!(a.home.join(f).exists() && a.action_on(f).is_none(), "{f} is clean");
    }
    // Nobody asked the lookup-only agent; A declined P itself.
    let asks = audit_events(cluster, "hunt_ask");
    assert!(!asks.is_empty() && asks.iter().all(|e| e["agent_id"] != "agent-l"), "{asks:?}");
    assert!(l.events().iter().all(|e| e["event"] != "hunt_upload" && e["event"] != "hunt_declined"));
    let declined: Vec<Value> = a.events().into_iter().filter(|e| e["event"] == "hunt_declined").collect();
    // (once, or again if the restart came between its answer and the
    // hunt's next save)
    assert!(!declined.is_empty(), "{}", a.proc.log_text());
    assert_eq!(declined[0]["sha256"], sha256_hex(&p).as_str());
    assert_eq!(declined[0]["reason"], "held only on private paths");

    if let Some(port) = port {
        // REST: analysts read hunts, agents do not, analysts start none.
        let curl = |who: &str, method: &str, path: &str| {
            let body = (method == "POST").then_some("{\"dry_run\": true}");
            qala_tests::fleet::rest(cluster, port, method, path, who, body)
        };
        let (code, v) = curl("analyst", "GET", &format!("/v1/hunts/{id}"));
        assert_eq!((code, v["state"].as_str(), v["changed"].as_u64()), (200, Some("done"), Some(1)), "{v}");
        assert_eq!(curl("agent-a", "GET", &format!("/v1/hunts/{id}")).0, 403);
        assert_eq!(curl("analyst", "POST", "/v1/hunts").0, 403);
        let (code, v) = curl("admin", "POST", "/v1/hunts");
        assert_eq!(
            (code, v["state"].as_str(), v["in_scope"].as_u64()),
            (200, Some("dry run"), Some(2)),
            "P and W stay unknown: {v}"
        );
    }

    // A what-if hunt with a rule that matches Z1 only: every content in
    // the window is scanned with it, Z1 is reported, nothing changes.
    let sz: Vec<String> = zs.iter().map(|z| sha256_hex(z)).collect();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("broken.yar"), "rule broken {\n  condition: no_such_thing\n}\n").unwrap();
    let e = hunt(cluster, "admin", &["start", "--rules", &bad.display().to_string()]).unwrap_err();
    assert!(e.contains("InvalidArgument") && e.contains("broken.yar") && e.contains("no_such_thing"), "{e}");
    let good = dir.path().join("good");
    std::fs::create_dir(&good).unwrap();
    let z1_hex: String = zs[0][..24].iter().map(|b| format!("{b:02x} ")).collect();
    std::fs::write(good.join("z.yar"), format!("rule What_If_Z1 {{ strings: $z = {{ {z1_hex}}} condition: $z }}\n")).unwrap();
    let e = hunt(cluster, "analyst", &["start", "--rules", &good.display().to_string()]).unwrap_err();
    assert!(e.contains("PermissionDenied"), "{e}");
    let wi =
        hunt(cluster, "admin", &["start", "--since", "1h", "--rate", "50", "--rules", &good.display().to_string(), "--wait"])
            .unwrap();
    let last = wi.last().unwrap();
    println!("what-if: {last}");
    assert_eq!(
        (last["state"].as_str(), last["what_if"].as_bool(), n(last, "what_if_rules")),
        (Some("done"), Some(true), 1),
        "{last}"
    );
    assert_eq!((n(last, "rescanned"), n(last, "matched"), n(last, "changed")), (3, 1, 0), "Z1-Z3 scanned, Z1 matched: {last}");
    assert_eq!(n(last, "in_scope"), n(last, "rescanned") + n(last, "declined") + n(last, "no_holder_online"), "{last}");
    let id = last["id"].as_str().unwrap();
    let matches = hunt(cluster, "analyst", &["matches", id]).unwrap();
    assert_eq!(matches.len(), 1, "{matches:?}");
    assert_eq!((matches[0]["sha256"].as_str(), &matches[0]["rules"]), (Some(sz[0].as_str()), &serde_json::json!(["What_If_Z1"])));
    // No verdict changed: Z1 is still clean and where it was, its verdict
    // scanned once (the what-if scans are not verdicts).
    let out = cluster.agent_as(url, "agent-a", &["lookup", &sz[0]]).unwrap();
    assert_eq!(out.status.code(), Some(0), "Z1 is clean: {}", String::from_utf8_lossy(&out.stdout));
    assert!(a.home.join("z1.bin").exists() && a.action_on("z1.bin").is_none());
    for z in &sz {
        assert_eq!(scans_of(cluster, z), 2, "once clean under the old rules, once under the new");
    }
    let what_if_uploads = a.events().into_iter().filter(|e| e["event"] == "hunt_upload" && e["what_if"] == true).count();
    assert_eq!(what_if_uploads, 3, "{}", a.proc.log_text());

    // Again, with nothing new to find: P and W are in scope, nothing is
    // uploaded and nothing changes.
    let again = hunt(cluster, "admin", &["start", "--since", "1h", "--rate", "50", "--wait"]).unwrap();
    let last = again.last().unwrap();
    assert_eq!(last["state"], "done", "{again:?}");
    assert_eq!((n(last, "in_scope"), n(last, "rescanned"), n(last, "changed")), (2, 0, 0), "{last}");
    assert_eq!(scans_of(cluster, &sy), 2);
}

/// With `--hunt-on-rules-change`, new rules start a hunt by themselves:
/// a content they catch is quarantined on its holder without anyone
/// starting one (the time from the rule file written to the quarantine is
/// printed, not asserted).
#[test]
fn new_rules_start_a_hunt_when_asked_to() {
    let rules = rules();
    let mut opts = options(None);
    opts.coordinator_args.push("--hunt-on-rules-change".into());
    let cluster = Cluster::start_with(rules.path(), None, 1, opts).unwrap();
    cluster.add_token("agent", "agent-a").unwrap();
    cluster.add_token("analyst", "analyst").unwrap();
    let mut y = pseudo_random(0x91, 3000);
    y.extend_from_slice(MARKER);
    let a = agent(&cluster, &cluster.url(), "agent-a", &[("y.bin", &y)], "", "quarantine");
    assert!(hunt(&cluster, "analyst", &["status"]).unwrap().is_empty(), "no rule change yet, no hunt");
    let marker = String::from_utf8_lossy(MARKER);
    let t = std::time::Instant::now();
    std::fs::write(
        rules.path().join("hunt.yar"),
        format!("rule Hunt_Test_Marker {{ strings: $m = \"{marker}\" condition: $m }}\n"),
    )
    .unwrap();
    let written_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let act = acted(&a, "y.bin");
    println!(
        "rule file written -> quarantined by the rules-change hunt: {} ms (action at {}, written at {written_ms})",
        t.elapsed().as_millis(),
        act["ts_ms"]
    );
    assert_eq!((act["action"].as_str(), act["sha256"].as_str()), (Some("quarantine"), Some(sha256_hex(&y).as_str())));
    let hunts = hunt(&cluster, "analyst", &["status"]).unwrap();
    assert_eq!(hunts.len(), 1, "{hunts:?}");
    assert_eq!(hunts[0]["started_by"], "rules change");
    assert!(hunts[0]["id"].as_str().unwrap().starts_with("rules-"));
}

/// The hunt calls refuse what they should: no token, the wrong role, bad
/// types, rates and windows, rules that do not compile, hunts that do not
/// exist; an upload naming a what-if hunt that is not running is refused,
/// and so is one from a token that may not upload.
#[tokio::test(flavor = "multi_thread")]
async fn hunt_calls_refuse_bad_callers_and_bad_requests() {
    use qala_proto::v1::{self as pb, hunts_client::HuntsClient, scan_request::Msg, scanner_client::ScannerClient};
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    cluster.add_token("analyst", "analyst").unwrap();
    let channel = cluster.channel(&cluster.url()).await;
    let hunts = |token: Option<String>| {
        HuntsClient::with_interceptor(channel.clone(), qala_tls::BearerToken::new(token.as_deref()).unwrap())
    };
    let start = |r: pb::StartHuntRequest| pb::StartHuntRequest { dry_run: true, ..r };
    let s = hunts(None).start_hunt(start(Default::default())).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::Unauthenticated, "{s:?}");
    for who in ["agent", "analyst"] {
        let s = hunts(Some(cluster.token(who))).start_hunt(start(Default::default())).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{who}: {s:?}");
    }
    let s = hunts(Some(cluster.token("analyst"))).cancel_hunt(pb::GetHuntRequest { id: "x".into() }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let mut admin = hunts(Some(cluster.token("admin")));
    let now = qala_common::now_ms();
    let rule = |text: &str| vec![pb::RuleSource { name: "x.yar".into(), text: text.into() }];
    for bad in [
        pb::StartHuntRequest { types: vec!["../pe".into()], ..Default::default() },
        pb::StartHuntRequest { types: vec![String::new()], ..Default::default() },
        pb::StartHuntRequest { types: vec!["pe".into(); 33], ..Default::default() },
        pb::StartHuntRequest { rate: -1.0, ..Default::default() },
        pb::StartHuntRequest { rate: f64::NAN, ..Default::default() },
        pb::StartHuntRequest { rate: 1e9, ..Default::default() },
        pb::StartHuntRequest { since_ms: now + 3_600_000, ..Default::default() },
        pb::StartHuntRequest { since_ms: -5, ..Default::default() },
        pb::StartHuntRequest { rules: rule("rule broken {"), ..Default::default() },
        pb::StartHuntRequest { rules: rule("import \"nope\" rule r { condition: true }"), ..Default::default() },
        pb::StartHuntRequest { rules: rule("include \"/etc/passwd\" rule r { condition: true }"), ..Default::default() },
    ] {
        let shown = format!("{bad:?}");
        let s = admin.start_hunt(start(bad)).await.unwrap_err();
        assert_eq!(s.code(), tonic::Code::InvalidArgument, "{shown}: {s:?}");
    }
    let ok = admin.start_hunt(start(Default::default())).await.unwrap().into_inner();
    assert_eq!((ok.state.as_str(), ok.in_scope), ("dry run", 0));
    let s = admin.get_hunt(pb::GetHuntRequest { id: "hunt-nope".into() }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    let real = admin.start_hunt(pb::StartHuntRequest::default()).await.unwrap().into_inner();
    let s = admin.hunt_matches(pb::GetHuntRequest { id: real.id.clone() }).await.unwrap_err();
    assert_eq!(s.code(), tonic::Code::FailedPrecondition, "not a what-if hunt: {s:?}");

    // An upload for a what-if hunt that is not running, or by a role that uploads nothing.
    let data = pseudo_random(0x99, 1000);
    for (who, code) in [("agent", tonic::Code::FailedPrecondition), ("analyst", tonic::Code::PermissionDenied)] {
        let mut msgs = qala_tests::scan_messages(&data, "");
        if let Some(Msg::Header(h)) = &mut msgs[0].msg {
            h.hunt_id = real.id.clone();
        }
        let mut scanner =
            ScannerClient::with_interceptor(channel.clone(), qala_tls::BearerToken::new(Some(&cluster.token(who))).unwrap());
        let s = scanner.scan(tokio_stream::iter(msgs)).await.unwrap_err();
        assert_eq!(s.code(), code, "{who}: {s:?}");
    }
}

//! The REST API, Prometheus metrics, hash lookups by md5/sha1, ATT&CK
//! techniques and hash IOC lists, against a running coordinator and worker
//! over TLS, with curl as the client.

use qala_tests::{Cluster, Options, coordinator_command, eicar, free_port, repo_root, sha256_hex, wait_for, zip_of};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Two different 128-byte messages with the same md5 (Wang and Yu's 2004
/// collision): one md5 naming two files.
const COLLIDE_A: &str = "d131dd02c5e6eec4693d9a0698aff95c2fcab58712467eab4004583eb8fb7f8955ad340609f4b30283e488832571415a085125e8f7cdc99fd91dbdf280373c5bd8823e3156348f5bae6dacd436c919c6dd53e2b487da03fd02396306d248cda0e99f33420f577ee8ce54b67080a80d1ec69821bcb6a8839396f9652b6ff72a70";
const COLLIDE_B: &str = "d131dd02c5e6eec4693d9a0698aff95c2fcab50712467eab4004583eb8fb7f8955ad340609f4b30283e4888325f1415a085125e8f7cdc99fd91dbd7280373c5bd8823e3156348f5bae6dacd436c919c6dd53e23487da03fd02396306d248cda0e99f33420f577ee8ce54b67080280d1ec69821bcb6a8839396f965ab6ff72a70";
const COLLIDE_MD5: &str = "79054025255fb1a26e4bc422aef54eb4";

const MAX_FILE: usize = 2 << 20;

struct Rest {
    cluster: Cluster,
    base: String,
    /// The worker's Prometheus listener.
    worker_metrics: u16,
    /// Rules directory (copied, so a test may add rules).
    _rules: tempfile::TempDir,
}

fn start() -> Rest {
    start_with(&[])
}

fn start_with(extra: &[&str]) -> Rest {
    let rules = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(repo_root().join("rules")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, rules.path().join(f.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        rules.path().join("attack.yar"),
        "rule Qala_Test_Cradle { meta: mitre_attack = \"T1059.001, T1105\" strings: $a = \"qala-test-cradle-5521\" condition: $a }\n\
         rule Qala_Test_Other { meta: attack = \"T1027\" strings: $a = \"qala-test-other-5521\" condition: $a }\n",
    )
    .unwrap();
    let port = free_port();
    let mut options = Options::default();
    options.coordinator_args.extend(["--http-listen", &format!("127.0.0.1:{port}")].map(String::from));
    options.coordinator_args.extend(extra.iter().map(|s| s.to_string()));
    let mut cluster = Cluster::start_with(rules.path(), None, 0, options).unwrap();
    // The worker's own limit decides the largest upload.
    let tls = cluster.worker_tls("w1").unwrap().display().to_string();
    let worker_metrics = free_port();
    let args = ["--tls".into(), tls, "--max-file-size".into(), MAX_FILE.to_string()];
    let metrics = ["--metrics-listen".into(), format!("127.0.0.1:{worker_metrics}")];
    cluster.add_worker_with("w1", &[args.as_slice(), &metrics].concat()).unwrap();
    cluster.wait_ready(1).unwrap();
    cluster.add_token("analyst", "analyst").unwrap();
    cluster.add_token("metrics", "prometheus").unwrap();
    Rest { cluster, base: format!("https://127.0.0.1:{port}"), worker_metrics, _rules: rules }
}

impl Rest {
    /// `curl` a request as the token named `who` (None: no token); the
    /// status and the body (JSON if it parses, else a string).
    fn call(&self, method: &str, path: &str, who: Option<&str>, extra: &[&str]) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-X", method, "--cacert"]).arg(self.cluster.ca()).args(["-w", "\n%{http_code}"]);
        if let Some(who) = who {
            cmd.arg("-H").arg(format!("Authorization: Bearer {}", self.cluster.token(who)));
        }
        cmd.args(extra).arg(format!("{}{path}", self.base));
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        let status = code.trim().parse().unwrap_or(0);
        if status == 0 {
            // No answer: what curl said instead.
            return (0, Value::String(String::from_utf8_lossy(&out.stderr).into_owned()));
        }
        (status, serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string())))
    }

    fn get(&self, path: &str, who: &str) -> (u16, Value) {
        self.call("GET", path, Some(who), &[])
    }

    fn post_json(&self, path: &str, who: &str, body: &Value) -> (u16, Value) {
        self.call("POST", path, Some(who), &["-H", "Content-Type: application/json", "--data-binary", &body.to_string()])
    }

    /// `qala-coordinator ioc ARGS` against this coordinator as admin; its output.
    fn ioc_cli(&self, args: &[&str]) -> String {
        let (url, ca, token) =
            (self.cluster.url(), self.cluster.ca().display().to_string(), self.cluster.token_file("admin").display().to_string());
        let server = ["--server", &url, "--ca", &ca, "--token-file", &token];
        coordinator_command(&[&["ioc"], args, &server].concat()).unwrap()
    }

    fn post_file(&self, path: &str, who: &str, file: &Path) -> (u16, Value) {
        let arg = format!("@{}", file.display());
        self.call("POST", path, Some(who), &["-H", "Content-Type: application/octet-stream", "--data-binary", &arg])
    }
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn md5_hex(data: &[u8]) -> String {
    let out = Command::new("md5sum").stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().unwrap();
    use std::io::Write;
    let mut out = out;
    out.stdin.take().unwrap().write_all(data).unwrap();
    String::from_utf8_lossy(&out.wait_with_output().unwrap().stdout).split_whitespace().next().unwrap().to_string()
}

#[test]
fn verdicts_by_every_hash_scans_lookups_feed_status_errors_and_openapi() {
    let r = start();
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "eicar.com", &eicar());

    // A raw body, then the same file as multipart: one scan, then cached.
    let (status, v) = r.post_file("/v1/scan", "agent", &bad);
    assert_eq!(status, 200, "{v}");
    assert_eq!((v["cached"].as_bool(), v["verdict"]["verdict"].as_str()), (Some(false), Some("malicious")), "{v}");
    let (sha256, sha1, md5) = (sha256_hex(&eicar()), v["verdict"]["sha1"].as_str().unwrap().to_string(), md5_hex(&eicar()));
    assert_eq!(v["verdict"]["md5"], md5.as_str());
    assert_eq!(sha1, "3395856ce81f2b7382dee72602f798b642f14140");
    let form = format!("file=@{};filename=invoice.com", bad.display());
    let (status, v) = r.call("POST", "/v1/scan", Some("agent"), &["-F", &form]);
    assert_eq!((status, v["cached"].as_bool()), (200, Some(true)), "{v}");

    // Every digest an analyst may hold resolves to the verdict.
    for hash in [&sha256, &sha1, &md5, &md5.to_uppercase()] {
        let (status, v) = r.get(&format!("/v1/verdicts/{hash}"), "analyst");
        assert_eq!(status, 200, "{hash}: {v}");
        assert_eq!(v["verdicts"][0]["sha256"], sha256.as_str(), "{hash}: {v}");
        assert_eq!(v["verdicts"][0]["detections"][0]["rule"], "EICAR_Test_File");
    }
    assert_eq!(r.get(&format!("/v1/verdicts/{sha256}"), "analyst").1["kind"], "sha256");
    assert_eq!(r.get(&format!("/v1/verdicts/{md5}"), "analyst").1["kind"], "md5");

    // One md5, two files: both answered.
    let a = hex(COLLIDE_A);
    let b = hex(COLLIDE_B);
    assert_ne!(a, b);
    assert_eq!((md5_hex(&a), md5_hex(&b)), (COLLIDE_MD5.to_string(), COLLIDE_MD5.to_string()));
    for (n, data) in [("a.bin", &a), ("b.bin", &b)] {
        assert_eq!(r.post_file("/v1/scan", "agent", &write(dir.path(), n, data)).0, 200);
    }
    let (status, v) = r.get(&format!("/v1/verdicts/{COLLIDE_MD5}"), "analyst");
    assert_eq!(status, 200);
    let mut shas: Vec<&str> = v["verdicts"].as_array().unwrap().iter().map(|v| v["sha256"].as_str().unwrap()).collect();
    shas.sort();
    let mut want = [sha256_hex(&a), sha256_hex(&b)];
    want.sort();
    assert_eq!(shas, want);

    // Batch lookup of mixed kinds.
    let unknown = sha256_hex(b"never seen");
    let (status, v) = r.post_json("/v1/lookup", "agent", &json!({"hashes": [sha256, md5, unknown, COLLIDE_MD5]}));
    assert_eq!(status, 200, "{v}");
    let res = v["results"].as_array().unwrap();
    assert_eq!(res.iter().map(|x| x["verdicts"].as_array().unwrap().len()).collect::<Vec<_>>(), [1, 1, 0, 2]);
    assert_eq!(res[1]["kind"], "md5");

    // Errors are JSON with a stable code.
    let (status, v) = r.get(&format!("/v1/verdicts/{unknown}"), "analyst");
    assert_eq!((status, v["code"].as_str()), (404, Some("not_found")), "{v}");
    assert_eq!(r.get("/v1/verdicts/xyz", "analyst").1["code"], "invalid_argument");
    assert_eq!(r.get("/v1/verdicts/xyz", "analyst").0, 400);
    let (status, v) = r.call("GET", &format!("/v1/verdicts/{sha256}"), None, &[]);
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthenticated")), "{v}");
    let (status, v) = r.get(&format!("/v1/verdicts/{sha256}"), "agent");
    assert_eq!((status, v["code"].as_str()), (403, Some("permission_denied")), "an agent token may not browse verdicts: {v}");
    let (status, v) = r.call("GET", "/v1/cluster", None, &["-H", "Authorization: Bearer qala_0000"]);
    assert_eq!((status, v["code"].as_str()), (401, Some("unauthenticated")), "{v}");
    let (status, v) = r.post_json("/v1/lookup", "agent", &json!({"hashes": "not a list"}));
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")), "{v}");
    let big = write(dir.path(), "big.bin", &vec![7u8; MAX_FILE + 1]);
    let (status, v) = r.post_file("/v1/scan", "agent", &big);
    assert_eq!((status, v["code"].as_str()), (413, Some("too_large")), "{v}");
    let (status, v) = r.call("POST", "/v1/scan", Some("agent"), &["-F", "comment=no file here"]);
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")), "{v}");
    assert_eq!(r.get("/v1/nothing", "admin").1["code"], "not_found");

    // The detections feed, filtered by technique (a parent matches its
    // sub-techniques) and rule, and paged.
    for (i, text) in ["qala-test-cradle-5521 one", "qala-test-cradle-5521 two", "qala-test-other-5521"].iter().enumerate() {
        assert_eq!(r.post_file("/v1/scan", "agent", &write(dir.path(), &format!("s{i}.ps1"), text.as_bytes())).0, 200);
    }
    // The agent shows the techniques too, in JSON and in text.
    let cradle = write(dir.path(), "cradle.ps1", b"iex qala-test-cradle-5521 three");
    let (code, lines) = r.cluster.scan(&[&cradle]).unwrap();
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines[0]["detections"][0]["techniques"], json!(["T1059.001", "T1105"]), "{lines:?}");
    let text = r.cluster.agent(&["scan", &cradle.display().to_string()]).unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("{T1059.001,T1105}"), "{}", String::from_utf8_lossy(&text.stdout));
    let (status, v) = r.get("/v1/detections?technique=T1059", "analyst");
    assert_eq!(status, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    assert_eq!(events.len(), 3, "{v}");
    assert_eq!(events[0]["detections"][0]["techniques"], json!(["T1059.001", "T1105"]));
    assert_eq!(r.get("/v1/detections?technique=t1027", "analyst").1["events"].as_array().unwrap().len(), 1);
    assert_eq!(r.get("/v1/detections?rule=eicar.EICAR_Test_File", "analyst").1["events"].as_array().unwrap().len(), 1);
    assert_eq!(r.get("/v1/detections?rule=EICAR_Test_File", "analyst").1["events"].as_array().unwrap().len(), 1);
    let all = r.get("/v1/detections", "analyst").1["events"].as_array().unwrap().len();
    assert!(all >= 5, "EICAR plus four rule hits: {all}");
    let mut seen = Vec::new();
    let mut since = 0;
    for _ in 0..20 {
        let (_, page) = r.get(&format!("/v1/detections?limit=1&since={since}"), "analyst");
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["sha256"].as_str().unwrap().to_string()));
        match page["next_since"].as_i64() {
            Some(n) => since = n,
            None => break,
        }
    }
    assert_eq!(seen.len(), all, "paging one by one sees every event once: {seen:?}");
    assert_eq!(r.get("/v1/detections?since=abc", "analyst").0, 400);

    // Cluster and rules.
    // Worker counters arrive with heartbeats.
    let c = wait_for("the worker's scan count", Duration::from_secs(10), || {
        let (status, c) = r.get("/v1/cluster", "analyst");
        (status == 200 && c["workers"][0]["scanned"].as_u64()? >= 5).then_some(c)
    })
    .unwrap();
    assert_eq!((c["workers"].as_array().unwrap().len(), c["threads"].as_u64()), (1, Some(2)), "{c}");
    let (status, rules) = r.get("/v1/rules", "analyst");
    assert_eq!(status, 200, "{rules}");
    let files: Vec<&str> = rules["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert!(files.contains(&"attack.yar") && files.contains(&"eicar.yar"), "{files:?}");
    assert_eq!(rules["ruleset_id"], c["ruleset_id"]);

    // The OpenAPI document: valid OpenAPI (openapi-spec-validator), and
    // naming every route used here.
    let (status, doc) = r.call("GET", "/v1/openapi.json", None, &[]);
    assert_eq!(status, 200);
    for p in
        ["/v1/verdicts/{hash}", "/v1/lookup", "/v1/scan", "/v1/detections", "/v1/cluster", "/v1/rules", "/v1/iocs", "/metrics"]
    {
        assert!(doc["paths"][p].is_object(), "{p} missing from the OpenAPI document");
    }
    let spec = write(dir.path(), "openapi.json", doc.to_string().as_bytes());
    let check = Command::new("python3")
        .args(["-c", "import sys, json; from openapi_spec_validator import validate; validate(json.load(open(sys.argv[1]))); print('valid')"])
        .arg(&spec)
        .output()
        .unwrap();
    assert!(check.status.success(), "the OpenAPI document is invalid: {}", String::from_utf8_lossy(&check.stderr));

    // HTTP/1.1 works as well as HTTP/2 (ALPN offers both).
    let (status, _) = r.call("GET", "/v1/cluster", Some("analyst"), &["--http1.1"]);
    assert_eq!(status, 200);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn prometheus_metrics_count_what_happened() {
    let r = start();
    let dir = tempfile::tempdir().unwrap();
    let (status, v) = r.get("/metrics", "analyst");
    assert_eq!((status, v["code"].as_str()), (403, Some("permission_denied")), "metrics need the metrics role: {v}");
    let bad = write(dir.path(), "eicar.com", &eicar());
    let clean = write(dir.path(), "clean.txt", b"a perfectly ordinary file\n");
    for f in [&bad, &bad, &clean] {
        assert_eq!(r.post_file("/v1/scan", "agent", f).0, 200);
    }
    let (status, text) = r.get("/metrics", "prometheus");
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_string();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.split([' ', '{']).next() == Some(name.split('{').next().unwrap()) && l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
    };
    assert_eq!(value("qala_uploads_total"), 3.0);
    assert_eq!(value("qala_cache_hits_total"), 1.0);
    assert_eq!(value("qala_cache_misses_total"), 2.0);
    assert_eq!(value("qala_verdicts_total{verdict=\"malicious\"}"), 2.0);
    assert_eq!(value("qala_verdicts_total{verdict=\"clean\"}"), 1.0);
    assert_eq!(value("qala_scan_duration_seconds_count"), 2.0);
    assert_eq!(value("qala_workers_alive"), 1.0);
    assert_eq!(value("qala_worker_slots"), 2.0);
    assert_eq!(value("qala_store_healthy"), 1.0);
    assert_eq!(value("qala_rules"), 9.0);
    for name in [
        "qala_upload_bytes_total",
        "qala_uploads_in_progress",
        "qala_worker_slots_in_use",
        "qala_store_errors",
        "qala_rule_reloads",
    ] {
        value(name);
    }

    // The worker's own listener (plain HTTP on loopback).
    let out = Command::new("curl").args(["-sS", &format!("http://127.0.0.1:{}/metrics", r.worker_metrics)]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} not in:\n{text}"))
    };
    assert_eq!(value("qala_worker_scans_total{verdict=\"malicious\"}"), 1.0);
    assert_eq!(value("qala_worker_scans_total{verdict=\"clean\"}"), 1.0);
    assert_eq!(value("qala_worker_scan_duration_seconds_count"), 2.0);
    assert_eq!(value("qala_worker_scanned_bytes_total"), (eicar().len() + 26) as f64);
    assert_eq!(value("qala_worker_slots"), 4.0);
    assert_eq!(value("qala_worker_slots_in_use"), 0.0);

    // Every metric the Grafana dashboard in deploy/ queries exists.
    let dashboard = std::fs::read_to_string(repo_root().join("deploy/grafana/qala-dashboard.json")).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard).unwrap();
    let (_, coordinator_text) = r.get("/metrics", "prometheus");
    let exported = format!("{}\n{text}", coordinator_text.as_str().unwrap());
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("qala_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                queried += 1;
                // A family with no samples yet still has its TYPE line.
                let base = ["_total", "_bucket"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
                let declared = exported.lines().any(|l| l.starts_with(&name) || l.starts_with(&format!("# TYPE {base} ")));
                assert!(declared, "the dashboard queries {name}, which nothing exports");
            }
        }
    }
    assert!(queried >= 20, "{queried}");
}

#[test]
fn ioc_lists_block_and_allow_instantly_for_every_hash_kind() {
    let r = start();
    let dir = tempfile::tempdir().unwrap();
    // 100,000 entries: md5, sha1 and sha256, imported through the CLI.
    let mut text = String::from("# a threat report\n");
    for i in 0..100_000u64 {
        let line = match i % 3 {
            0 => format!("{:032x},Family.Md5.{i}\n", i * 7919 + 1),
            1 => format!("{:040x} Family.Sha1.{i}\n", i * 7919 + 2),
            _ => format!("{:064x},Family.Sha256.{i}\n", i * 7919 + 3),
        };
        text.push_str(&line);
    }
    // The md5 of a file no worker has seen.
    let unseen = b"a dropper nobody scanned yet\n";
    text.push_str(&format!("{},Dropper.Unseen\n", md5_hex(unseen)));
    let list = write(dir.path(), "iocs.csv", text.as_bytes());
    let started = Instant::now();
    let out = r.ioc_cli(&["import", "--list", "block", &list.display().to_string()]);
    assert!(out.contains("100001 entries imported"), "{out}");
    eprintln!("imported 100,001 IOC entries in {:?}", started.elapsed());

    // Instant verdicts for each kind, no file ever scanned.
    for (hash, name) in [
        (format!("{:032x}", 3 * 7919 + 1), "Family.Md5.3"),
        (format!("{:040x}", 4 * 7919 + 2), "Family.Sha1.4"),
        (format!("{:064x}", 5 * 7919 + 3), "Family.Sha256.5"),
    ] {
        let (status, v) = wait_for("the imported lists in force", Duration::from_secs(10), || {
            let (s, v) = r.get(&format!("/v1/verdicts/{hash}"), "analyst");
            (s == 200).then_some((s, v))
        })
        .unwrap();
        assert_eq!(status, 200);
        let v = &v["verdicts"][0];
        assert_eq!(v["verdict"], "malicious", "{v}");
        assert_eq!(v["detections"][0]["namespace"], "ioc");
        assert_eq!(v["detections"][0]["rule"], name);
    }
    let (_, cluster_before) = r.get("/v1/cluster", "analyst");
    // A blocked sha256 uploaded by an agent is answered without a scan.
    let (code, lines) = {
        let blocked = write(dir.path(), "unseen.bin", unseen);
        r.cluster.scan(&[&blocked]).unwrap()
    };
    assert_eq!(code, 1, "{lines:?}");
    assert_eq!(lines[0]["verdict"], "malicious", "{lines:?}");
    assert_eq!(lines[0]["detections"][0]["rule"], "Dropper.Unseen", "the md5 entry matched after the scan: {lines:?}");
    // An md5 entry needs the file's md5, which the scan computes: one scan.
    let before = cluster_before["workers"][0]["scanned"].as_u64().unwrap();
    wait_for("the worker's scan count", Duration::from_secs(10), || {
        let (_, c) = r.get("/v1/cluster", "analyst");
        (c["workers"][0]["scanned"].as_u64()? == before + 1).then_some(())
    })
    .unwrap();

    // An allow-listed sha256 overrides a rule match (false positive), with the reason.
    let bad = write(dir.path(), "eicar.com", &eicar());
    assert_eq!(r.post_file("/v1/scan", "agent", &bad).1["verdict"]["verdict"], "malicious");
    let (status, v) = r.post_json(
        "/v1/iocs",
        "admin",
        &json!({"list": "allow", "entries": [{"digest": sha256_hex(&eicar()), "name": "FP ticket 4711"}]}),
    );
    assert_eq!((status, v["added"].as_u64()), (200, Some(1)), "{v}");
    let (_, v) = r.get(&format!("/v1/verdicts/{}", md5_hex(&eicar())), "analyst");
    assert_eq!(v["verdicts"][0]["verdict"], "clean", "{v}");
    let (status, v) = r.post_json("/v1/iocs", "admin", &json!({"list": "allow", "entries": [{"digest": md5_hex(&eicar())}]}));
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")), "allow lists take sha256 only: {v}");
    let (status, _) = r.post_json("/v1/iocs", "analyst", &json!({"list": "block", "entries": [{"digest": "a".repeat(64)}]}));
    assert_eq!(status, 403, "only admins change lists");

    // Taking the entry off restores the rule's verdict (the cache was never touched).
    let path = format!("/v1/iocs/allow/sha256/{}", sha256_hex(&eicar()));
    assert_eq!(r.call("DELETE", &path, Some("admin"), &[]).0, 204);
    assert_eq!(r.call("DELETE", &path, Some("admin"), &[]).0, 404);
    let (_, v) = r.get(&format!("/v1/verdicts/{}", sha256_hex(&eicar())), "analyst");
    assert_eq!(v["verdicts"][0]["verdict"], "malicious", "{v}");
    // Listed a page at a time: 1,000 by default, every entry once in order.
    let (_, first) = r.get("/v1/iocs", "analyst");
    assert_eq!((first["entries"].as_array().unwrap().len(), first["total"].as_u64()), (1000, Some(100_001)));
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let (status, page) = r.get(&format!("/v1/iocs?limit=50000&after={after}"), "analyst");
        assert_eq!(status, 200, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 10_000, "pages are capped");
        seen.extend(entries.iter().map(|e| format!("{}:{}:{}", e["list"], e["kind"], e["digest"])));
        after = page["next"].as_str().unwrap().to_string();
        if after.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 100_001);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
    let (status, v) = r.get("/v1/iocs?after=nonsense", "analyst");
    assert_eq!((status, v["code"].as_str()), (400, Some("invalid_argument")), "{v}");
    // The CLI pages through a running coordinator the same way.
    let out = r.ioc_cli(&["list"]);
    assert_eq!(out.lines().count(), 100_001);
}

/// The worker's scan count, from `/v1/cluster`.
fn scanned(r: &Rest) -> u64 {
    r.get("/v1/cluster", "analyst").1["workers"][0]["scanned"].as_u64().unwrap()
}

#[test]
fn ioc_lists_reach_objects_inside_archives() {
    let r = start();
    let dir = tempfile::tempdir().unwrap();
    let tool = b"qala nested tool 7781: harmless bytes a threat report names\n";
    let bundle = zip_of(&[("docs/readme.txt", b"read me first 7781\n"), ("bin/tool.exe", tool)]);
    let path = write(dir.path(), "bundle.zip", &bundle);

    // Scanned before any list exists: clean, every object listed with its
    // sha256 and its container, md5s not computed.
    let (code, lines) = r.cluster.scan(&[&path]).unwrap();
    assert_eq!((code, lines[0]["verdict"].as_str()), (0, Some("clean")), "{lines:?}");
    let (_, v) = r.get(&format!("/v1/verdicts/{}", sha256_hex(&bundle)), "analyst");
    let objects = &v["verdicts"][0]["objects"];
    assert_eq!(objects[1]["object"], "bin/tool.exe", "{v}");
    assert_eq!(objects[1]["sha256"], sha256_hex(tool));
    assert_eq!((objects[1]["parent"].as_u64(), objects[1]["md5"].as_str()), (Some(0), Some("")));

    // An md5 block entry naming the member: scans now compute nested md5s,
    // and the stored verdict, which has none, is scanned once more.
    wait_for("the worker's count of the first scan", Duration::from_secs(10), || (scanned(&r) == 1).then_some(())).unwrap();
    let entry = json!({"list": "block", "entries": [{"digest": md5_hex(tool), "name": "Report.Tool"}]});
    assert_eq!(r.post_json("/v1/iocs", "admin", &entry).0, 200);
    let lines = wait_for("the md5 entry applied to the member", Duration::from_secs(15), || {
        let (code, lines) = r.cluster.scan(&[&path]).unwrap();
        (code == 1).then_some(lines)
    })
    .unwrap();
    let v = &lines[0];
    assert_eq!(v["verdict"], "malicious", "{v}");
    assert_eq!(
        (v["detections"][0]["rule"].as_str(), v["detections"][0]["object"].as_str()),
        (Some("Report.Tool"), Some("bundle.zip/bin/tool.exe"))
    );
    assert_eq!((v["ioc"]["kind"].as_str(), v["ioc"]["object"].as_str()), (Some("md5"), Some("bundle.zip/bin/tool.exe")), "{v}");
    assert!(v["objects"].is_null(), "the objects' digests are for analysts: {v}");
    assert_eq!((v["uploaded"].as_u64(), v["cached"].as_bool()), (Some(bundle.len() as u64), Some(false)), "scanned again: {v}");
    wait_for("the worker's count of the new scan", Duration::from_secs(10), || (scanned(&r) == 2).then_some(())).unwrap();
    let (_, lines) = r.cluster.scan(&[&path]).unwrap();
    assert_eq!((lines[0]["cached"].as_bool(), lines[0]["verdict"].as_str()), (Some(true), Some("malicious")), "{lines:?}");
    // Analysts see the same by the archive's hash.
    let (_, v) = r.get(&format!("/v1/verdicts/{}", sha256_hex(&bundle)), "analyst");
    assert_eq!(v["verdicts"][0]["ioc"]["object"], "bin/tool.exe", "{v}");
    assert_eq!(v["verdicts"][0]["objects"][1]["md5"], md5_hex(tool), "{v}");

    // A sha256 block entry for a member of an archive nobody scanned yet.
    let payload = b"qala nested payload 7781, only inside a tar.gz-less zip\n";
    let fresh = zip_of(&[("a/b/payload.bin", payload)]);
    let entry = json!({"list": "block", "entries": [{"digest": sha256_hex(payload), "name": "Report.Payload"}]});
    assert_eq!(r.post_json("/v1/iocs", "admin", &entry).0, 200);
    let fresh_path = write(dir.path(), "fresh.zip", &fresh);
    let (status, v) = wait_for("the sha256 entry in force", Duration::from_secs(15), || {
        let (status, v) = r.post_file("/v1/scan", "agent", &fresh_path);
        (v["verdict"]["verdict"] == "malicious").then_some((status, v))
    })
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(v["verdict"]["ioc"]["object"], "a/b/payload.bin", "{v}");

    // An allow entry for a member clears its detection (a false positive
    // inside an archive) and says so; the rest of the archive still counts.
    let mixed = zip_of(&[("eicar.com", &eicar()), ("notes.txt", b"notes 7781\n")]);
    let mixed_path = write(dir.path(), "mixed.zip", &mixed);
    let (_, lines) = r.cluster.scan(&[&mixed_path]).unwrap();
    assert_eq!(lines[0]["verdict"], "malicious");
    let entry = json!({"list": "allow", "entries": [{"digest": sha256_hex(&eicar()), "name": "FP ticket 99"}]});
    assert_eq!(r.post_json("/v1/iocs", "admin", &entry).0, 200);
    let v = wait_for("the allow entry applied to the member", Duration::from_secs(15), || {
        let (_, v) = r.get(&format!("/v1/verdicts/{}", sha256_hex(&mixed)), "analyst");
        (v["verdicts"][0]["verdict"] == "clean").then_some(v)
    })
    .unwrap();
    let v = &v["verdicts"][0];
    assert_eq!(v["detections"].as_array().unwrap().len(), 0, "{v}");
    assert_eq!((v["ioc"]["list"].as_str(), v["ioc"]["object"].as_str()), (Some("allow"), Some("eicar.com")), "{v}");
    // Only the allowed member is cleared: a sibling the same rule matches
    // keeps its detection and the archive its verdict.
    let fp = b"qala-test-cradle-5521 in a build script (reviewed: a false positive)\n";
    let real = b"qala-test-cradle-5521 in a dropper\n";
    let pair = zip_of(&[("build/fp.ps1", fp), ("tmp/real.ps1", real)]);
    let entry = json!({"list": "allow", "entries": [{"digest": sha256_hex(fp), "name": "FP ticket 100"}]});
    assert_eq!(r.post_json("/v1/iocs", "admin", &entry).0, 200);
    let pair_path = write(dir.path(), "pair.zip", &pair);
    let v = wait_for("the second allow entry in force", Duration::from_secs(15), || {
        let (_, v) = r.post_file("/v1/scan", "agent", &pair_path);
        (v["verdict"]["ioc"]["object"] == "build/fp.ps1").then_some(v)
    })
    .unwrap();
    let objects: Vec<&str> =
        v["verdict"]["detections"].as_array().unwrap().iter().map(|d| d["object"].as_str().unwrap()).collect();
    assert_eq!(objects, ["tmp/real.ps1"], "{v}");
    assert_ne!(v["verdict"]["verdict"], "clean", "{v}");
}

#[test]
fn a_stalled_upload_is_given_up_and_garbage_gets_an_error() {
    let r = start_with(&["--upload-stall-secs", "1"]);
    let port = r.base.rsplit(':').next().unwrap();
    // Headers promising 100 MB, ten bytes, then nothing: 408 once the stall
    // timeout passes, not a connection held open for good.
    let script = r#"
import socket, ssl, sys, time
ctx = ssl.create_default_context(cafile=sys.argv[1])
ctx.set_alpn_protocols(["http/1.1"])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname="127.0.0.1")
s.sendall(("POST /v1/scan HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + sys.argv[3] + "\r\nContent-Length: 100000000\r\n\r\n0123456789").encode())
start = time.time()
s.settimeout(20)
reply = s.recv(4096).decode(errors="replace")
print(round(time.time() - start, 1))
print(reply.splitlines()[0] if reply else "closed")
print(reply.split("\r\n\r\n", 1)[-1])
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(r.cluster.ca())
        .arg(port)
        .arg(r.cluster.token("agent"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = text.lines().collect();
    let waited: f64 = lines[0].parse().unwrap();
    assert!(lines[1].starts_with("HTTP/1.1 408"), "{text}");
    assert!(lines[2].contains("\"code\":\"timeout\""), "{text}");
    assert!((0.5..10.0).contains(&waited), "answered after {waited} s");

    // Garbage instead of HTTP gets a 400 or a closed connection, and the server goes on.
    let garbage = r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile=sys.argv[1])
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[2]))), server_hostname="127.0.0.1")
s.sendall(bytes(range(256)) * 4)
s.settimeout(10)
print(s.recv(100)[:12])
"#;
    let out = Command::new("python3").args(["-c", garbage]).arg(r.cluster.ca()).arg(port).output().unwrap();
    let g = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(g.contains("HTTP/1.1 400") || g.trim() == "b''", "{g}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(r.get("/v1/cluster", "analyst").0, 200);
}

/// REST uploads are admitted under the same quotas as the agents' (here a
/// 1 MB spool): a body the spool cannot hold is answered 429 with a retry
/// hint, raw or multipart, and the client still sending it sees that
/// answer, never a reset connection; a refused token is answered 401 while
/// a small body is on its way; and a file that fits is scanned, its md5 and
/// sha1 computed by the coordinator as it received the bytes.
#[test]
fn refusals_reach_a_client_still_sending_and_accepted_uploads_get_every_digest() {
    let r = start_with(&["--spool-max-bytes", "1000000"]);
    let dir = tempfile::tempdir().unwrap();
    let big = write(dir.path(), "big.bin", &qala_tests::pseudo_random(7, 1_800_000));
    let headers = dir.path().join("headers");
    for round in 0..4 {
        let (data, dump) = (format!("@{}", big.display()), headers.display().to_string());
        let raw = ["-H", "Content-Type: application/octet-stream", "--data-binary", &data, "-D", &dump];
        let (status, body) = r.call("POST", "/v1/scan", Some("admin"), &raw);
        assert_eq!(status, 429, "round {round}: {body}");
        assert_eq!(body["code"], "busy", "{body}");
        assert!(body["message"].as_str().unwrap().contains("spool full"), "{body}");
        let headers = std::fs::read_to_string(&headers).unwrap().to_ascii_lowercase();
        assert!(headers.contains("retry-after: 1"), "{headers}");
        let form = format!("file=@{}", big.display());
        let (status, body) = r.call("POST", "/v1/scan", Some("admin"), &["-F", &form]);
        assert_eq!(status, 429, "round {round}, multipart: {body}");
    }
    // Refused before a byte is read (analysts may not scan), the whole body
    // on its way.
    let (status, body) = r.post_file("/v1/scan", "analyst", &big);
    assert_eq!(status, 403, "{body}");
    let small = qala_tests::pseudo_random(8, 40_000);
    let small_file = write(dir.path(), "small.bin", &small);
    let arg = format!("@{}", small_file.display());
    for _ in 0..4 {
        let (status, body) = r.call(
            "POST",
            "/v1/scan",
            None,
            &["-H", "Authorization: Bearer not-a-token", "-H", "Content-Type: application/octet-stream", "--data-binary", &arg],
        );
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = r.post_file("/v1/scan", "admin", &small_file);
    assert_eq!(status, 200, "{body}");
    let v = &body["verdict"];
    assert_eq!(v["verdict"], "clean", "{body}");
    assert_eq!(v["sha256"], sha256_hex(&small), "{body}");
    assert_eq!(v["md5"], md5_hex(&small), "{body}");
    let sha1 = Command::new("sha1sum").arg(&small_file).output().unwrap();
    assert_eq!(v["sha1"].as_str().unwrap(), String::from_utf8_lossy(&sha1.stdout).split_whitespace().next().unwrap());
    // The same bytes again: the cached verdict, with the same digests.
    let (status, again) = r.post_file("/v1/scan", "admin", &small_file);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["cached"], true, "{again}");
    assert_eq!((&again["verdict"]["md5"], &again["verdict"]["sha1"]), (&v["md5"], &v["sha1"]));
}

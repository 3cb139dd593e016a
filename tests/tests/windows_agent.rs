//! The Windows agent (`qala-agent.exe`, built by `scripts/build-windows.sh`)
//! under Wine, against a Linux cluster on loopback over TLS: a scan finds
//! EICAR in a zip in a zip (exit 1), the rescan reads no file content (the
//! hash cache keyed by volume serial and file index), lookup-only uploads
//! nothing, quarantine and restore are byte-identical and the quarantine
//! directory's access list is SYSTEM and Administrators (read back: Wine
//! does not enforce access lists), and the service loop picks up a new file
//! in a watched folder.
//!
//! The executable is `$QALA_WINDOWS_AGENT`, else where the build script
//! puts it; `scripts/test.sh` builds it first. Each run makes a Wine prefix
//! of its own, with the `bcryptprimitives.dll` stand-in Wine 8 lacks
//! (`tests/windows/`, built here with MinGW).

use qala_tests::{Cluster, eicar, repo_root, sha256_hex, wait_for, zip_of};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The Windows agent to test.
fn agent_exe() -> PathBuf {
    let p = std::env::var_os("QALA_WINDOWS_AGENT").map(PathBuf::from).unwrap_or_else(|| {
        let target = std::env::var_os("QALA_WINDOWS_TARGET_DIR").unwrap_or_else(|| "/var/tmp/qala-win-target".into());
        PathBuf::from(target).join("windows/qala-agent.exe")
    });
    assert!(p.exists(), "{} not found: build it with scripts/build-windows.sh (scripts/test.sh does)", p.display());
    p
}

/// `/tmp/x/y` as Wine sees it: `Z:\tmp\x\y`.
fn win(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

/// A Wine prefix of this test's own.
struct Wine {
    prefix: tempfile::TempDir,
}

impl Wine {
    fn new() -> Wine {
        let prefix = tempfile::tempdir().unwrap();
        let wine = Wine { prefix };
        let out = wine.command("wineboot").arg("--init").output().expect("wineboot (apt-get install wine64)");
        assert!(out.status.success(), "wineboot: {}", String::from_utf8_lossy(&out.stderr));
        let dll = wine.prefix.path().join("drive_c/windows/system32/bcryptprimitives.dll");
        let src = repo_root().join("tests/windows");
        let out = Command::new("x86_64-w64-mingw32-gcc")
            .args(["-shared", "-O2", "-o"])
            .arg(&dll)
            .arg(src.join("bcryptprimitives.c"))
            .arg(src.join("bcryptprimitives.def"))
            .arg("-ladvapi32")
            .output()
            .expect("x86_64-w64-mingw32-gcc (apt-get install gcc-mingw-w64-x86-64)");
        assert!(out.status.success(), "building the DLL stand-in: {}", String::from_utf8_lossy(&out.stderr));
        // The prefix's first start settles (its services up) before the
        // test's first command: right after wineboot, a service an MSI
        // starts can fail to.
        std::thread::sleep(Duration::from_secs(3));
        let _ = wine.command("wine").args(["cmd", "/c", "exit"]).output();
        wine
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("WINEPREFIX", self.prefix.path())
            .env("WINEDEBUG", "-all")
            // No Mono or Gecko installer prompts.
            .env("WINEDLLOVERRIDES", "mscoree=;mshtml=")
            .env_remove("DISPLAY")
            .stdin(Stdio::null());
        c
    }

    /// `wine qala-agent.exe ARGS`.
    fn agent(&self, args: &[&str]) -> Output {
        let mut c = self.command("wine");
        c.arg(agent_exe()).args(args);
        c.output().unwrap()
    }

    fn shutdown(&self) {
        let _ = self.command("wineserver").arg("-k").status();
    }
}

impl Drop for Wine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn text(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json_lines(o: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// `dir` is the agent's alone. The access list the agent sets, as Windows'
/// own parser reads it: protected, SYSTEM and Administrators, no one else.
/// Wine keeps no access lists (it maps them to Unix modes and makes the
/// list it reports up from the mode), so what the directory has is checked
/// as far as Wine can tell: no entry for Everyone, Users or Authenticated
/// Users, and no permission bits for others on the Unix side.
fn assert_private(wine: &Wine, dir: &Path) {
    let out = wine.agent(&["quarantine", "--dir", &win(dir), "access"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = |tag: &str| {
        stdout.lines().find_map(|l| l.strip_prefix(tag)).unwrap_or_else(|| panic!("no {tag} in {stdout}")).to_string()
    };
    let (set, now) = (line("set: "), line("now: "));
    assert!(set.starts_with("D:P"), "protected, nothing inherited: {set}");
    assert!(set.contains("(A;OICI;FA;;;SY)(A;OICI;FA;;;BA)"), "{set}");
    assert!(set.matches("(A;").count() <= 3, "SYSTEM, Administrators and at most the agent's own user: {set}");
    for sddl in [&set, &now] {
        assert!(!sddl.contains(";;;WD)") && !sddl.contains(";;;BU)") && !sddl.contains(";;;AU)"), "no one else: {sddl}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o007, 0, "{}: mode {mode:o}", dir.display());
}

#[test]
fn the_windows_agent_scans_caches_quarantines_and_watches_under_wine() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    let wine = Wine::new();
    let d = tempfile::tempdir().unwrap();
    let tree = d.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let inner = zip_of(&[("eicar.com", &eicar())]);
    let outer = zip_of(&[("inner.zip", &inner)]);
    std::fs::write(tree.join("sub/nested.zip"), &outer).unwrap();
    std::fs::write(tree.join("report.txt"), b"quarterly figures, nothing to see").unwrap();
    std::fs::write(tree.join("notes.txt"), qala_tests::pseudo_random(3, 100_000)).unwrap();
    // A DPAPI master key (a private path, matched with case ignored): looked
    // up, never uploaded.
    let protect = tree.join("Users/Alice/appdata/Roaming/Microsoft/PROTECT/S-1-5-21-1");
    std::fs::create_dir_all(&protect).unwrap();
    std::fs::write(protect.join("masterkey"), qala_tests::pseudo_random(4, 740)).unwrap();
    // A path past Windows' old 260-character limit.
    let mut deep = tree.clone();
    for i in 0..6 {
        deep.push(format!("{i}-a-directory-name-long-enough-to-take-the-path-past-the-old-limit"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("deep.txt"), b"far down").unwrap();
    assert!(win(&deep.join("deep.txt")).len() > 300);
    let common = [
        "--server".to_string(),
        cluster.url(),
        "--ca".into(),
        win(&cluster.ca()),
        "--token-file".into(),
        win(&cluster.token_file("agent")),
    ];
    let common: Vec<&str> = common.iter().map(String::as_str).collect();
    let tree_w = win(&tree);
    let scan = |extra: &[&str]| {
        let mut args = common.clone();
        args.push("scan");
        args.extend(extra);
        args.push(&tree_w);
        wine.agent(&args)
    };

    // Lookup-only first: nothing is known, nothing is uploaded.
    let out = scan(&["--lookup-only"]);
    let summary = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    assert!(summary.contains(" 0 uploaded (0 bytes)"), "{}", text(&out));
    assert!(summary.contains("5 unknown"), "{}", text(&out));

    // The scan: EICAR two zips deep is malicious, exit 1.
    let out = scan(&["--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let lines = json_lines(&out);
    let nested = lines.iter().find(|l| l["path"].as_str().is_some_and(|p| p.ends_with(r"sub\nested.zip"))).expect("nested.zip");
    assert_eq!(nested["verdict"], "malicious", "{nested}");
    assert_eq!(nested["sha256"], sha256_hex(&outer));
    assert!(nested["path"].as_str().unwrap().starts_with(r"Z:\"), "{nested}");
    assert_eq!(lines.iter().filter(|l| l["verdict"] == "clean").count(), 3, "{lines:?}");
    let deep_line = lines.iter().find(|l| l["path"].as_str().is_some_and(|p| p.ends_with("deep.txt"))).expect("the deep file");
    assert_eq!(deep_line["verdict"], "clean", "{deep_line}");
    let key = lines.iter().find(|l| l["path"].as_str().is_some_and(|p| p.ends_with("masterkey"))).expect("the private file");
    assert_eq!((&key["verdict"], &key["uploaded"]), (&Value::from("unknown"), &Value::from(0)), "{key}");

    // Lookup by hash and the cluster's status, as a Linux agent does them.
    let mut args = common.clone();
    let sha = sha256_hex(&outer);
    args.extend(["lookup", "--json", &sha]);
    let out = wine.agent(&args);
    assert_eq!(out.status.code(), Some(1), "a malicious verdict exits 1: {}", text(&out));
    assert_eq!(json_lines(&out)[0]["verdict"], "malicious", "{}", text(&out));
    let (ca, admin) = (win(&cluster.ca()), win(&cluster.token_file("admin")));
    let url = cluster.url();
    let args = ["--server", &url, "--ca", &ca, "--token-file", &admin, "status", "--json"];
    let out = wine.agent(&args);
    assert!(out.status.success(), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert!(status["workers"].as_array().is_some_and(|w| w.len() == 1), "one worker: {status}");

    // The rescan reads no file content: every file from the hash cache.
    let out = scan(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or_default().to_string();
    assert!(summary.contains("read 0 bytes of file content (5 files from the hash cache"), "{}", text(&out));

    // The service: a file dropped in a watched folder is judged and
    // quarantined; restored byte-identical; the quarantine is for SYSTEM
    // and Administrators only.
    let watched = d.path().join("watched");
    std::fs::create_dir_all(&watched).unwrap();
    // A clean file the service holds from its first scan: blocked later by
    // an indicator, which reaches this agent as a notice.
    let held = qala_tests::pseudo_random(0x77, 2000);
    std::fs::write(watched.join("held.txt"), &held).unwrap();
    let qdir = d.path().join("quarantine");
    let qdir_w = win(&qdir);
    let config = d.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[watch]\npaths = [{:?}]\ndebounce_ms = 300\n\n[schedule]\npaths = [{:?}]\ninterval = \"1h\"\nat_start = true\n\n[actions]\nmalicious = \"quarantine\"\n\n[paths]\nquarantine = {:?}\nspool = {:?}\nhash_cache = {:?}\ncrl_cache = {:?}\nheld = {:?}\n",
            win(&watched),
            win(&watched),
            qdir_w,
            win(&d.path().join("spool")),
            win(&d.path().join("svc-hashes")),
            win(&d.path().join("crls.pem")),
            win(&d.path().join("held")),
        ),
    )
    .unwrap();
    let log = d.path().join("service.log");
    let mut svc = wine
        .command("wine")
        .arg(agent_exe())
        .args(["--config", &win(&config)])
        .args(&common)
        .arg("service")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(d.path().join("service.err")).unwrap())
        .spawn()
        .unwrap();
    let events = || -> Vec<Value> {
        std::fs::read_to_string(&log).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    let service_log =
        || format!("{:?} {:?}", std::fs::read_to_string(&log), std::fs::read_to_string(d.path().join("service.err")));
    wait_for("the service to start", Duration::from_secs(60), || events().iter().any(|e| e["event"] == "started").then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {}", service_log()));
    let victim = watched.join("dropped.zip");
    std::fs::write(&victim, &outer).unwrap();
    let verdict = wait_for("a verdict for the dropped file", Duration::from_secs(60), || {
        events().into_iter().find(|e| e["event"] == "verdict" && e["path"].as_str().is_some_and(|p| p.ends_with("dropped.zip")))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", service_log()));
    assert_eq!(verdict["verdict"], "malicious", "{verdict}");
    wait_for("the file to be quarantined", Duration::from_secs(30), || (!victim.exists()).then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {}", service_log()));
    // Push: an indicator added for the clean file the service holds
    // reaches it as a notice, and it quarantines the file.
    wait_for("the held file to be answered", Duration::from_secs(60), || {
        events().into_iter().find(|e| e["event"] == "verdict" && e["path"].as_str().is_some_and(|p| p.ends_with("held.txt")))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", service_log()));
    let admin_file = cluster.token_file("admin").display().to_string();
    let ca_file = cluster.ca().display().to_string();
    qala_tests::coordinator_command(&[
        "ioc",
        "add",
        &sha256_hex(&held),
        "--server",
        &url,
        "--ca",
        &ca_file,
        "--token-file",
        &admin_file,
    ])
    .unwrap();
    wait_for("the held file to be quarantined on notice", Duration::from_secs(60), || {
        events().into_iter().find(|e| e["event"] == "action" && e["path"].as_str().is_some_and(|p| p.ends_with("held.txt")))
    })
    .unwrap_or_else(|e| panic!("{e}: {}", service_log()));
    assert!(!watched.join("held.txt").exists());
    assert!(events().iter().any(|e| e["event"] == "notice" && e["sha256"] == sha256_hex(&held).as_str()));
    let _ = svc.kill();
    let _ = svc.wait();

    let listed = wine.agent(&["quarantine", "--dir", &qdir_w, "list", "--json"]);
    assert!(listed.status.success(), "{}", text(&listed));
    let items = json_lines(&listed);
    assert_eq!(items.len(), 2, "the dropped file and the held one: {}", text(&listed));
    let item = items.iter().find(|i| i["original_path"] == win(&victim).as_str()).expect("the dropped file");
    let id = item["id"].as_str().unwrap().to_string();
    let stored: Vec<u8> = std::fs::read_dir(&qdir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .flat_map(|e| std::fs::read(e.path()).unwrap())
        .collect();
    assert!(
        !stored.is_empty() && !stored.windows(4).any(|w| w == b"PK\x03\x04"),
        "the quarantined bytes are not kept as they were"
    );
    assert_private(&wine, &qdir);
    let out = wine.agent(&["quarantine", "--dir", &qdir_w, "restore", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), outer, "restored byte-identical");
}

/// The MSI beside the exe.
fn agent_msi() -> PathBuf {
    agent_exe().with_file_name("qala-agent.msi")
}

/// `wine reg query KEY`: its output, or None if the key is not there.
fn reg_query(wine: &Wine, key: &str) -> Option<String> {
    let out = wine.command("wine").args(["reg", "query", key]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The products installed whose display name is "Qala agent": their
/// DisplayVersion values.
fn installed_versions(wine: &Wine) -> Vec<String> {
    let root = r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall";
    let list = reg_query(wine, root).unwrap_or_default();
    list.lines()
        .filter(|l| l.trim_start().starts_with("HKEY_LOCAL_MACHINE"))
        .filter_map(|k| reg_query(wine, k.trim()))
        .filter(|v| v.contains("Qala agent"))
        .filter_map(|v| {
            v.lines().find(|l| l.contains("DisplayVersion")).and_then(|l| l.split_whitespace().last()).map(String::from)
        })
        .collect()
}

#[test]
fn the_msi_installs_enrolls_upgrades_and_uninstalls_under_wine() {
    let cluster = Cluster::start(&repo_root().join("rules"), None, 1).unwrap();
    cluster.add_token("agent-enroll", "fleet").unwrap();
    let wine = Wine::new();
    let d = tempfile::tempdir().unwrap();
    // Version 2: the same program packaged as 0.1.1 (wixl, as the build script does).
    let v2 = d.path().join("v2");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::copy(agent_exe(), v2.join("qala-agent.exe")).unwrap();
    let out = Command::new("wixl")
        .current_dir(&v2)
        .args(["-a", "x64", "-D", "Version=0.1.1", "-D", "AgentExe=qala-agent.exe", "-o", "qala-agent.msi"])
        .arg(repo_root().join("deploy/windows/qala-agent.wxs"))
        .output()
        .unwrap();
    assert!(out.status.success(), "wixl: {}", text(&out));
    let token = cluster.token("fleet");
    let install = |msi: &Path, props: &[String]| {
        let out = wine.command("wine").args(["msiexec", "/i", &win(msi), "/qn"]).args(props).output().unwrap();
        assert!(out.status.success(), "msiexec /i {}: {}", msi.display(), text(&out));
    };
    let c = wine.prefix.path().join("drive_c");
    let (exe, data) = (c.join("Program Files/Qala/qala-agent.exe"), c.join("ProgramData/Qala"));
    let service_key = r"HKLM\System\CurrentControlSet\Services\QalaAgent";

    // Installed bare (no properties): the service starts and waits to be
    // enrolled, the install does not fail.
    install(&agent_msi(), &[]);
    let log = data.join("agent.log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the bare service to wait for enrollment", Duration::from_secs(30), || {
        read_log().contains("not enrolled").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", read_log()));
    let state = wine.command("wine").args(["sc", "query", "QalaAgent"]).output().unwrap();
    assert!(String::from_utf8_lossy(&state.stdout).contains("RUNNING"), "{}", text(&state));

    // Unattended install over it: program, service, configuration, enrollment.
    install(
        &agent_msi(),
        &[format!("SERVER={}", cluster.url()), format!("CA={}", win(&cluster.ca())), format!("ENROLL_TOKEN={token}")],
    );
    assert!(exe.exists(), "{} not installed", exe.display());
    assert_eq!(std::fs::read(&exe).unwrap(), std::fs::read(agent_exe()).unwrap());
    let service = reg_query(&wine, service_key).expect("the service is registered");
    assert!(service.contains("windows-service run") && service.contains(r"Qala\agent.toml"), "{service}");
    let config = std::fs::read_to_string(data.join("agent.toml")).unwrap();
    assert!(config.contains(&format!("url = \"{}\"", cluster.url())), "{config}");
    assert!(config.contains("agent_id = "), "enrolled during the install: {config}");
    assert_eq!(std::fs::read(data.join("ca.pem")).unwrap(), std::fs::read(cluster.ca()).unwrap());
    assert!(data.join("agent.token").exists() && !data.join("join.token").exists());
    assert_private(&wine, &data);
    assert_eq!(installed_versions(&wine), vec!["0.1.0".to_string()]);
    // The service runs enrolled: it says it started, in its log.
    wait_for("the enrolled service to start", Duration::from_secs(90), || {
        read_log().contains("\"event\":\"started\"").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", read_log()));

    // Stopped and started again by hand.
    let sc_state = || {
        let out = wine.command("wine").args(["sc", "query", "QalaAgent"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // (`stop` waits until the service manager says it stopped. Wine boots
    // the prefix again for a command after a pause, starting automatic
    // services anew, so `sc` is not asked in between.)
    let out = wine.agent(&["windows-service", "stop"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("stopped service QalaAgent"), "{}", text(&out));
    assert!(read_log().contains("\"event\":\"stopped\""), "the service stopped its work: {}", read_log());
    let out = wine.agent(&["windows-service", "start"]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the service to run again", Duration::from_secs(30), || sc_state().contains("RUNNING").then_some(()))
        .unwrap_or_else(|e| panic!("{e}: {}", sc_state()));

    // Upgrade in place: one product, the new version, the configuration kept.
    install(&v2.join("qala-agent.msi"), &[]);
    assert_eq!(installed_versions(&wine), vec!["0.1.1".to_string()], "a major upgrade replaces the old product");
    assert!(exe.exists());
    assert_eq!(std::fs::read_to_string(data.join("agent.toml")).unwrap(), config, "the upgrade kept the configuration");
    assert!(reg_query(&wine, service_key).is_some());

    // Uninstall: program and service gone, the data left for the admin.
    let out = wine.command("wine").args(["msiexec", "/x", &win(&v2.join("qala-agent.msi")), "/qn"]).output().unwrap();
    assert!(out.status.success(), "msiexec /x: {}", text(&out));
    assert!(!exe.exists(), "the program is removed");
    assert!(reg_query(&wine, service_key).is_none(), "the service is removed");
    assert!(installed_versions(&wine).is_empty());
    assert!(data.join("agent.toml").exists(), "the configuration and token stay");
}

#[test]
fn the_exe_and_the_msi_are_signed_and_a_changed_byte_breaks_the_signature() {
    let d = tempfile::tempdir().unwrap();
    let (cert, key) = (d.path().join("cert.pem"), d.path().join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=Qala test code signing"])
        .args(["-addext", "extendedKeyUsage=codeSigning", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let (exe, msi) = (d.path().join("qala-agent.exe"), d.path().join("qala-agent.msi"));
    std::fs::copy(agent_exe(), &exe).unwrap();
    std::fs::copy(agent_msi(), &msi).unwrap();
    let out = Command::new(repo_root().join("scripts/sign-windows.sh"))
        .env("QALA_SIGN_CERT", &cert)
        .env("QALA_SIGN_KEY", &key)
        .arg(&exe)
        .arg(&msi)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let verify =
        |f: &Path| Command::new("osslsigncode").arg("verify").arg("-CAfile").arg(&cert).arg("-in").arg(f).output().unwrap();
    for f in [&exe, &msi] {
        let out = verify(f);
        assert!(out.status.success(), "{}: {}", f.display(), text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("Qala test code signing"), "{}", text(&out));
    }
    // One byte of the program changed: the signature no longer holds.
    let mut bytes = std::fs::read(&exe).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&exe, bytes).unwrap();
    assert!(!verify(&exe).status.success(), "a changed program still verified");
}

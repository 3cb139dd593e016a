//! The systemd units in deploy/ stay hardened: `systemd-analyze security
//! --offline=yes` scores each at an exposure of 2.0 or lower, and each runs
//! as the dedicated user with no capabilities.

use qala_tests::repo_root;
use std::process::Command;

#[test]
fn units_score_an_exposure_of_two_or_lower() {
    for unit in ["qala-coordinator.service", "qala-worker.service"] {
        let path = repo_root().join("deploy").join(unit);
        let text = std::fs::read_to_string(&path).unwrap();
        for line in ["User=qala", "CapabilityBoundingSet=\n", "PrivateDevices=yes", "SystemCallFilter=@system-service"] {
            assert!(text.contains(line), "{unit} lacks {line:?}");
        }
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(&path)
            .output()
            .expect("systemd-analyze (Debian package systemd) is needed");
        let report = String::from_utf8_lossy(&out.stdout);
        let score: f64 = report
            .lines()
            .find_map(|l| {
                l.split("Overall exposure level for").nth(1)?.split(':').nth(1)?.split_whitespace().next()?.parse().ok()
            })
            .unwrap_or_else(|| {
                panic!("no exposure level in the report for {unit}:\n{report}\n{}", String::from_utf8_lossy(&out.stderr))
            });
        eprintln!("{unit}: exposure {score}");
        assert!(score <= 2.0, "{unit}: exposure {score} > 2.0\n{report}");
    }
}

/// The agent's `.deb`: built by scripts/build-deb.sh from a staged tree,
/// installed into a scratch root with dpkg (maintainer scripts run against
/// that root), with the binary, config and unit where the unit expects
/// them; the stripped binary under 15 MB; the unit's exposure reported and
/// held at 3.0 or lower (it runs as root with four capabilities: fanotify,
/// reading and moving any file).
#[test]
fn agent_deb_installs_into_a_scratch_root() {
    let out_dir = tempfile::tempdir().unwrap();
    let built = Command::new("bash")
        .arg(repo_root().join("scripts/build-deb.sh"))
        .arg(out_dir.path())
        .arg(qala_tests::bin("qala-agent"))
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let deb = String::from_utf8_lossy(&built.stdout).trim().to_string();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("var/lib/dpkg/status"), b"").unwrap();
    let installed = Command::new("dpkg")
        .arg(format!("--root={}", r.display()))
        .args(["--force-script-chrootless", "--force-not-root", "--force-depends", "--log=/dev/null", "-i", &deb])
        .output()
        .unwrap();
    assert!(
        installed.status.success(),
        "{}{}",
        String::from_utf8_lossy(&installed.stdout),
        String::from_utf8_lossy(&installed.stderr)
    );
    let unit = std::fs::read_to_string(r.join("lib/systemd/system/qala-agent.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    let binary = exec.split_whitespace().next().unwrap();
    let config = exec.split_whitespace().skip_while(|w| *w != "--config").nth(1).unwrap();
    let bin = r.join(binary.trim_start_matches('/'));
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&bin).unwrap();
    assert!(meta.permissions().mode() & 0o111 != 0);
    eprintln!("stripped qala-agent: {} bytes", meta.len());
    assert!(meta.len() < 15_000_000, "stripped binary {} bytes", meta.len());
    let checked =
        Command::new(&bin).args(["--config"]).arg(r.join(config.trim_start_matches('/'))).arg("check-config").output().unwrap();
    assert!(checked.status.success(), "{}", String::from_utf8_lossy(&checked.stderr));
    let q = std::fs::metadata(r.join("var/lib/qala/quarantine")).unwrap();
    assert!(q.is_dir() && q.permissions().mode() & 0o777 == 0o700, "postinst made the quarantine root-only");
    let conffiles = std::fs::read_to_string(r.join("var/lib/dpkg/info/qala-agent.conffiles")).unwrap();
    assert!(conffiles.contains("/etc/qala/agent.toml"));

    let report = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(repo_root().join("deploy/agent/qala-agent.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for").nth(1)?.split(':').nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    eprintln!("qala-agent.service: exposure {score}");
    assert!(score <= 3.0, "qala-agent.service exposure {score}\n{text}");
}

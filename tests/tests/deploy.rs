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

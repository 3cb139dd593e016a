//! `qala-demo [PATH]`: start a local Qala cluster (a coordinator and two
//! workers on the embedded store with the bundled rules), scan PATH or a
//! generated demo folder with the agent, print the verdicts, and stop.
//!
//! `scripts/demo.sh` builds everything and runs this. `QALA_DEMO_RULES`
//! names another rules directory (`scripts/coverage.sh` uses one rule).

use anyhow::{Context, Result};
use qala_tests::{Cluster, Options, eicar, repo_root, zip_of};
use std::path::PathBuf;

fn main() -> Result<()> {
    let target: Option<PathBuf> = std::env::args_os().nth(1).map(PathBuf::from);
    let data = repo_root().join("qala-data");
    std::fs::create_dir_all(&data)?;
    let store = format!("embedded:{}", data.join("demo-verdicts.redb").display());

    println!("making a throwaway PKI and tokens in {} ...", data.display());
    println!("starting coordinator and two workers over TLS (store {store}) ...");
    let options = Options { state_dir: Some(data.clone()), ..Options::default() };
    let rules = std::env::var_os("QALA_DEMO_RULES").map_or_else(|| repo_root().join("rules"), PathBuf::from);
    let cluster = Cluster::start_with(&rules, Some(&store), 2, options)?;
    let status = cluster.status()?;
    println!(
        "cluster up at {}: ruleset {} ({} rules), workers {}",
        cluster.url(),
        status["rules"]["ruleset_id"].as_str().unwrap_or(""),
        status["rules"]["rule_count"],
        status["workers"]
            .as_array()
            .map(|w| w.iter().map(|w| w["worker_id"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    );

    let mut demo_dir = None;
    let path = match target {
        Some(p) => p,
        None => {
            let dir = tempfile::Builder::new().prefix("qala-demo-").tempdir()?;
            make_demo(dir.path())?;
            println!("no path given: scanning a generated demo folder {}", dir.path().display());
            demo_dir.insert(dir).path().to_path_buf()
        }
    };
    println!(
        "$ qala-agent --server {} --ca {} --token-file {} scan {}",
        cluster.url(),
        cluster.ca().display(),
        cluster.token_file("agent").display(),
        path.display()
    );
    let status = cluster
        .agent_command(&cluster.url(), "agent")
        .arg("scan")
        .arg(&path)
        .stdin(std::process::Stdio::inherit())
        .status()
        .context("running qala-agent")?;
    println!("agent exit code {} (0 clean, 1 detected, 2 errors); stopping the cluster", status.code().unwrap_or(-1));
    // Dropping the cluster stops its processes; exit() would skip that.
    drop(cluster);
    drop(demo_dir);
    std::process::exit(status.code().unwrap_or(2));
}

fn make_demo(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("documents"))?;
    std::fs::create_dir_all(dir.join("downloads"))?;
    std::fs::write(dir.join("documents/letter.txt"), "Dear team,\nthe quarterly report is attached.\n")?;
    std::fs::write(dir.join("documents/notes.md"), "# Notes\n- nothing to see here\n")?;
    std::fs::write(dir.join("downloads/eicar.com"), eicar())?;
    let inner = zip_of(&[("eicar.com", &eicar()), ("readme.txt", b"test archive")]);
    std::fs::write(dir.join("downloads/archive.zip"), zip_of(&[("inner.zip", &inner)]))?;
    std::fs::write(dir.join("downloads/invoice.zip"), zip_of(&[("invoice.pdf.exe", b"MZ demo, not a real program")]))?;
    std::fs::write(dir.join("downloads/copy-of-letter.txt"), "Dear team,\nthe quarterly report is attached.\n")?;
    Ok(())
}

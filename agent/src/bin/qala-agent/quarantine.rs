//! `qala-agent quarantine list | restore | purge`.

use qala_agent::cli::QuarantineCommand;
use qala_agent::exit;
use qala_agent::output::safe;
use qala_agent::quarantine::Quarantine;
use std::path::Path;

/// Run `command` on the quarantine at `dir`.
pub fn run(dir: &Path, command: &QuarantineCommand) -> anyhow::Result<i32> {
    if !dir.exists() {
        anyhow::bail!("{}: no quarantine here", dir.display());
    }
    let q = Quarantine::open(dir)?;
    match command {
        QuarantineCommand::List { json } => {
            for r in q.list()? {
                match r {
                    Ok(r) if *json => println!(
                        "{}",
                        serde_json::json!({
                            "id": r.id, "original_path": r.original_path, "sha256": r.sha256, "size": r.size,
                            "verdict": r.verdict, "rules": r.rules, "uid": r.uid, "gid": r.gid,
                            "mode": format!("{:o}", r.mode), "quarantined_ms": r.quarantined_ms,
                        })
                    ),
                    Ok(r) => println!(
                        "{}  {}  {} {}  {}",
                        r.id,
                        safe(&r.original_path.to_string_lossy()),
                        r.verdict,
                        r.rules.join(","),
                        r.sha256
                    ),
                    Err(e) => eprintln!("qala-agent: {e}"),
                }
            }
            Ok(exit::CLEAN)
        }
        QuarantineCommand::Restore { id } => {
            let path = q.restore(id)?;
            println!("{id} restored to {}", safe(&path.to_string_lossy()));
            Ok(exit::CLEAN)
        }
        QuarantineCommand::Purge { id } => {
            q.purge(id)?;
            println!("{id} purged");
            Ok(exit::CLEAN)
        }
    }
}

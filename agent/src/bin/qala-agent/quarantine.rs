//! `qala-agent quarantine list | restore | purge | access`.

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
    if let QuarantineCommand::Access = command {
        // Read as it is (opening the quarantine would set it again).
        // The list the agent sets, as the system parses it, and the list
        // the system reports for the directory now (under Wine: made up
        // from the Unix mode, as Wine keeps no access lists).
        #[cfg(windows)]
        {
            println!("set: {}", qala_agent::os::sddl_round_trip(&qala_agent::os::private_sddl())?);
            println!("now: {}", qala_agent::os::sddl_of(dir)?);
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let m = std::fs::metadata(dir)?;
            println!("mode {:o} uid {} gid {}", m.mode() & 0o7777, m.uid(), m.gid());
        }
        return Ok(exit::CLEAN);
    }
    let q = Quarantine::open(dir)?;
    match command {
        QuarantineCommand::Access => unreachable!("answered above"),
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

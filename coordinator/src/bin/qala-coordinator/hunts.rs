//! `qala-coordinator hunt start|status|cancel`, through a running
//! coordinator (hunts run there).

use crate::target::{Hunts, Target, denied, target};
use anyhow::{Context, bail};
use qala_coordinator::config::{AdminTarget, HuntCommand};
use qala_proto::v1 as pb;
use std::time::Duration;

pub async fn command(command: HuntCommand) -> anyhow::Result<()> {
    match command {
        HuntCommand::Start { since, types, max_size, rate, dry_run, rules, wait, json, target: t } => {
            let since_ms = qala_common::now_ms() - duration(&since)?.as_millis() as i64;
            let max_size = max_size.as_deref().map(size).transpose()?.unwrap_or(0);
            let rules = match rules {
                Some(path) => rule_sources(&path)?,
                None => Vec::new(),
            };
            let mut c = hunts(&t).await?;
            let req = pb::StartHuntRequest { since_ms, types, max_size, rate, dry_run, rules };
            let h = c.start_hunt(req).await.map_err(denied)?.into_inner();
            print(&h, json);
            if wait && !dry_run {
                follow(&mut c, &h.id, json).await?;
            }
        }
        HuntCommand::Status { id: Some(id), wait, json, target: t } => {
            let mut c = hunts(&t).await?;
            let h = c.get_hunt(pb::GetHuntRequest { id: id.clone() }).await.map_err(denied)?.into_inner();
            print(&h, json);
            if wait {
                follow(&mut c, &id, json).await?;
            }
        }
        HuntCommand::Status { id: None, json, target: t, .. } => {
            let mut c = hunts(&t).await?;
            let list = c.list_hunts(pb::ListHuntsRequest {}).await.map_err(denied)?.into_inner().hunts;
            if list.is_empty() && !json {
                eprintln!("no hunts");
            }
            for h in list {
                print(&h, json);
            }
        }
        HuntCommand::Matches { id, json, target: t } => {
            let r = hunts(&t).await?.hunt_matches(pb::GetHuntRequest { id: id.clone() }).await.map_err(denied)?.into_inner();
            if r.matches.is_empty() && !json {
                eprintln!("{id}: its rules matched nothing");
            }
            for m in r.matches {
                let verdict = qala_proto::VerdictKind::try_from(m.verdict).unwrap_or_default().label();
                if json {
                    let v = serde_json::json!({"sha256": m.sha256, "verdict": verdict, "rules": m.rules, "size": m.size, "at_ms": m.at_ms});
                    println!("{v}");
                } else {
                    println!("{}\t{verdict}\t{}\t{}", m.sha256, bytes(m.size), m.rules.join(","));
                }
            }
        }
        HuntCommand::Cancel { id, target: t } => {
            let h = hunts(&t).await?.cancel_hunt(pb::GetHuntRequest { id }).await.map_err(denied)?.into_inner();
            print(&h, false);
        }
    }
    Ok(())
}

async fn hunts(t: &AdminTarget) -> anyhow::Result<Hunts> {
    match target(t).await? {
        Target::Server(_, _, c) => Ok(*c),
        Target::Store(_) => bail!("hunts run in a coordinator: use --server URL (not --store)"),
    }
}

/// The rule files at `path` (a file, or the `.yar`/`.yara` files under a
/// directory), named relative to it.
fn rule_sources(path: &std::path::Path) -> anyhow::Result<Vec<pb::RuleSource>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> anyhow::Result<()> {
        for e in std::fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
            let p = e?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.extension().is_some_and(|x| x == "yar" || x == "yara") {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    if path.is_dir() {
        walk(path, &mut files)?;
    } else {
        files.push(path.to_path_buf());
    }
    files.sort();
    if files.is_empty() {
        bail!("{}: no .yar or .yara files", path.display());
    }
    let base = if path.is_dir() { path } else { path.parent().unwrap_or(path) };
    let mut total = 0usize;
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| format!("{}", f.display()))?;
        total += text.len();
        if total > qala_coordinator::core::hunts::what_if::MAX_WHAT_IF_BYTES {
            bail!(
                "{}: more than {} MiB of rules",
                path.display(),
                qala_coordinator::core::hunts::what_if::MAX_WHAT_IF_BYTES >> 20
            );
        }
        let name = f.strip_prefix(base).unwrap_or(&f).display().to_string();
        out.push(pb::RuleSource { name, text });
    }
    Ok(out)
}

/// Print the hunt's progress each time it moves, until it is over.
async fn follow(c: &mut Hunts, id: &str, json: bool) -> anyhow::Result<()> {
    let mut last = None;
    loop {
        let h = c.get_hunt(pb::GetHuntRequest { id: id.to_string() }).await.map_err(denied)?.into_inner();
        let now = (h.state.clone(), h.rescanned, h.no_holder_online, h.declined, h.unanswered, h.judged_meanwhile, h.asked);
        if last.as_ref() != Some(&now) {
            print(&h, json);
            last = Some(now);
        }
        if !matches!(h.state.as_str(), "queued" | "running") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn print(h: &pb::Hunt, json: bool) {
    if json {
        let v = serde_json::json!({
            "id": h.id, "state": h.state, "since_ms": h.since_ms, "types": h.types, "max_size": h.max_size, "rate": h.rate,
            "started_by": h.started_by, "created_ms": h.created_ms, "started_ms": h.started_ms, "finished_ms": h.finished_ms,
            "ruleset_id": h.ruleset_id, "in_scope": h.in_scope, "bytes_in_scope": h.bytes_in_scope, "size_unknown": h.size_unknown,
            "scope_truncated": h.scope_truncated, "rescanned": h.rescanned, "changed": h.changed,
            "no_holder_online": h.no_holder_online, "declined": h.declined, "unanswered": h.unanswered,
            "judged_meanwhile": h.judged_meanwhile, "asked": h.asked, "what_if": h.what_if,
            "what_if_rules": h.what_if_rules, "matched": h.matched,
        });
        println!("{v}");
        return;
    }
    let unknown = if h.size_unknown > 0 { format!(" + {} never scanned (size unknown)", h.size_unknown) } else { String::new() };
    let cut = if h.scope_truncated { " (sightings read up to their limit)" } else { "" };
    let what_if = if h.what_if {
        format!("what-if ({} rules, {} matched; no verdict changes); ", h.what_if_rules, h.matched)
    } else {
        String::new()
    };
    println!(
        "{} {}: {what_if}{} in scope ({}{unknown}){cut}; rescanned {}, changed {}, no holder online {}, declined {}, unanswered {}, judged meanwhile {}; {} uploads asked",
        h.id,
        h.state,
        h.in_scope,
        bytes(h.bytes_in_scope),
        h.rescanned,
        h.changed,
        h.no_holder_online,
        h.declined,
        h.unanswered,
        h.judged_meanwhile,
        h.asked
    );
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} bytes"),
    }
}

/// `30d`, `12h`, `90m`, `45s`.
fn duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| anyhow::anyhow!("--since {s:?}: a number and a unit (30d, 12h, 90m, 45s)"))?;
    let secs = match unit {
        "d" => 86_400,
        "h" => 3600,
        "m" => 60,
        "s" | "" => 1,
        _ => bail!("--since {s:?}: the unit is d, h, m or s"),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs).min(10 * 365 * 86_400)))
}

/// `10M`, `512K`, `1G`, bytes.
fn size(s: &str) -> anyhow::Result<u64> {
    let s = s.trim();
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| anyhow::anyhow!("--max-size {s:?}: a number with K, M or G"))?;
    let mult = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => bail!("--max-size {s:?}: the unit is K, M or G"),
    };
    Ok(n.saturating_mul(mult))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_and_sizes() {
        assert_eq!(duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(duration("90m").unwrap(), Duration::from_secs(5400));
        assert!(duration("d").is_err() && duration("3w").is_err());
        assert_eq!(size("10M").unwrap(), 10 << 20);
        assert_eq!(size("512").unwrap(), 512);
        assert!(size("1T").is_err() && size("").is_err());
    }
}

//! `qala-inspect RULES FILE...`: scan each FILE with the engine alone (no
//! cluster) and print what it found: type, verdict, detections with the
//! object each was in, limits, errors. For analysts and for developing
//! unpackers; `scripts/coverage.sh` measures through a real cluster.

use anyhow::{Context, Result};
use qala_engine::{Engine, Limits, compile_rules};
use std::path::PathBuf;

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let rules = PathBuf::from(args.next().context("usage: qala-inspect RULES FILE...")?);
    let rules = compile_rules(&rules, &Limits::default())?;
    let mut engine = Engine::new(&rules, rules.limits.clone());
    for path in args.map(PathBuf::from) {
        let data = std::fs::read(&path).with_context(|| path.display().to_string())?;
        let r = engine.scan(&data, "");
        let verdict = r.verdict.map_or("unscannable", |v| v.as_str());
        println!(
            "{}: {} {verdict}, {} objects, {} bytes, {:.1} ms",
            path.display(),
            r.file_type,
            r.objects_scanned,
            r.bytes_scanned,
            r.duration.as_secs_f64() * 1e3
        );
        for d in &r.detections {
            println!("  found {}.{} in {:?}", d.namespace, d.rule, d.object);
        }
        for l in &r.limits_hit {
            println!("  limit {} at {:?}: {}", l.limit.as_str(), l.object, l.detail);
        }
        for e in &r.errors {
            println!("  error {e}");
        }
        for e in &r.encrypted {
            println!("  encrypted {e:?}");
        }
        for m in &r.object_meta {
            for (k, v) in &m.meta {
                println!("  meta {:?} {k}: {v}", m.object);
            }
        }
    }
    Ok(())
}

//! `qala-agent lookup SHA256...`: stored verdicts by sha256, through the
//! batch `Lookup` call (role agent or analyst).

use qala_agent::client::Client;
use qala_agent::exit;
use qala_agent::output::{kind, safe, verdict_json, verdict_text};
use qala_proto::VerdictKind;

/// Verdicts by sha256 through the batch `Lookup` call (role agent or analyst).
pub async fn run(client: &Client, json: bool, digests: Vec<String>) -> anyhow::Result<i32> {
    let mut code = exit::CLEAN;
    let mut asked = Vec::new();
    for sha in digests {
        let sha = sha.to_ascii_lowercase();
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            eprintln!("{}: error: not a sha256 (64 hex digits)", safe(&sha));
            code = exit::ERROR;
            continue;
        }
        asked.push(sha);
    }
    if asked.is_empty() {
        return Ok(code);
    }
    let resp = match client.lookup_all(asked.clone(), false).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("qala-agent: lookup failed ({:?}): {}", e.code(), safe(e.message()));
            return Ok(exit::ERROR);
        }
    };
    let known: std::collections::HashMap<String, qala_proto::v1::Verdict> =
        resp.verdicts.into_iter().map(|v| (v.sha256.clone(), v)).collect();
    let mut detected = false;
    for sha in asked {
        let v = known.get(&sha);
        if json {
            let mut m = serde_json::Map::new();
            m.insert("sha256".into(), serde_json::json!(sha));
            match v {
                Some(v) => m.extend(verdict_json(v)),
                None => {
                    m.insert("verdict".into(), serde_json::json!("unknown"));
                    m.insert("ruleset_id".into(), serde_json::json!(resp.ruleset_id));
                }
            }
            println!("{}", serde_json::Value::Object(m));
        } else {
            match v {
                Some(v) => println!("{sha}: {}", verdict_text(v)),
                None => println!("{sha}: unknown"),
            }
        }
        if v.is_some_and(|v| matches!(kind(v), VerdictKind::Malicious | VerdictKind::Suspicious)) {
            detected = true;
        }
    }
    Ok(if detected { exit::DETECTED } else { code })
}

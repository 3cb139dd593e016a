//! The audit log: one JSON line per security-relevant event, apart from
//! the debug log (standard output by default, or an append-only file).
//!
//! Lines name the client (token name and role) and its address, never a
//! token, a password or file content: a `scan` per Scan call, a `lookup`
//! per Lookup call, a `verdict_served` per non-clean verdict answered by
//! any call, an `admin` per administrative action and a `denied` per call
//! refused for its credentials.

use crate::auth::Caller;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};

pub struct Audit {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Audit {
    /// `-` for standard output, else a file opened for appending (made
    /// 0600 if new: it holds endpoints' paths; never through a link).
    pub fn open(spec: &str) -> std::io::Result<Arc<Self>> {
        let out: Box<dyn Write + Send> = if spec == "-" {
            Box::new(std::io::stdout())
        } else {
            Box::new(qala_common::files::open_append(std::path::Path::new(spec), 0o600)?)
        };
        Ok(Arc::new(Self { out: Mutex::new(out) }))
    }

    /// Write one event: `fields` (a JSON object) after the time, the event
    /// name and the caller.
    pub fn event(&self, event: &str, caller: Option<&Caller>, fields: Value) {
        let mut line = Map::new();
        line.insert("ts_ms".into(), json!(qala_common::now_ms()));
        line.insert("event".into(), json!(event));
        if let Some(c) = caller {
            line.insert("client".into(), json!(c.name));
            line.insert("role".into(), json!(c.role.label()));
            if let Some(p) = c.peer {
                line.insert("peer".into(), json!(p.to_string()));
            }
        }
        if let Value::Object(f) = fields {
            line.extend(f);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
    }
}

//! `qala-coordinator pki ...`, `token`, `agents` and `ioc`: the PKI on
//! disk, and tokens and revocations either in the store directly (while no
//! coordinator runs on it: the embedded store is locked by a running one)
//! or through a running coordinator's admin API.

use crate::target::{Target, denied, target};
use anyhow::{Context, bail};
use qala_coordinator::auth::{self, NewToken, Role};
use qala_coordinator::config::{AdminTarget, AgentsCommand, Command, IocCommand, PkiCommand, TokenCommand};
use qala_coordinator::core::digests::hash_kind;
use qala_coordinator::core::iocs::{MAX_PAGE, import};
use qala_coordinator::core::revocation::{certificates_of, pem_or_der, revoke_in_store};
use qala_coordinator::store::Revoked;
use qala_coordinator::store::records::{CrlRecord, IssuedCert, ioc_key};
use qala_proto::v1 as pb;
use qala_tls::pki;

pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Pki { command } => pki_command(command).await,
        Command::Token { command } => token_command(command).await,
        Command::Agents { command } => agents_command(command).await,
        Command::Ioc { command } => ioc_command(command).await,
        Command::Health { address, live, timeout_secs } => {
            let body = qala_common::health::check(&address, live, std::time::Duration::from_secs(timeout_secs))
                .map_err(|e| anyhow::anyhow!("health: {e}"))?;
            println!("{}", body.trim());
            Ok(())
        }
        Command::Sightings { hash, json, target: t } => sightings_command(&hash, json, &t).await,
        Command::Hunt { command } => crate::hunts::command(command).await,
    }
}

async fn pki_command(command: PkiCommand) -> anyhow::Result<()> {
    match command {
        PkiCommand::Init { dir, hosts, name } => {
            pki::init(&dir, &name, &hosts)?;
            println!("root CA, its revocation list, and coordinator {name:?}'s certificate and issuing CA in {}:", dir.display());
            for f in [
                pki::CA_CERT,
                pki::CA_KEY,
                pki::CRL,
                pki::COORDINATOR_CERT,
                pki::COORDINATOR_KEY,
                pki::ISSUING_CERT,
                pki::ISSUING_KEY,
            ] {
                println!("  {}", dir.join(f).display());
            }
            println!(
                "keep {} secret and, beyond a trial, off the coordinators: it signs coordinators and admins",
                dir.join(pki::CA_KEY).display()
            );
        }
        PkiCommand::Coordinator { dir, name, hosts } => {
            let out = pki::coordinator(&dir, &name, &hosts)?;
            println!("{}", out.display());
        }
        PkiCommand::Worker { dir, id, hosts } => {
            let out = pki::worker(&dir, &id, &hosts)?;
            println!("{}", out.display());
        }
        PkiCommand::Client { dir, name, role } => {
            Role::parse(&role).map_err(anyhow::Error::msg)?;
            let out = pki::client(&dir, &name, &role)?;
            println!("{}", out.display());
        }
        PkiCommand::Revoke { id, client, coordinator, serial, dir, target: t } => {
            revoke(id, client, coordinator, serial, dir, t).await?;
        }
        PkiCommand::PublishCrl { file, target: t } => {
            let bytes = std::fs::read(&file).with_context(|| format!("{}", file.display()))?;
            publish_crl(&bytes, &t).await?;
        }
    }
    Ok(())
}

fn has_target(t: &AdminTarget) -> bool {
    t.store.is_some() || t.server.is_some()
}

async fn revoke(
    id: Option<String>,
    client: bool,
    coordinator: Option<String>,
    serial: Option<String>,
    dir: Option<std::path::PathBuf>,
    t: AdminTarget,
) -> anyhow::Result<()> {
    if id.is_none() && coordinator.is_none() && serial.is_none() {
        bail!("say what to revoke: a worker ID (or client NAME with --client), --coordinator NAME or --serial HEX");
    }
    if let Some(id) = &id {
        pki::check_name(if client { "client name" } else { "worker id" }, id)?;
    }
    // The root's list, where the root key is.
    if let Some(dir) = &dir {
        let what = match (&id, &coordinator, &serial) {
            (_, Some(c), _) => pki::Revoke::Coordinator(c.clone()),
            (_, _, Some(s)) => pki::Revoke::Serial(s.clone()),
            (Some(n), _, _) if client => pki::Revoke::Client(n.clone()),
            (Some(n), _, _) => pki::Revoke::Worker(n.clone()),
            _ => unreachable!("checked above"),
        };
        for i in pki::revoke(dir, &what)? {
            println!("revoked {} {:?}: serial {}", i.kind, i.name, i.serial);
        }
        let crl = dir.join(pki::CRL);
        println!("the root's revocation list: {}", crl.display());
        if !has_target(&t) {
            println!("publish it: qala-coordinator pki publish-crl {} --server URL --ca FILE --token-file FILE", crl.display());
        } else {
            publish_crl(&std::fs::read(&crl)?, &t).await?;
        }
    } else if coordinator.is_some() {
        bail!("only the root revokes a coordinator: give --dir, the PKI directory that holds ca-key.pem");
    }
    if !has_target(&t) {
        if dir.is_none() {
            bail!("say where: --store SPEC or --server URL (and --dir DIR for the root's list)");
        }
        return Ok(());
    }
    // The cluster: the id refused, the certificates the store knows revoked.
    let answer = match (target(&t).await?, &id, &serial) {
        (Target::Server(mut c, ..), id, serial) => {
            let req = pb::RevokeWorkerRequest {
                worker_id: id.clone().unwrap_or_default(),
                client,
                serial: serial.clone().unwrap_or_default(),
            };
            c.revoke_worker(req).await.map_err(denied)?.into_inner()
        }
        (Target::Store(s), Some(id), None) => {
            let key = if client { auth::client_revocation_key(id) } else { id.clone() };
            s.put(&Revoked { id: key, at_ms: qala_common::now_ms() }).await?;
            if client {
                pb::RevokeWorkerResponse::default()
            } else {
                revoke_in_store(&s, &certificates_of(&s, id).await?).await?
            }
        }
        (Target::Store(s), _, Some(serial)) => {
            let serial = serial.trim().to_ascii_lowercase();
            match s.get::<IssuedCert>(&serial).await? {
                Some(c) => revoke_in_store(&s, &[c]).await?,
                None if dir.is_some() => pb::RevokeWorkerResponse::default(),
                None => bail!("no certificate of serial {serial} is known to the store (one `pki` made: add --dir)"),
            }
        }
        (Target::Store(_), None, None) => pb::RevokeWorkerResponse::default(),
    };
    if let Some(id) = &id {
        println!("{} {id} revoked", if client { "client certificate" } else { "worker" });
    }
    for s in &answer.serials {
        println!("certificate {s} revoked (on its coordinator's list within seconds)");
    }
    for s in &answer.root_serials {
        if dir.is_none() {
            println!("certificate {s} was made by `pki`: revoke it in the root's list too (pki revoke --dir DIR --serial {s})");
        }
    }
    Ok(())
}

/// Store a root's revocation list: through a coordinator (which checks
/// the root's signature), or in the store directly (coordinators check it
/// when they read it).
async fn publish_crl(bytes: &[u8], t: &AdminTarget) -> anyhow::Result<()> {
    let der = pem_or_der(bytes).map_err(anyhow::Error::msg)?;
    let list = qala_tls::Crl::parse(&der)?;
    match target(t).await? {
        Target::Server(mut c, ..) => {
            let r = c.publish_crl(pb::PublishCrlRequest { crl: der }).await.map_err(denied)?.into_inner();
            println!("revocation list of {} number {} published ({} revoked)", r.issuer, r.number, r.revoked);
        }
        Target::Store(s) => {
            if let Some(held) = s.get::<CrlRecord>(&list.issuer).await?
                && let Ok(held) = qala_tls::Crl::parse(&held.der)
                && (held.number.len(), &held.number) >= (list.number.len(), &list.number)
            {
                bail!(
                    "the store holds list number {} of {}, not older than this one ({})",
                    held.number_hex(),
                    list.issuer,
                    list.number_hex()
                );
            }
            s.put(&CrlRecord { issuer: list.issuer.clone(), der, stored_ms: qala_common::now_ms() }).await?;
            println!("revocation list of {} number {} stored ({} revoked)", list.issuer, list.number_hex(), list.serials.len());
        }
    }
    Ok(())
}

async fn token_command(command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Add { role, name, expires, uses, replace, from_file, target: t } => {
            let role = Role::parse(&role).map_err(anyhow::Error::msg)?;
            let given = match &from_file {
                Some(f) => {
                    Some(std::fs::read_to_string(f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?.trim().to_string())
                }
                None => None,
            };
            let new = NewToken { role, valid: expires.map(Into::into), max_uses: uses.unwrap_or(0), replace, given };
            let (token, record) = match target(&t).await? {
                Target::Server(..) if from_file.is_some() => {
                    anyhow::bail!("--from-file registers a token on the store directly: give --store, not --server")
                }
                Target::Store(s) => auth::add_token(&s, &name, &new).await.map_err(|e| anyhow::anyhow!("{e}"))?,
                Target::Server(mut c, ..) => {
                    let req = pb::AddTokenRequest {
                        name: name.clone(),
                        role: role.label().into(),
                        valid_secs: new.valid.map_or(0, |v| v.as_secs().max(1)),
                        max_uses: new.max_uses,
                        replace,
                    };
                    let r = c.add_token(req).await.map_err(denied)?.into_inner();
                    (r.token, r.record.unwrap_or_default())
                }
            };
            let mut limits = String::new();
            if record.expires_ms != 0 {
                limits.push_str(&format!(", until {}", auth::utc(record.expires_ms)));
            }
            if record.max_uses != 0 {
                limits.push_str(&format!(", {} enrollments", record.max_uses));
            }
            if let Some(f) = &from_file {
                println!("token {name:?} (role {}{limits}) registered from {}", role.label(), f.display());
                return Ok(());
            }
            println!("token {name:?} (role {}{limits}), shown only this once:", role.label());
            println!("{token}");
        }
        TokenCommand::List { target: t } => {
            let tokens = match target(&t).await? {
                Target::Store(s) => s.all::<pb::TokenRecord>().await?,
                Target::Server(mut c, ..) => c.list_tokens(pb::ListTokensRequest {}).await.map_err(denied)?.into_inner().tokens,
            };
            let mut tokens = tokens;
            tokens.sort_by(|a, b| a.name.cmp(&b.name));
            for tk in tokens {
                let expires = if tk.expires_ms == 0 { "never".to_string() } else { auth::utc(tk.expires_ms) };
                let uses = if tk.max_uses == 0 { "-".to_string() } else { format!("{}/{}", tk.used, tk.max_uses) };
                println!("{}\t{}\tcreated_ms={}\texpires={expires}\tuses={uses}", tk.name, tk.role, tk.created_ms);
            }
        }
        TokenCommand::Revoke { name, target: t } => {
            let revoked = match target(&t).await? {
                Target::Store(s) => s.delete::<pb::TokenRecord>(&name).await?,
                Target::Server(mut c, ..) => {
                    c.revoke_token(pb::RevokeTokenRequest { name: name.clone() }).await.map_err(denied)?.into_inner().revoked
                }
            };
            if !revoked {
                bail!("no token named {name:?}");
            }
            println!("token {name:?} revoked");
        }
    }
    Ok(())
}

async fn agents_command(command: AgentsCommand) -> anyhow::Result<()> {
    match command {
        AgentsCommand::List { json, target: t } => {
            let mut agents = match target(&t).await? {
                Target::Store(s) => s.all::<pb::AgentRecord>().await?,
                Target::Server(_, mut c, _) => c.list_agents(pb::ListAgentsRequest {}).await.map_err(denied)?.into_inner().agents,
            };
            agents.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
            let now = qala_common::now_ms();
            for a in agents {
                if json {
                    let v = serde_json::json!({
                        "agent_id": a.agent_id, "hostname": a.hostname, "os": a.os, "version": a.version,
                        "enrolled_ms": a.enrolled_ms, "last_seen_ms": a.last_seen_ms, "last_peer": a.last_peer,
                        "actions": a.actions, "last_action_ms": a.last_action_ms,
                    });
                    println!("{v}");
                } else {
                    let ago = (now - a.last_seen_ms).max(0) / 1000;
                    println!(
                        "{}\t{}\t{}\tqala-agent {}\tlast seen {ago} s ago from {}\t{} actions",
                        a.agent_id,
                        a.hostname,
                        a.os,
                        a.version,
                        if a.last_peer.is_empty() { "-" } else { &a.last_peer },
                        a.actions
                    );
                }
            }
        }
        AgentsCommand::Show { agent_id, json, target: t } => {
            let r = match target(&t).await? {
                Target::Store(_) => bail!("agents show needs --server: what is a detection is read under the rules in force"),
                Target::Server(_, mut c, _) => c.get_agent(pb::GetAgentRequest { agent_id }).await.map_err(denied)?.into_inner(),
            };
            let a = r.agent.unwrap_or_default();
            let now = qala_common::now_ms();
            if json {
                let held: Vec<_> = r
                    .detections
                    .iter()
                    .map(|h| {
                        serde_json::json!({
                            "sha256": h.sha256, "verdict": pb::VerdictKind::try_from(h.verdict).unwrap_or_default().label(),
                            "rules": h.rules, "first_seen_ms": h.first_seen_ms, "last_seen_ms": h.last_seen_ms,
                        })
                    })
                    .collect();
                let v = serde_json::json!({
                    "agent_id": a.agent_id, "hostname": a.hostname, "os": a.os, "version": a.version,
                    "last_checkin_ms": a.last_seen_ms, "sightings": r.sightings, "truncated": r.truncated, "detections": held,
                });
                println!("{v}");
            } else {
                println!(
                    "{}\t{}\t{}\tqala-agent {}\tchecked in {}",
                    a.agent_id,
                    a.hostname,
                    a.os,
                    a.version,
                    ago(now, a.last_seen_ms)
                );
                println!(
                    "holds {} contents{}; {} a detection now:",
                    r.sightings,
                    if r.truncated { " (truncated by the per-agent cap)" } else { "" },
                    r.detections.len()
                );
                for h in r.detections {
                    println!(
                        "  {}\t{}\t{}\tlast seen {}",
                        h.sha256,
                        pb::VerdictKind::try_from(h.verdict).unwrap_or_default().label(),
                        h.rules.join(","),
                        ago(now, h.last_seen_ms)
                    );
                }
            }
        }
    }
    Ok(())
}

fn ago(now: i64, ms: i64) -> String {
    if ms <= 0 { "never".into() } else { format!("{} s ago", (now - ms).max(0) / 1000) }
}

async fn sightings_command(hash: &str, json: bool, t: &AdminTarget) -> anyhow::Result<()> {
    let hash = hash.trim().to_ascii_lowercase();
    let Some(kind) = qala_coordinator::core::digests::hash_kind(&hash) else {
        bail!("not a hex sha256, sha1 or md5: {hash:?}");
    };
    let r = match target(t).await? {
        Target::Store(s) => qala_coordinator::core::sightings::holders_in(&s, kind, &hash).await?,
        Target::Server(_, mut c, _) => {
            c.sightings(pb::SightingsRequest { hash: hash.clone() }).await.map_err(denied)?.into_inner()
        }
    };
    let now = qala_common::now_ms();
    if r.holders.is_empty() && !json {
        eprintln!("no agent holds {hash} (as far as sightings say)");
    }
    for h in r.holders {
        if json {
            let v = serde_json::json!({
                "agent_id": h.agent_id, "hostname": h.hostname, "sha256": h.sha256, "first_seen_ms": h.first_seen_ms,
                "last_seen_ms": h.last_seen_ms, "last_checkin_ms": h.last_checkin_ms, "holds": h.holds,
                "action": h.action, "action_ms": h.action_ms,
            });
            println!("{v}");
        } else {
            let held = if h.holds {
                format!("holds it: first seen {}, last seen {}", ago(now, h.first_seen_ms), ago(now, h.last_seen_ms))
            } else {
                "no longer holds it".to_string()
            };
            let action = if h.action.is_empty() { String::new() } else { format!("\t{} {}", h.action, ago(now, h.action_ms)) };
            println!(
                "{}\t{}\t{}\t{held}\tchecked in {}{action}",
                h.agent_id,
                if h.hostname.is_empty() { "-" } else { &h.hostname },
                h.sha256,
                ago(now, h.last_checkin_ms)
            );
        }
    }
    Ok(())
}

async fn ioc_import(t: &AdminTarget, list: &str, text: String) -> anyhow::Result<u64> {
    Ok(match target(t).await? {
        Target::Store(s) => {
            let entries =
                import::parse(list, &text, "qala-coordinator ioc", qala_common::now_ms()).map_err(anyhow::Error::msg)?;
            s.put_all(&entries).await?;
            entries.len() as u64
        }
        Target::Server(mut c, ..) => {
            // Checked whole here first, then sent in pieces well under the message limit.
            import::parse(list, &text, "", 0).map_err(anyhow::Error::msg)?;
            let mut added = 0;
            let mut piece = String::new();
            for line in text.lines() {
                piece.push_str(line);
                piece.push('\n');
                if piece.len() > 4 << 20 {
                    let req = pb::AddIocsRequest { list: list.into(), text: std::mem::take(&mut piece) };
                    added += c.add_iocs(req).await.map_err(denied)?.into_inner().added;
                }
            }
            if !piece.is_empty() {
                added +=
                    c.add_iocs(pb::AddIocsRequest { list: list.into(), text: piece }).await.map_err(denied)?.into_inner().added;
            }
            added
        }
    })
}

async fn ioc_command(command: IocCommand) -> anyhow::Result<()> {
    match command {
        IocCommand::Add { list, digest, name, target: t } => {
            let n = ioc_import(&t, &list, format!("{digest},{}", name.replace([',', '\n'], " "))).await?;
            println!("{n} entry added to the {list} list");
        }
        IocCommand::Import { list, file, target: t } => {
            let text = if file.as_os_str() == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?
            };
            let n = ioc_import(&t, &list, text).await?;
            println!("{n} entries imported into the {list} list");
        }
        IocCommand::Remove { list, digest, target: t } => {
            let digest = digest.trim().to_ascii_lowercase();
            let kind = hash_kind(&digest).context("not a sha256, sha1 or md5")?;
            let removed = match target(&t).await? {
                Target::Store(s) => s.delete::<pb::IocEntry>(&ioc_key(&list, kind, &digest)).await?,
                Target::Server(mut c, ..) => {
                    c.remove_ioc(pb::RemoveIocRequest { list: list.clone(), kind: kind.into(), digest: digest.clone() })
                        .await
                        .map_err(denied)?
                        .into_inner()
                        .removed
                }
            };
            if !removed {
                bail!("{digest} is not on the {list} list");
            }
            println!("{digest} removed from the {list} list");
        }
        IocCommand::List { json, target: t } => {
            let entries = match target(&t).await? {
                Target::Store(s) => {
                    let mut all = s.all::<pb::IocEntry>().await?;
                    all.sort_by(|a, b| (&a.list, &a.kind, &a.digest).cmp(&(&b.list, &b.kind, &b.digest)));
                    all
                }
                // Pages come in order.
                Target::Server(mut c, ..) => {
                    let mut all = Vec::new();
                    let mut after = String::new();
                    loop {
                        let page = c
                            .list_iocs(pb::ListIocsRequest { after, limit: MAX_PAGE as u32 })
                            .await
                            .map_err(denied)?
                            .into_inner();
                        all.extend(page.entries);
                        if page.next.is_empty() {
                            break all;
                        }
                        after = page.next;
                    }
                }
            };
            for e in entries {
                if json {
                    let v = serde_json::json!({"list": e.list, "kind": e.kind, "digest": e.digest, "name": e.name,
                        "added_ms": e.added_ms, "source": e.source});
                    println!("{v}");
                } else {
                    println!("{}\t{}\t{}\t{}", e.list, e.kind, e.digest, e.name);
                }
            }
        }
    }
    Ok(())
}

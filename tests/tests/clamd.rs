//! The clamd front door against real clamd clients: Debian's `clamdscan`
//! (INSTREAM with `--stream`, IDSESSION with `-m`), the Python `clamd`
//! package, and the protocol spoken byte by byte.

use qala_tests::{Cluster, Options, eicar, free_port, pseudo_random, repo_root, sha256_hex, wait_for, which};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Largest INSTREAM the test coordinators take.
const STREAM_MAX: usize = 1 << 20;

struct Clamd {
    cluster: Cluster,
    port: u16,
    socket: PathBuf,
}

fn start(extra: &[&str], rules: &Path) -> Clamd {
    start_polling(extra, rules, Options::default().rules_poll_ms)
}

fn start_polling(extra: &[&str], rules: &Path, rules_poll_ms: u64) -> Clamd {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap().keep();
    let socket = dir.join("clamd.sock");
    let mut options = Options { rules_poll_ms, ..Options::default() };
    options.coordinator_args.extend(
        [
            "--clamd-listen",
            &format!("127.0.0.1:{port}"),
            "--clamd-socket",
            &socket.display().to_string(),
            "--clamd-stream-max-length",
            &STREAM_MAX.to_string(),
        ]
        .map(String::from),
    );
    options.coordinator_args.extend(extra.iter().map(|s| s.to_string()));
    let cluster = Cluster::start_with(rules, None, 1, options).unwrap();
    Clamd { cluster, port, socket }
}

/// Send `request` on a new TCP connection and read until the server closes.
fn talk(port: u16, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// An INSTREAM body: `data` in chunks of `chunk` bytes, then the zero length.
fn instream(data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(chunk.max(1)) {
        out.extend_from_slice(&(c.len() as u32).to_be_bytes());
        out.extend_from_slice(c);
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out
}

fn clamdscan(c: &Clamd, args: &[&str]) -> (i32, String) {
    let conf = c.cluster.dir.path().join("clamd.conf");
    std::fs::write(&conf, format!("TCPSocket {}\nTCPAddr 127.0.0.1\n", c.port)).unwrap();
    let exe = which("clamdscan").expect("clamdscan (Debian package clamdscan) is needed: scripts/test.sh installs it");
    let out = Command::new(exe).arg(format!("--config-file={}", conf.display())).args(args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn audit_events(c: &Clamd, event: &str) -> Vec<Value> {
    c.cluster.audit().into_iter().filter(|e| e["event"] == event).collect()
}

#[test]
fn clamdscan_streams_clean_detected_oversize_and_a_hundred_files_in_one_session() {
    let c = start(&[], &repo_root().join("rules"));
    let dir = tempfile::tempdir().unwrap();
    let clean = dir.path().join("clean.txt");
    std::fs::write(&clean, b"quarterly report\n").unwrap();
    let bad = dir.path().join("eicar.com");
    std::fs::write(&bad, eicar()).unwrap();
    let big = dir.path().join("big.bin");
    std::fs::write(&big, pseudo_random(7, STREAM_MAX + 4096)).unwrap();

    let (code, out) = clamdscan(&c, &["--stream", "--no-summary", &clean.display().to_string()]);
    assert_eq!((code, out.trim()), (0, format!("{}: OK", clean.display()).as_str()));
    let (code, out) = clamdscan(&c, &["--stream", "--no-summary", &bad.display().to_string()]);
    assert_eq!((code, out.trim()), (1, format!("{}: eicar.EICAR_Test_File FOUND", bad.display()).as_str()));
    let (code, out) = clamdscan(&c, &["--stream", "--no-summary", &big.display().to_string()]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("size limit exceeded"), "{out}");
    // On the Unix socket, clamdscan --fdpass hands over the open file instead.
    let local = c.cluster.dir.path().join("clamd-local.conf");
    std::fs::write(&local, format!("LocalSocket {}\n", c.socket.display())).unwrap();
    let exe = which("clamdscan").unwrap();
    let out = Command::new(exe)
        .arg(format!("--config-file={}", local.display()))
        .args(["--fdpass", "--no-summary"])
        .arg(&bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!((out.status.code(), text.trim()), (Some(1), format!("{}: eicar.EICAR_Test_File FOUND", bad.display()).as_str()));

    // The stream took the agent's path: the verdict is stored under its sha256.
    let lookup = c.cluster.agent(&["lookup", "--json", &sha256_hex(&eicar())]).unwrap();
    let v: Value = serde_json::from_slice(&lookup.stdout).unwrap();
    assert_eq!(v["verdict"], "malicious", "{v}");

    // 100 files on one IDSESSION (`-m` with `--stream`): 99 clean, 1 EICAR.
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..99 {
        std::fs::write(many.join(format!("doc-{i:03}.txt")), format!("document {i}\n").repeat(i + 1)).unwrap();
    }
    std::fs::write(many.join("zz-eicar.com"), eicar()).unwrap();
    let sessions_before = audit_events(&c, "clamd_session").len();
    let (code, out) = clamdscan(&c, &["--stream", "-m", &many.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("zz-eicar.com: eicar.EICAR_Test_File FOUND"), "{out}");
    assert!(out.contains("Infected files: 1"), "{out}");
    assert!(!out.contains("ERROR"), "{out}");
    let sessions = wait_for("the session's audit line", Duration::from_secs(10), || {
        let s = audit_events(&c, "clamd_session");
        (s.len() > sessions_before).then_some(s)
    })
    .unwrap();
    let session = sessions.last().unwrap();
    assert_eq!((session["streams"].as_u64(), session["found"].as_u64()), (Some(100), Some(1)), "{session}");
    assert_eq!(session["end"], "end", "{session}");
    assert_eq!(session["client"], "clamd@127.0.0.1");
}

#[test]
fn the_python_clamd_package_over_tcp_and_the_unix_socket() {
    let c = start(&[], &repo_root().join("rules"));
    let script = format!(
        r#"
import clamd, io, json, sys
out = {{}}
for name, cd in [("tcp", clamd.ClamdNetworkSocket("127.0.0.1", {port}, timeout=60)), ("unix", clamd.ClamdUnixSocket({socket:?}, timeout=60))]:
    r = {{"ping": cd.ping(), "version": cd.version()}}
    r["eicar"] = cd.instream(io.BytesIO(bytes.fromhex({eicar:?})))["stream"]
    r["clean"] = cd.instream(io.BytesIO(b"just some text\n" * 100))["stream"]
    try:
        cd.instream(io.BytesIO(b"x" * {over}))
        r["oversize"] = "accepted"
    except clamd.BufferTooLongError as e:
        r["oversize"] = str(e)
    r["stats"] = cd.stats()
    out[name] = r
json.dump(out, sys.stdout)
"#,
        port = c.port,
        socket = c.socket.display().to_string(),
        eicar = hex_of(&eicar()),
        over = STREAM_MAX + 1,
    );
    let out = Command::new("python3").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "python clamd failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for via in ["tcp", "unix"] {
        let r = &v[via];
        assert_eq!(r["ping"], "PONG", "{via}: {r}");
        assert!(r["version"].as_str().unwrap().starts_with("ClamAV "), "{via}: {r}");
        assert_eq!(r["eicar"], serde_json::json!(["FOUND", "eicar.EICAR_Test_File"]), "{via}: {r}");
        assert_eq!(r["clean"], serde_json::json!(["OK", null]), "{via}: {r}");
        assert!(r["oversize"].as_str().unwrap().contains("INSTREAM size limit exceeded"), "{via}: {r}");
        let stats = r["stats"].as_str().unwrap();
        assert!(stats.starts_with("POOLS: 1") && stats.trim_end().ends_with("END"), "{via}: {stats}");
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn the_protocol_byte_by_byte_sessions_framing_and_refusals() {
    let rules = tempfile::tempdir().unwrap();
    std::fs::copy(repo_root().join("rules/eicar.yar"), rules.path().join("eicar.yar")).unwrap();
    // Rule files are polled rarely: only RELOAD can change the ruleset here.
    let c = start_polling(&["--clamd-allow-reload"], rules.path(), 3_600_000);
    let p = c.port;
    assert_eq!(talk(p, b"zPING\0"), b"PONG\0");
    assert_eq!(talk(p, b"nPING\n"), b"PONG\n");
    assert_eq!(talk(p, b"PING\n"), b"PONG\n");
    assert_eq!(talk(p, b"nFROBNICATE\n"), b"UNKNOWN COMMAND\n");
    assert_eq!(talk(p, b"nEND\n"), b"UNKNOWN COMMAND\n", "END outside a session");
    assert_eq!(talk(p, b"zSCAN /etc/shadow\0"), b"COMMAND UNAVAILABLE\0", "no scanning of the server's own files");
    assert_eq!(talk(p, b"nSHUTDOWN\n"), b"COMMAND UNAVAILABLE\n");
    let version = String::from_utf8(talk(p, b"nVERSION\n")).unwrap();
    assert!(version.starts_with("ClamAV ") && version.ends_with('\n') && version.matches('/').count() == 2, "{version:?}");
    let commands = String::from_utf8(talk(p, b"zVERSIONCOMMANDS\0")).unwrap();
    assert!(commands.contains("| COMMANDS: PING VERSION VERSIONCOMMANDS RELOAD END STATS IDSESSION INSTREAM\0"), "{commands:?}");

    // INSTREAM in every framing, in odd chunk sizes.
    let found = [b"zINSTREAM\0".as_slice(), &instream(&eicar(), 5)].concat();
    assert_eq!(talk(p, &found), b"stream: eicar.EICAR_Test_File FOUND\0");
    let clean = [b"nINSTREAM\n".as_slice(), &instream(&pseudo_random(3, 300_000), 65_536)].concat();
    assert_eq!(talk(p, &clean), b"stream: OK\n");
    let empty = [b"nINSTREAM\n".as_slice(), &instream(b"", 1)].concat();
    assert_eq!(talk(p, &empty), b"stream: OK\n");
    // A chunk that would pass StreamMaxLength is refused before it is read.
    let mut over = b"zINSTREAM\0".to_vec();
    over.extend_from_slice(&(STREAM_MAX as u32 + 1).to_be_bytes());
    assert_eq!(talk(p, &over), b"INSTREAM size limit exceeded. ERROR\0");
    let mut total = b"zINSTREAM\0".to_vec();
    // Two chunks of 400,000 bytes, then the length of a third that passes the limit.
    total.extend_from_slice(&instream(&vec![b'a'; STREAM_MAX + 10], 400_000)[..2 * 400_004 + 4]);
    assert_eq!(talk(p, &total), b"INSTREAM size limit exceeded. ERROR\0", "the sum of chunks counts");

    // A session: replies numbered from 1, in any order, all before the close.
    let mut s = TcpStream::connect(("127.0.0.1", p)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = b"zIDSESSION\0zPING\0".to_vec();
    for i in 0..5u8 {
        req.extend_from_slice(b"zINSTREAM\0");
        req.extend_from_slice(&instream(if i == 3 { eicar() } else { vec![i; 1000] }.as_slice(), 700));
    }
    req.extend_from_slice(b"zVERSION\0zEND\0");
    s.write_all(&req).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let mut replies: Vec<String> =
        out.split(|&b| b == 0).filter(|r| !r.is_empty()).map(|r| String::from_utf8_lossy(r).into_owned()).collect();
    replies.sort_by_key(|r| r.split(':').next().unwrap().parse::<u32>().unwrap());
    assert_eq!(replies.len(), 7, "{replies:?}");
    assert_eq!(replies[0], "1: PONG");
    for (i, r) in replies[1..6].iter().enumerate() {
        let want = if i == 3 { "stream: eicar.EICAR_Test_File FOUND" } else { "stream: OK" };
        assert_eq!(r, &format!("{}: {want}", i + 2));
    }
    assert!(replies[6].starts_with("7: ClamAV "), "{replies:?}");

    // Inside a session: the old style and RELOAD are refused, and the session ends.
    assert_eq!(
        talk(p, b"nIDSESSION\nPING\n"),
        b"1: Only nCMDS\\n and zCMDS\\0 are accepted inside IDSESSION. ERROR\n".as_slice()
    );
    assert_eq!(talk(p, b"zIDSESSION\0zRELOAD\0"), b"1: Command invalid inside IDSESSION. ERROR\0");

    // RELOAD recompiles the rules (allowed by --clamd-allow-reload).
    let before = c.cluster.status().unwrap()["rules"]["ruleset_id"].as_str().unwrap().to_string();
    std::fs::write(
        rules.path().join("extra.yar"),
        "rule Qala_Test_Marker { strings: $a = \"qala-marker-7731\" condition: $a }\n",
    )
    .unwrap();
    assert_eq!(talk(p, b"nRELOAD\n"), b"RELOADING\n");
    wait_for("the new ruleset", Duration::from_secs(30), || {
        let id = c.cluster.status().ok()?["rules"]["ruleset_id"].as_str()?.to_string();
        (id != before).then_some(())
    })
    .unwrap();
    let marked = [b"zINSTREAM\0".as_slice(), &instream(b"xx qala-marker-7731 yy", 10)].concat();
    let reply = wait_for("the new rule in force", Duration::from_secs(30), || {
        let r = talk(p, &marked);
        (r != b"stream: OK\0").then_some(r)
    })
    .unwrap();
    assert_eq!(reply, b"stream: extra.Qala_Test_Marker FOUND\0");

    // The Unix socket speaks the same.
    let mut u = UnixStream::connect(&c.socket).unwrap();
    u.write_all(b"nPING\n").unwrap();
    u.shutdown(Shutdown::Write).unwrap();
    let mut out = Vec::new();
    u.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"PONG\n");
}

#[test]
fn reload_is_refused_without_its_flag_and_other_networks_are_refused() {
    let c = start(&[], &repo_root().join("rules"));
    assert_eq!(talk(c.port, b"zRELOAD\0"), b"COMMAND UNAVAILABLE\0");

    // A non-loopback listener needs an allow list.
    let out = Command::new(qala_tests::bin("qala-coordinator"))
        .args(["--insecure", "--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
        .args(["--rules", &repo_root().join("rules").display().to_string()])
        .args(["--store", &format!("embedded:{}", c.cluster.dir.path().join("other.redb").display())])
        .args(["--auth-cache", &c.cluster.dir.path().join("other-auth.json").display().to_string()])
        .args(["--clamd-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --clamd-allow"), "{}", String::from_utf8_lossy(&out.stderr));

    // Bound to every address, allowing only networks this host is not on: its
    // host's own non-loopback address is refused, loopback is served.
    let own = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|u| u.connect("192.0.2.1:9").and(u.local_addr()))
        .map(|a| a.ip())
        .expect("a non-loopback address on this host");
    assert!(!own.is_loopback(), "{own}");
    let port = free_port();
    let mut options = Options::default();
    options
        .coordinator_args
        .extend(["--clamd-listen", &format!("0.0.0.0:{port}"), "--clamd-allow", "198.51.100.0/24,203.0.113.7"].map(String::from));
    let open = Cluster::start_with(&repo_root().join("rules"), None, 1, options).unwrap();
    let mut s = TcpStream::connect((own, port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(b"zPING\0");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty(), "a peer outside --clamd-allow got {out:?}");
    assert_eq!(talk(port, b"zPING\0"), b"PONG\0");
    let denied = wait_for("the refusal in the audit log", Duration::from_secs(10), || {
        open.audit().into_iter().find(|e| e["event"] == "denied" && e["via"] == "clamd")
    })
    .unwrap();
    assert_eq!(denied["client"], format!("clamd@{own}"), "{denied}");
}

/// A mail transfer agent's side of the milter protocol (version 6), just
/// enough to pass one message through a milter and read its decision.
struct Mta {
    s: TcpStream,
    /// The milter's SMFIP_* flags: steps it skips, replies it does not send.
    flags: u32,
}

impl Mta {
    fn connect(port: u16) -> Mta {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut m = Mta { s, flags: 0 };
        // Version 6, every action, every protocol step offered.
        let mut neg = Vec::new();
        for v in [6u32, 0x1ff, 0x1f_ffff] {
            neg.extend_from_slice(&v.to_be_bytes());
        }
        m.send(b'O', &neg);
        let (cmd, data) = m.read();
        assert_eq!(cmd, b'O', "option negotiation");
        m.flags = u32::from_be_bytes(data[8..12].try_into().unwrap());
        m
    }

    fn send(&mut self, cmd: u8, data: &[u8]) {
        let mut p = ((data.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(cmd);
        p.extend_from_slice(data);
        self.s.write_all(&p).unwrap();
    }

    fn read(&mut self) -> (u8, Vec<u8>) {
        let mut len = [0u8; 4];
        self.s.read_exact(&mut len).unwrap();
        let mut p = vec![0u8; u32::from_be_bytes(len) as usize];
        self.s.read_exact(&mut p).unwrap();
        (p[0], p[1..].to_vec())
    }

    /// Send one step unless the milter skips it (`skip` bit), and read its
    /// reply unless the milter sends none (`no_reply` bit).
    fn step(&mut self, cmd: u8, data: &[u8], skip: u32, no_reply: u32) -> Option<u8> {
        if self.flags & skip != 0 {
            return None;
        }
        self.send(cmd, data);
        if self.flags & no_reply != 0 {
            return None;
        }
        let (c, _) = self.read();
        Some(c)
    }

    /// Pass `message` (headers, blank line, body) through; the final
    /// decision ('a' accept, 'c' continue, 'r' reject, 't' tempfail, 'y'
    /// SMTP reply) and the headers the milter added or changed.
    fn deliver(mut self, message: &[u8]) -> (u8, String, Vec<String>) {
        self.step(b'C', b"mx.example.org\x004\x00\x19192.0.2.10\x00", 0x1, 0x1000);
        self.step(b'H', b"mx.example.org\x00", 0x2, 0x2000);
        self.step(b'M', b"<sender@example.org>\x00", 0x4, 0x4000);
        self.step(b'R', b"<recipient@example.net>\x00", 0x8, 0x8000);
        let text = String::from_utf8_lossy(message).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        for line in head.split("\r\n") {
            let (name, value) = line.split_once(": ").unwrap();
            self.step(b'L', format!("{name}\0{value}\0").as_bytes(), 0x20, 0x80);
        }
        self.step(b'N', b"", 0x40, 0x40000);
        for chunk in body.as_bytes().chunks(60_000) {
            self.step(b'B', chunk, 0x10, 0x80000);
        }
        self.send(b'E', b"");
        let mut headers = Vec::new();
        loop {
            let (c, data) = self.read();
            match c {
                b'h' | b'i' | b'm' => headers.push(String::from_utf8_lossy(&data).replace('\0', " ")),
                b'p' => continue,
                _ => return (c, String::from_utf8_lossy(&data).into_owned(), headers),
            }
        }
    }
}

fn mail(attachment: &[u8]) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut b64 = String::new();
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for c in attachment.chunks(3) {
        let n = c.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            let _ = write!(b64, "{}", if i <= c.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    format!(
        "From: sender@example.org\r\nTo: recipient@example.net\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n\
         --b1\r\nContent-Type: application/octet-stream; name=\"invoice.com\"\r\nContent-Transfer-Encoding: base64\r\n\r\n\
         {b64}\r\n--b1--\r\n"
    )
    .into_bytes()
}

#[test]
fn clamav_milter_from_deploy_rejects_infected_mail_and_passes_clean_mail_through_qala() {
    let exe = std::path::PathBuf::from("/usr/sbin/clamav-milter");
    assert!(exe.exists(), "clamav-milter (Debian package clamav-milter) is needed: scripts/test.sh installs it");
    let c = start(&[], &repo_root().join("rules"));
    // deploy/mail/clamav-milter.conf with this test's sockets and log file.
    let milter_port = free_port();
    let log = c.cluster.dir.path().join("milter.log");
    let deployed = std::fs::read_to_string(repo_root().join("deploy/mail/clamav-milter.conf")).unwrap();
    let mut conf: Vec<String> = deployed
        .lines()
        .filter(|l| {
            !["MilterSocketGroup", "MilterSocketMode", "User ", "LogSyslog", "LogFacility"].iter().any(|k| l.starts_with(k))
        })
        .map(|l| match l {
            l if l.starts_with("MilterSocket ") => format!("MilterSocket inet:{milter_port}@127.0.0.1"),
            l if l.starts_with("ClamdSocket ") => format!("ClamdSocket unix:{}", c.socket.display()),
            l => l.to_string(),
        })
        .collect();
    conf.extend(["Foreground yes".into(), "User root".into(), format!("LogFile {}", log.display()), "LogVerbose yes".into()]);
    let conf_path = c.cluster.dir.path().join("clamav-milter.conf");
    std::fs::write(&conf_path, conf.join("\n") + "\n").unwrap();
    let mut milter =
        qala_tests::Proc::spawn("clamav-milter", &exe, &[format!("--config-file={}", conf_path.display())], c.cluster.dir.path())
            .unwrap();
    wait_for("clamav-milter listening", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", milter_port)).ok())
        .unwrap_or_else(|e| panic!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()));

    let (decision, reply, _) = Mta::connect(milter_port).deliver(&mail(&eicar()));
    let milter_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(decision, b'y', "an SMTP reply (reject) for EICAR, got {:?} {reply}: {}", decision as char, milter_log());
    assert!(reply.starts_with("550") && reply.contains("eicar.EICAR_Test_File"), "{reply}");
    let (decision, reply, headers) = Mta::connect(milter_port).deliver(&mail(b"an ordinary attachment\n"));
    assert!(matches!(decision, b'a' | b'c'), "accepted, got {:?} {reply}", decision as char);
    assert!(headers.iter().any(|h| h.contains("X-Virus-Status") && h.contains("Clean")), "{headers:?}");

    // Both messages reached Qala as INSTREAMs from the milter's connections.
    let scans: Vec<Value> =
        c.cluster.audit().into_iter().filter(|e| e["event"] == "scan" && e["client"] == "clamd@unix").collect();
    assert!(scans.iter().any(|s| s["verdict"] == "malicious") && scans.iter().any(|s| s["verdict"] == "clean"), "{scans:?}");
    assert!(milter.is_running(), "clamav-milter died: {}", std::fs::read_to_string(&log).unwrap_or_default());
    let _ = milter.kill_hard();
}

/// Send `FILDES` and then one byte carrying `fd` (none if `fd` is None), as clamav-milter does.
fn fildes(socket: &Path, fd: Option<std::os::fd::RawFd>) -> Vec<u8> {
    use std::os::fd::AsRawFd;
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(b"nFILDES\n").unwrap();
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    let mut control = [0u8; 64];
    // SAFETY: a msghdr over live local buffers; CMSG_* macros stay inside `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if let Some(fd) = fd {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<i32>(), fd);
        }
        assert_eq!(libc::sendmsg(s.as_raw_fd(), &msg, 0), 1);
    }
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

#[test]
fn fildes_scans_a_passed_file_and_refuses_what_is_not_one() {
    use std::os::fd::AsRawFd;
    let c = start(&[], &repo_root().join("rules"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("eicar.com");
    std::fs::write(&path, eicar()).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    let reply = String::from_utf8(fildes(&c.socket, Some(file.as_raw_fd()))).unwrap();
    assert!(reply.starts_with("fd[") && reply.ends_with("]: eicar.EICAR_Test_File FOUND\n"), "{reply:?}");

    // A pipe is not a regular file; no descriptor at all is an error too.
    let (rx, _tx) = std::io::pipe().unwrap();
    let reply = String::from_utf8(fildes(&c.socket, Some(rx.as_raw_fd()))).unwrap();
    assert!(reply.ends_with(": Not a regular file ERROR\n"), "{reply:?}");
    assert_eq!(fildes(&c.socket, None), b"FILDES: didn't receive file descriptor. ERROR\n");
    // Files over the stream limit are refused, not read.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![0u8; STREAM_MAX + 1]).unwrap();
    let f = std::fs::File::open(&big).unwrap();
    let reply = String::from_utf8(fildes(&c.socket, Some(f.as_raw_fd()))).unwrap();
    assert!(reply.contains("File size limit exceeded") && reply.ends_with(" ERROR\n"), "{reply:?}");
    // FILDES means nothing on TCP.
    assert_eq!(talk(c.port, b"nFILDES\n"), b"COMMAND UNAVAILABLE\n");
    let commands = String::from_utf8(talk(c.port, b"nVERSIONCOMMANDS\n")).unwrap();
    assert!(!commands.contains("FILDES"), "{commands}");
}

#[test]
fn a_stalled_stream_is_answered_with_an_error_not_held_open() {
    let c = start(&["--upload-stall-secs", "1"], &repo_root().join("rules"));
    let mut s = TcpStream::connect(("127.0.0.1", c.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A chunk of 100 bytes announced, 10 sent, then silence.
    let mut req = b"zINSTREAM\0".to_vec();
    req.extend_from_slice(&100u32.to_be_bytes());
    req.extend_from_slice(b"0123456789");
    s.write_all(&req).unwrap();
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"stream: INSTREAM: no data within the stall timeout ERROR\0");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
}

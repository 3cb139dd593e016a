//! clamd's wire protocol, as ClamAV's `clamd/session.c` and
//! `clamd/server-th.c` speak it: a command is `zCOMMAND\0`, `nCOMMAND\n`
//! or (the old style, outside sessions) `COMMAND\n`; a reply ends with the
//! command's terminator, and inside an `IDSESSION` starts with the
//! command's number (`3: stream: OK`). INSTREAM data follows its command as
//! chunks of a 4-byte big-endian length and that many bytes, ended by a
//! zero length.

use crate::config::UnscannableAnswer;
use qala_proto::v1 as pb;
use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest command line read (clamd's own buffer is 1 KiB).
pub const MAX_COMMAND: usize = 1024;

/// The commands Qala answers, in the order VERSIONCOMMANDS lists them.
pub const COMMANDS: &[&str] = &["PING", "VERSION", "VERSIONCOMMANDS", "RELOAD", "END", "STATS", "IDSESSION", "INSTREAM"];

/// How a command was framed, which decides the terminator of its reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `COMMAND\n`: the deprecated form, refused inside a session.
    Plain,
    /// `nCOMMAND\n`
    Newline,
    /// `zCOMMAND\0`
    Null,
}

impl Style {
    pub fn terminator(self) -> u8 {
        match self {
            Style::Null => 0,
            Style::Plain | Style::Newline => b'\n',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ping,
    Version,
    VersionCommands,
    Reload,
    Instream,
    IdSession,
    End,
    Stats,
    /// A file descriptor follows (Unix socket only).
    Fildes,
    /// A clamd command Qala does not offer: scanning paths on the server
    /// (SCAN, CONTSCAN, MULTISCAN, ALLMATCHSCAN), SHUTDOWN, ...;
    /// answered `COMMAND UNAVAILABLE`, as clamd answers a disabled one.
    Unavailable(String),
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub style: Style,
}

/// Why no command could be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The connection ended before a whole command.
    Eof,
    /// No terminator within [`MAX_COMMAND`] bytes.
    TooLong,
    Io(String),
}

/// Parse the text of one command (without prefix and terminator).
pub fn parse(text: &[u8]) -> Command {
    let Ok(text) = std::str::from_utf8(text) else { return Command::Unknown(String::from_utf8_lossy(text).into_owned()) };
    match text {
        "PING" => Command::Ping,
        "VERSION" => Command::Version,
        "VERSIONCOMMANDS" => Command::VersionCommands,
        "RELOAD" => Command::Reload,
        "INSTREAM" => Command::Instream,
        "IDSESSION" => Command::IdSession,
        "END" => Command::End,
        "STATS" => Command::Stats,
        "FILDES" => Command::Fildes,
        _ => {
            let word = text.split(' ').next().unwrap_or_default();
            const KNOWN: &[&str] =
                &["SCAN", "CONTSCAN", "MULTISCAN", "ALLMATCHSCAN", "SHUTDOWN", "QUIT", "SELFCHECK", "DETSTATS", "DETSTATSCLEAR"];
            if KNOWN.contains(&word) { Command::Unavailable(word.to_string()) } else { Command::Unknown(text.to_string()) }
        }
    }
}

/// Read one command from `r`.
pub async fn read_request<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Request, ReadError> {
    let first = {
        let buf = r.fill_buf().await.map_err(|e| ReadError::Io(e.to_string()))?;
        *buf.first().ok_or(ReadError::Eof)?
    };
    let (style, term) = match first {
        b'z' => (Style::Null, 0u8),
        b'n' => (Style::Newline, b'\n'),
        _ => (Style::Plain, b'\n'),
    };
    if style != Style::Plain {
        r.consume(1);
    }
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf().await.map_err(|e| ReadError::Io(e.to_string()))?;
        if buf.is_empty() {
            // The old style is one packet, one command: EOF ends it.
            if style == Style::Plain && !line.is_empty() {
                break;
            }
            return Err(ReadError::Eof);
        }
        match buf.iter().position(|&b| b == term) {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                r.consume(i + 1);
                break;
            }
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                r.consume(n);
            }
        }
        if line.len() > MAX_COMMAND {
            return Err(ReadError::TooLong);
        }
    }
    if line.len() > MAX_COMMAND {
        return Err(ReadError::TooLong);
    }
    if term == b'\n' && line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Request { command: parse(&line), style })
}

/// One reply line: `ID: ` inside a session, the text, the terminator.
pub fn reply(session_id: Option<u32>, text: &str, style: Style) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 12);
    if let Some(id) = session_id {
        out.extend_from_slice(format!("{id}: ").as_bytes());
    }
    out.extend_from_slice(text.as_bytes());
    out.push(style.terminator());
    out
}

/// A name as clamd clients expect one: no spaces, no control characters,
/// nothing a log parser splits on.
fn clean_name(s: &str) -> String {
    s.chars().map(|c| if c.is_whitespace() || c.is_control() || c == ':' { '_' } else { c }).collect()
}

/// What clamd would say of `v` after `stream: `: `OK`, or `NAME FOUND`.
///
/// `malicious` and `suspicious` are FOUND (clamd reports heuristics as
/// FOUND too), named `namespace.rule` after the most severe detection; a
/// verdict that is a detection only by the alert policy (limits hit,
/// encrypted members) is `Heuristics.Limits.Exceeded` or
/// `Heuristics.Encrypted`, as ClamAV names them. A limit hit without the
/// alert policy is OK, a file too large too; any other `unscannable` (its
/// scans crashed or timed out) is answered as `unscannable` says.
pub fn verdict_text(v: &pb::Verdict, unscannable: UnscannableAnswer) -> String {
    let kind = pb::VerdictKind::try_from(v.verdict).unwrap_or_default();
    if kind == pb::VerdictKind::Unscannable && !v.limits_hit.iter().any(|l| l.limit == qala_proto::limits::MAX_FILE_SIZE) {
        return match unscannable {
            UnscannableAnswer::Ok => "OK".into(),
            UnscannableAnswer::Found => "Heuristics.Qala.Unscannable FOUND".into(),
            UnscannableAnswer::Error => {
                let why = v.errors.first().map(String::as_str).unwrap_or("no verdict");
                error_text(&format!("Can't scan: {why}"))
            }
        };
    }
    if !matches!(kind, pb::VerdictKind::Malicious | pb::VerdictKind::Suspicious) {
        return "OK".into();
    }
    let name = match v.detections.iter().max_by_key(|d| d.severity) {
        Some(d) if d.namespace.is_empty() => clean_name(&d.rule),
        Some(d) => format!("{}.{}", clean_name(&d.namespace), clean_name(&d.rule)),
        None if !v.limits_hit.is_empty() => "Heuristics.Limits.Exceeded".into(),
        None if !v.encrypted.is_empty() => "Heuristics.Encrypted".into(),
        None => "Heuristics.Qala.Unnamed".into(),
    };
    format!("{name} FOUND")
}

/// An error as one line (clamd's `... ERROR`).
pub fn error_text(message: &str) -> String {
    let one_line: String = message.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    format!("{} ERROR", one_line.trim())
}

/// `Thu Nov 27 09:12:01 2026`: C's ctime(), which clamd's VERSION uses for
/// the database date (UTC here).
pub fn ctime(unix_secs: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(unix_secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let day = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][t.weekday().number_days_from_monday() as usize];
    let month = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][t.month() as usize - 1];
    format!("{day} {month} {:2} {:02}:{:02}:{:02} {}", t.day(), t.hour(), t.minute(), t.second(), t.year())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8]) -> Vec<Result<Request, ReadError>> {
        let mut r = tokio::io::BufReader::with_capacity(7, input);
        let mut out = Vec::new();
        loop {
            let next = read_request(&mut r).await;
            let end = next.is_err();
            out.push(next);
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn the_three_framings_are_read_and_answered_with_their_terminator() {
        let got = read_all(b"zPING\0nVERSION\nzIDSESSION\0nSTATS\r\nzINSTREAM\0").await;
        let want = [
            (Command::Ping, Style::Null),
            (Command::Version, Style::Newline),
            (Command::IdSession, Style::Null),
            (Command::Stats, Style::Newline),
            (Command::Instream, Style::Null),
        ];
        for (g, (c, s)) in got.iter().zip(want) {
            assert_eq!(g, &Ok(Request { command: c, style: s }));
        }
        assert_eq!(got.last(), Some(&Err(ReadError::Eof)));
        // The old style, ended by a newline or by the end of the packet.
        assert_eq!(read_all(b"PING\n").await[0], Ok(Request { command: Command::Ping, style: Style::Plain }));
        assert_eq!(read_all(b"VERSION").await[0], Ok(Request { command: Command::Version, style: Style::Plain }));
        assert_eq!(reply(None, "PONG", Style::Null), b"PONG\0");
        assert_eq!(reply(Some(3), "stream: OK", Style::Newline), b"3: stream: OK\n");
    }

    #[tokio::test]
    async fn unknown_unavailable_and_overlong_commands() {
        assert_eq!(parse(b"PINGX"), Command::Unknown("PINGX".into()));
        assert_eq!(parse(b"ping"), Command::Unknown("ping".into()));
        assert_eq!(parse(b"SCAN /etc/shadow"), Command::Unavailable("SCAN".into()));
        assert_eq!(parse(b"SHUTDOWN"), Command::Unavailable("SHUTDOWN".into()));
        assert!(matches!(parse(&[0xff, 0xfe]), Command::Unknown(_)));
        let long = [b"n".as_slice(), &[b'A'; 5000], b"\n"].concat();
        assert_eq!(read_all(&long).await[0], Err(ReadError::TooLong));
        assert_eq!(read_all(b"zPING").await[0], Err(ReadError::Eof), "no terminator: not a command");
    }

    fn det(namespace: &str, rule: &str, severity: pb::VerdictKind) -> pb::Detection {
        pb::Detection { namespace: namespace.into(), rule: rule.into(), severity: severity as i32, ..Default::default() }
    }

    #[test]
    fn verdicts_map_to_clamd_replies() {
        let v = |kind: pb::VerdictKind| pb::Verdict { verdict: kind as i32, ..Default::default() };
        let verdict_text = |v: &pb::Verdict| super::verdict_text(v, UnscannableAnswer::Error);
        assert_eq!(verdict_text(&v(pb::VerdictKind::Clean)), "OK");
        let mut unscannable = v(pb::VerdictKind::Unscannable);
        unscannable.limits_hit.push(pb::LimitHit { limit: "max_file_size".into(), ..Default::default() });
        assert_eq!(verdict_text(&unscannable), "OK", "a limit hit is not a detection without the alert policy");
        let crashed = qala_proto::Unscannable {
            limit: qala_proto::limits::WORKER_CRASH,
            detail: String::new(),
            error: "its scan process died twice".into(),
        }
        .verdict("ab", 1, "", "", "");
        assert_eq!(verdict_text(&crashed), "Can't scan: its scan process died twice ERROR", "fails closed by default");
        assert_eq!(super::verdict_text(&crashed, UnscannableAnswer::Found), "Heuristics.Qala.Unscannable FOUND");
        assert_eq!(super::verdict_text(&crashed, UnscannableAnswer::Ok), "OK");
        let mut m = v(pb::VerdictKind::Malicious);
        m.detections =
            vec![det("test", "Weak", pb::VerdictKind::Suspicious), det("my rules", "Eicar", pb::VerdictKind::Malicious)];
        assert_eq!(verdict_text(&m), "my_rules.Eicar FOUND");
        let mut alert = v(pb::VerdictKind::Suspicious);
        alert.limits_hit = unscannable.limits_hit.clone();
        assert_eq!(verdict_text(&alert), "Heuristics.Limits.Exceeded FOUND");
        let mut enc = v(pb::VerdictKind::Suspicious);
        enc.encrypted.push("a.zip/x".into());
        assert_eq!(verdict_text(&enc), "Heuristics.Encrypted FOUND");
        assert_eq!(error_text("store\ndown "), "store down ERROR");
    }

    #[test]
    fn ctime_is_c_ctime() {
        assert_eq!(ctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(ctime(1_795_800_000), "Fri Nov 27 17:20:00 2026");
    }
}

//! The client side of the health endpoints every Qala service can open on
//! its plain-HTTP metrics listener (`/healthz`: the process answers;
//! `/readyz`: it can do its work): what `qala-coordinator health` and
//! `qala-worker health` call from an exec probe. Plain `std`, one
//! HTTP/1.0 request: a probe must not need a runtime or TLS.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Most of an answer read: health answers are a few hundred bytes.
const MAX_ANSWER: u64 = 64 << 10;

/// `GET path` on `address` (`host:port`): the status code and the body.
pub fn probe(address: &str, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let addr = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{address}: {e}"))?;
    s.set_read_timeout(Some(timeout)).and_then(|()| s.set_write_timeout(Some(timeout))).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n").map_err(|e| format!("{address}: {e}"))?;
    // Read to the end; a reset after the answer came (a server that closed
    // without reading all of the request) keeps what was read.
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while (answer.len() as u64) < MAX_ANSWER {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) if !answer.is_empty() => break,
            Err(e) => return Err(format!("{address}: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{address}: not an HTTP answer: {:?}", head.lines().next().unwrap_or("")))?;
    Ok((code, body.to_string()))
}

/// What an exec probe does: `/readyz` (or `/healthz` when `live`) on
/// `address`; Ok with the body when it answers 200, else why not.
pub fn check(address: &str, live: bool, timeout: Duration) -> Result<String, String> {
    let path = if live { "/healthz" } else { "/readyz" };
    match probe(address, path, timeout)? {
        (200, body) => Ok(body),
        (code, body) => Err(format!("{path} answered {code}: {}", body.trim())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(answer: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            // The whole request, then the answer, then a clean close.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            c.write_all(answer.as_bytes()).unwrap();
            let _ = c.shutdown(std::net::Shutdown::Write);
        });
        addr
    }

    #[test]
    fn ready_unready_and_not_http() {
        let t = Duration::from_secs(5);
        let a = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\n{\"ready\":true}");
        assert_eq!(check(&a, false, t).unwrap(), "{\"ready\":true}");
        let a = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n{\"ready\":false,\"reasons\":[\"no worker\"]}\n");
        let e = check(&a, false, t).unwrap_err();
        assert!(e.contains("503") && e.contains("no worker"), "{e}");
        let a = serve_once("SSH-2.0-OpenSSH\r\n");
        assert!(check(&a, true, t).unwrap_err().contains("not an HTTP answer"));
        // Nobody listening.
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(check(&format!("127.0.0.1:{port}"), true, t).is_err());
    }
}

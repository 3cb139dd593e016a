//! Frames between the worker and a scan child over a Unix stream socket:
//! a 4-byte little-endian length, then the payload; a file descriptor may
//! ride along with a frame's first bytes (SCM_RIGHTS).

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// Send one frame, with `fd` attached if given.
pub fn send(sock: &mut UnixStream, payload: &[u8], fd: Option<BorrowedFd<'_>>) -> std::io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| std::io::Error::other("frame too large"))?.to_le_bytes();
    let raw = fd.map(|f| [f.as_raw_fd()]);
    let cmsg: Vec<ControlMessage<'_>> = raw.as_ref().map(|r| vec![ControlMessage::ScmRights(r)]).unwrap_or_default();
    // The descriptor goes with the first bytes; the rest is plain writes.
    let sent = loop {
        match sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(&len)], &cmsg, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    sock.write_all(&len[sent..])?;
    sock.write_all(payload)
}

/// Receive one frame of at most `max` bytes, and the descriptor sent with it.
pub fn recv(sock: &mut UnixStream, max: usize) -> std::io::Result<(Vec<u8>, Option<OwnedFd>)> {
    let mut len = [0u8; 4];
    let mut fd = None;
    let got = loop {
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [IoSliceMut::new(&mut len)];
        match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(msg) => {
                for c in msg.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(fds) = c {
                        for (i, raw) in fds.into_iter().enumerate() {
                            // SAFETY: the kernel just gave us this descriptor; we own it.
                            let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                            if i == 0 {
                                fd = Some(owned);
                            }
                        }
                    }
                }
                break msg.bytes;
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Err(std::io::ErrorKind::WouldBlock.into()),
            Err(e) => return Err(e.into()),
        }
    };
    if got == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    sock.read_exact(&mut len[got..])?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(std::io::Error::other(format!("frame of {len} bytes is over the {max} byte limit")));
    }
    let mut payload = vec![0; len];
    sock.read_exact(&mut payload)?;
    Ok((payload, fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn frames_carry_payloads_and_descriptors() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let file = tempfile_with(b"hello");
        send(&mut a, b"first", Some(file.as_fd())).unwrap();
        // Larger than the socket's buffer: written while the other end reads.
        let writer = std::thread::spawn(move || {
            send(&mut a, &vec![7u8; 300_000], None).unwrap();
            a
        });
        let (p, fd) = recv(&mut b, 1 << 20).unwrap();
        assert_eq!(p, b"first");
        let mut got = String::new();
        std::fs::File::from(fd.unwrap()).read_to_string(&mut got).unwrap();
        assert_eq!(got, "hello");
        let (p, fd) = recv(&mut b, 1 << 20).unwrap();
        assert_eq!((p.len(), fd.is_none()), (300_000, true));
        let mut a = writer.join().unwrap();
        send(&mut a, &[0; 100], None).unwrap();
        assert!(recv(&mut b, 10).is_err(), "over the limit");
        drop(a);
        let mut rest = Vec::new();
        let _ = b.read_to_end(&mut rest);
        assert_eq!(recv(&mut b, 10).unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
    }

    fn tempfile_with(data: &[u8]) -> std::fs::File {
        let f = super::super::memfd("test").unwrap();
        (&f).write_all(data).unwrap();
        let mut f = f;
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).unwrap();
        f
    }
}

//! clamd's FILDES on the Unix socket: the client sends `nFILDES\n`, then
//! one byte carrying an open file descriptor (SCM_RIGHTS), and the server
//! scans that file. clamav-milter always does this on a Unix socket (it
//! spools the message to a temporary file and passes the descriptor), and
//! `clamdscan --fdpass` does too.
//!
//! A plain `read()` of the byte would drop the descriptor, so every read
//! of a Unix connection is a `recvmsg` with room for a few descriptors:
//! they are queued for the FILDES command that asks for one, and the
//! queue is short (a client passing descriptors it never names cannot pile
//! them up in the coordinator).

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::UnixStream;

/// Descriptors received and not yet claimed; the oldest are closed past this.
const MAX_QUEUED: usize = 4;

/// The descriptors a connection has received, oldest first.
#[derive(Clone, Default)]
pub struct Fds(Arc<Mutex<VecDeque<OwnedFd>>>);

impl Fds {
    pub fn take(&self) -> Option<OwnedFd> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
    }

    fn push(&self, fd: OwnedFd) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(fd);
        while q.len() > MAX_QUEUED {
            q.pop_front();
        }
    }
}

/// A Unix stream whose reads keep the descriptors passed with the data.
pub struct FdStream {
    inner: UnixStream,
    fds: Fds,
}

impl FdStream {
    pub fn new(inner: UnixStream) -> (Self, Fds) {
        let fds = Fds::default();
        (Self { inner, fds: fds.clone() }, fds)
    }
}

fn recv(sock: RawFd, buf: &mut [u8], fds: &Fds) -> std::io::Result<usize> {
    loop {
        let mut space = nix::cmsg_space!([RawFd; MAX_QUEUED]);
        let mut iov = [IoSliceMut::new(buf)];
        match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT) {
            Ok(msg) => {
                for c in msg.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        for fd in raw {
                            // SAFETY: the kernel just gave this process the descriptor; nothing else owns it.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                return Ok(msg.bytes);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl AsyncRead for FdStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            ready!(this.inner.poll_read_ready(cx))?;
            let (sock, fds) = (this.inner.as_raw_fd(), &this.fds);
            let unfilled = buf.initialize_unfilled();
            match this.inner.try_io(Interest::READABLE, || recv(sock, unfilled, fds)) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

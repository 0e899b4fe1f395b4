//! Plain TCP sockets written by direct system calls: [`RawTcp`] wraps a
//! tokio `TcpStream` (its registration with the runtime's reactor, its
//! readiness, its reads and its shutdown) and does the writes itself with
//! rustix, whose Linux backend issues the `sendto` and `writev` system
//! calls in line.
//!
//! Why: tokio reads and writes through std, which calls glibc's `recv`,
//! `send` and `writev`. These are thread-cancellation points, and in a
//! process with more than one thread glibc brackets each with
//! `__pthread_enable_asynccancel` / `__pthread_disable_asynccancel` (atomic
//! updates of the thread's cancellation state): by `benches/anatomy.sh`
//! about 0.1 µs of a proxied request's ~16 µs of CPU, on the four such
//! calls a request makes. nginx, whose workers are single-threaded
//! processes, pays none of it. The gateway never cancels threads, so the
//! bracket buys nothing here. Reads stay tokio's (see [`RawTcp`]'s
//! `poll_read`): half the calls.
//!
//! Readiness is kept exactly as tokio keeps it for its own `TcpStream`: a
//! read or write that moves fewer bytes than asked clears the socket's
//! readiness (the kernel buffer is then known to be drained, or full, with
//! epoll's edge-triggered events), so the next operation waits for an event
//! instead of making a system call that would only answer `EAGAIN`. Used
//! for plain client connections and the lean upstream client's connections;
//! TLS keeps tokio's stream under rustls.

use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Linux's limit on the slices of one `writev` (`UIO_MAXIOV`; rustix's
/// own copy is private).
const IOV_MAX: usize = 1024;

/// A TCP stream whose writes bypass glibc (see the module docs).
#[derive(Debug)]
pub struct RawTcp(TcpStream);

impl RawTcp {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> RawTcp {
        RawTcp(stream)
    }

    /// The stream, for what the wrapper does not do itself (readiness
    /// probes, addresses, socket options).
    pub fn get_ref(&self) -> &TcpStream {
        &self.0
    }

    /// Runs one non-blocking write `op` once the socket is writable; `op`
    /// answers (bytes written, bytes asked). A short write, or `EAGAIN`,
    /// clears the write readiness (as tokio's `PollEvented` does), so the
    /// next one waits for an event.
    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        mut op: impl FnMut() -> io::Result<(usize, usize)>,
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.poll_write_ready(cx))?;
            let mut moved = 0;
            // `try_io` clears the readiness when the closure answers
            // `WouldBlock`: a short transfer is reported that way too, and
            // its count kept aside in `moved`.
            let r = self.0.try_io(Interest::WRITABLE, || {
                let (n, asked) = op()?;
                if n > 0 && n < asked {
                    moved = n;
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match r {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if moved > 0 {
                        return Poll::Ready(Ok(moved));
                    }
                    // Readiness cleared: the next poll registers the waker.
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for RawTcp {
    /// tokio's read: a safe raw read would have to zero the buffer's
    /// spare capacity first (`unsafe` is forbidden here), which costs more
    /// than glibc's bracket saves.
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for RawTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let fd = self.0.as_fd();
        // NOSIGNAL: a peer that has gone answers EPIPE, never SIGPIPE (as
        // std's `send` does).
        self.poll_write_with(cx, || {
            let n = rustix::net::send(fd, buf, rustix::net::SendFlags::NOSIGNAL)?;
            Ok((n, buf.len()))
        })
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // rustix passes the kernel at most IOV_MAX slices (it refuses more):
        // `asked` counts only those, or a whole write would look short and
        // clear the readiness of a socket that still has room.
        let bufs = &bufs[..bufs.len().min(IOV_MAX)];
        let asked: usize = bufs.iter().map(|b| b.len()).sum();
        if asked == 0 {
            return Poll::Ready(Ok(0));
        }
        let fd = self.0.as_fd();
        self.poll_write_with(cx, || Ok((rustix::io::writev(fd, bufs)?, asked)))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (RawTcp, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (RawTcp::new(a.unwrap()), b.unwrap().0)
    }

    #[tokio::test]
    async fn reads_and_writes_like_a_tcp_stream() {
        let (mut raw, mut peer) = pair().await;
        raw.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");

        let parts = [IoSlice::new(b"ab"), IoSlice::new(b""), IoSlice::new(b"cd")];
        let n = raw.write_vectored(&parts).await.unwrap();
        assert_eq!(n, 4);
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"abcd");

        peer.write_all(b"world").await.unwrap();
        let mut got = vec![0u8; 5];
        raw.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"world");
    }

    #[tokio::test]
    async fn more_slices_than_the_kernel_takes_at_once_are_written_in_parts() {
        let (mut raw, mut peer) = pair().await;
        let one = [5u8; 3];
        let parts: Vec<IoSlice<'_>> = (0..IOV_MAX + 10).map(|_| IoSlice::new(&one)).collect();
        let n = raw.write_vectored(&parts).await.unwrap();
        assert_eq!(n, IOV_MAX * one.len());
        // Counted as a short write, it would have cleared the readiness of
        // a socket with room left, and no event would ever wake this one.
        let more = tokio::time::timeout(std::time::Duration::from_secs(2), raw.write_all(b"end"));
        more.await
            .expect("the next write waits for nothing")
            .unwrap();
        drop(raw);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), n + 3);
    }

    #[tokio::test]
    async fn a_short_write_clears_the_readiness() {
        let (mut raw, mut peer) = pair().await;
        // More than the socket buffers hold while the peer reads nothing.
        let big = vec![7u8; 64 << 20];
        let n = raw.write(&big).await.unwrap();
        assert!(n > 0 && n < big.len(), "{n}");
        // Fewer bytes than asked: the buffer is full, so the next write
        // waits for an event rather than asking the kernel for `EAGAIN`.
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(raw.get_ref().poll_write_ready(&mut cx).is_pending());
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            peer.read_to_end(&mut got).await.unwrap();
            got.len()
        });
        raw.write_all(&big[n..]).await.unwrap();
        raw.shutdown().await.unwrap();
        drop(raw);
        assert_eq!(reader.await.unwrap(), big.len());
    }

    #[tokio::test]
    async fn a_closed_peer_fails_a_write_without_a_signal() {
        let (mut raw, peer) = pair().await;
        drop(peer);
        // The first write may still be accepted; the peer's reset fails a
        // later one with an error (EPIPE or ECONNRESET), not SIGPIPE.
        let mut failed = false;
        for _ in 0..50 {
            if raw.write_all(&[0u8; 1024]).await.is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert!(failed);
    }

    #[tokio::test]
    async fn shutdown_ends_the_peers_stream() {
        let (mut raw, mut peer) = pair().await;
        raw.write_all(b"x").await.unwrap();
        raw.shutdown().await.unwrap();
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"x");
    }
}

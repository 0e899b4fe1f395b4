//! Request-framing guard for HTTP/1 connections: watches the bytes a client
//! sends and flags the first request whose head carries both
//! `Content-Length` and `Transfer-Encoding`, or more than one
//! `Content-Length` (equal or not). hyper accepts such heads after dropping
//! or merging the extra `Content-Length`, so the pipeline never sees them;
//! across proxies that disagree on framing they smuggle requests (RFC 9112
//! §6.3, §11.2). Owns head scanning and body skipping, and the header-read
//! timeout (slowloris), which needs to know when a head began arriving:
//! a head that arrives in pieces must be complete within the timeout of
//! its first byte, or the connection answers 408 itself and closes.
//! hyper's own header timeout would arm a timer for every request; this
//! one costs nothing for a head that arrives in one read, as nearly all
//! do. `server` answers the flagged request. Once a request is flagged,
//! nothing after it on the connection is trusted, and scanning stops.
//! HTTP/2 connections (prior knowledge preface) are not scanned: h2 frames
//! carry their own lengths.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Why a request's framing was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// `Content-Length` and `Transfer-Encoding` in one head.
    LengthAndChunked,
    /// More than one `Content-Length` line.
    DuplicateLength,
}

impl Violation {
    /// The reason shown in the 400 problem.
    pub fn reason(self) -> &'static str {
        match self {
            Violation::LengthAndChunked => "both Content-Length and Transfer-Encoding",
            Violation::DuplicateLength => "more than one Content-Length",
        }
    }
}

/// What the scanner found, shared with the connection's service: the index
/// of the first flagged request and how many requests the service has seen.
#[derive(Debug, Default)]
pub struct Verdict {
    first_bad: OnceLock<(u64, Violation)>,
    served: AtomicU64,
}

impl Verdict {
    /// Called once per request, in order (HTTP/1 serves one at a time):
    /// the violation if this request or an earlier one was flagged.
    pub fn next_request(&self) -> Option<Violation> {
        let n = self.served.fetch_add(1, Ordering::Relaxed);
        match self.first_bad.get() {
            Some(&(bad, v)) if n >= bad => Some(v),
            _ => None,
        }
    }
}

#[derive(Debug)]
enum State {
    /// Collecting a request head until its empty line.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Reading a chunk-size line (its bytes so far are in `line`).
    ChunkSize,
    /// Skipping chunk data.
    ChunkData(u64),
    /// Skipping to the end of the line that closes a chunk's data.
    ChunkEnd,
    /// Trailer fields after the last chunk; `true` at the start of a line.
    Trailers(bool),
    /// Not scanning (HTTP/2, a flagged request, or bytes hyper will refuse).
    Off,
}

/// The byte-level scanner. Feed it every byte read from the client, in order.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    /// A head or chunk-size line split across reads.
    line: Vec<u8>,
    /// Request heads seen so far (the next one's index).
    heads: u64,
    max_head: usize,
    verdict: Arc<Verdict>,
}

impl Scanner {
    /// A scanner that gives up on heads longer than `max_head` bytes (hyper
    /// answers 431 to those itself).
    pub fn new(max_head: usize, verdict: Arc<Verdict>) -> Scanner {
        Scanner {
            state: State::Head,
            line: Vec::new(),
            heads: 0,
            max_head,
            verdict,
        }
    }

    /// Consumes the next bytes of the client's stream.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match &mut self.state {
                State::Off => return,
                State::Body(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkData(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::ChunkEnd;
                    }
                }
                State::ChunkEnd => match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        data = &data[i + 1..];
                        self.state = State::ChunkSize;
                    }
                    None => return,
                },
                State::Trailers(at_line_start) => {
                    let b = data[0];
                    data = &data[1..];
                    match b {
                        b'\n' if *at_line_start => self.state = State::Head,
                        b'\n' => *at_line_start = true,
                        b'\r' => {}
                        _ => *at_line_start = false,
                    }
                }
                State::ChunkSize => match memchr::memchr(b'\n', data) {
                    Some(i) => {
                        self.line.extend_from_slice(&data[..i]);
                        data = &data[i + 1..];
                        self.state = match chunk_size(&self.line) {
                            Some(0) => State::Trailers(true),
                            Some(n) => State::ChunkData(n),
                            None => State::Off,
                        };
                        self.line.clear();
                    }
                    None => {
                        self.line.extend_from_slice(data);
                        if self.line.len() > 1024 {
                            self.state = State::Off;
                        }
                        return;
                    }
                },
                State::Head => {
                    // Empty lines before a request line are allowed (RFC 9112 §2.2).
                    if self.line.is_empty() {
                        let skip = data
                            .iter()
                            .take_while(|&&b| b == b'\r' || b == b'\n')
                            .count();
                        data = &data[skip..];
                        if data.is_empty() {
                            return;
                        }
                        // The common case: the whole head in one read, no copy.
                        if let Some(end) = head_end(data, 0) {
                            let found = inspect(&data[..end]);
                            data = &data[end..];
                            self.enter(found);
                            continue;
                        }
                    }
                    let before = self.line.len();
                    self.line.extend_from_slice(data);
                    // Resume the search a little before the new bytes: the
                    // empty line may straddle two reads.
                    match head_end(&self.line, before.saturating_sub(3)) {
                        Some(end) => {
                            data = &data[end - before..];
                            let found = inspect(&self.line[..end]);
                            self.line.clear();
                            self.enter(found);
                        }
                        None => {
                            if self.line.len() > self.max_head {
                                self.state = State::Off;
                            }
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Counts a finished head and moves to its body, or stops at a violation.
    fn enter(&mut self, (state, violation): (State, Option<Violation>)) {
        let index = self.heads;
        self.heads += 1;
        self.state = match violation {
            Some(v) => {
                let _ = self.verdict.first_bad.set((index, v));
                State::Off
            }
            None => state,
        };
    }
}

/// Inspects a complete head: its framing violation, if any, and the state
/// that skips its body.
fn inspect(head: &[u8]) -> (State, Option<Violation>) {
    if head.starts_with(b"PRI * HTTP/2") {
        return (State::Off, None);
    }
    let (mut lengths, mut length, mut chunked, mut te) = (0, None, false, false);
    // Line starts found with memchr (vectorised); only lines that begin
    // like one of the two names are looked at further.
    let mut start = memchr::memchr(b'\n', head).map_or(head.len(), |i| i + 1);
    while start < head.len() {
        let end = memchr::memchr(b'\n', &head[start..]).map_or(head.len(), |i| start + i);
        let line = &head[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        start = end + 1;
        let name_is = |name: &[u8]| {
            line.len() > name.len()
                && line[name.len()] == b':'
                && line[..name.len()].eq_ignore_ascii_case(name)
        };
        match line.first() {
            Some(b'c' | b'C') if name_is(b"content-length") => {
                lengths += 1;
                length = std::str::from_utf8(trim(&line[15..]))
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok());
            }
            Some(b't' | b'T') if name_is(b"transfer-encoding") => {
                te = true;
                // Like hyper: the last line's last coding decides.
                chunked = trim(&line[18..])
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|c| trim(c).eq_ignore_ascii_case(b"chunked"));
            }
            _ => {}
        }
    }
    if lengths > 0 && te {
        return (State::Off, Some(Violation::LengthAndChunked));
    }
    if lengths > 1 {
        return (State::Off, Some(Violation::DuplicateLength));
    }
    let state = match (te, chunked, length) {
        (true, true, _) => State::ChunkSize,
        (false, _, Some(0)) => State::Head,
        (false, _, Some(n)) => State::Body(n),
        (false, _, None) if lengths == 0 => State::Head,
        // Framing hyper refuses (a bad length, a final coding other than
        // chunked): it answers 400 and closes, so there is nothing more to scan.
        _ => State::Off,
    };
    (state, None)
}

/// End (exclusive) of the first empty line at or after `from`: `\n\n` or `\n\r\n`.
fn head_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = memchr::memchr(b'\n', &buf[i..]) {
        let nl = i + off;
        match (buf.get(nl + 1), buf.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().take_while(|c| c.is_ascii_whitespace()).count();
    let end = b.len()
        - b[start..]
            .iter()
            .rev()
            .take_while(|c| c.is_ascii_whitespace())
            .count();
    &b[start..end]
}

pin_project_lite::pin_project! {
    /// A client stream whose reads pass through a [`Scanner`], and whose
    /// request heads must arrive within the header timeout; writes go
    /// straight through.
    pub struct Guarded<IO> {
        #[pin]
        io: IO,
        scanner: Scanner,
        header_timeout: Option<Duration>,
        // When the head now arriving began to (`None` between heads).
        head_started: Option<Instant>,
        // Made at the first head that arrives in pieces, then reused.
        timer: Option<Pin<Box<Sleep>>>,
        timed_out: bool,
    }
}

impl<IO> Guarded<IO> {
    /// Wraps `io`; flagged requests are reported through `verdict`, and a
    /// request head still incomplete `header_timeout` after its first
    /// byte gets a 408 problem and ends the connection.
    pub fn new(
        io: IO,
        max_head: usize,
        verdict: Arc<Verdict>,
        header_timeout: Option<Duration>,
    ) -> Guarded<IO> {
        Guarded {
            io,
            scanner: Scanner::new(max_head, verdict),
            header_timeout,
            head_started: None,
            timer: None,
            timed_out: false,
        }
    }
}

impl Scanner {
    /// Whether part of a request head has arrived and the rest has not.
    fn mid_head(&self) -> bool {
        matches!(self.state, State::Head) && !self.line.is_empty()
    }
}

impl<IO: AsyncRead + AsyncWrite> AsyncRead for Guarded<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if *this.timed_out {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let before = buf.filled().len();
        let polled = this.io.as_mut().poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.scanner.feed(&buf.filled()[before..]);
        }
        // The header timeout (hyper's own is off): a head that arrives in
        // one read, as nearly all do, costs nothing here; only one that
        // arrives in pieces starts the clock and the connection's timer.
        if !this.scanner.mid_head() {
            *this.head_started = None;
            return polled;
        }
        let Some(after) = *this.header_timeout else {
            return polled;
        };
        let deadline = *this.head_started.get_or_insert_with(Instant::now) + after;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return polled;
        }
        // Best effort: the 408 goes out if the socket takes it now.
        *this.timed_out = true;
        let answer = crate::problem::GatewayError::HeaderTimeout { after }.to_http1_bytes();
        if let Poll::Ready(Ok(n)) = this.io.as_mut().poll_write(cx, &answer)
            && n == answer.len()
        {
            let _ = this.io.as_mut().poll_flush(cx);
        }
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    }
}

impl<IO: AsyncWrite> AsyncWrite for Guarded<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flagged request's index and why.
    type Flagged = Option<(u64, Violation)>;

    /// Feeds `stream` in pieces of `step` bytes; returns the flagged request.
    fn scan(stream: &str, step: usize) -> Flagged {
        let verdict = Arc::new(Verdict::default());
        let mut s = Scanner::new(16 * 1024, verdict.clone());
        for piece in stream.as_bytes().chunks(step) {
            s.feed(piece);
        }
        verdict.first_bad.get().copied()
    }

    #[test]
    fn framing_cases() {
        use Violation::*;
        let cases: &[(&str, &str, Flagged)] = &[
            ("plain get", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", None),
            (
                "length then chunked",
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Some((0, LengthAndChunked)),
            ),
            (
                "chunked then length, odd case",
                "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n",
                Some((0, LengthAndChunked)),
            ),
            (
                "equal lengths",
                "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
                Some((0, DuplicateLength)),
            ),
            (
                "bare LF head",
                "POST / HTTP/1.1\nContent-Length: 1\nContent-Length: 1\n\nx",
                Some((0, DuplicateLength)),
            ),
            (
                "length body skipped, second request flagged",
                "POST / HTTP/1.1\r\nContent-Length: 40\r\n\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n\
                 GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
                Some((1, DuplicateLength)),
            ),
            (
                "chunked body with extension and trailer skipped",
                "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
                 5;x=y\r\nhello\r\n16\r\nContent-Length: 12\r\n\r\n\r\n0\r\nX-Sum: 1\r\n\r\n\
                 GET / HTTP/1.1\r\nHost: a\r\n\r\n\
                 GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                Some((2, LengthAndChunked)),
            ),
            (
                "leading empty lines",
                "\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
                Some((0, DuplicateLength)),
            ),
            (
                "h2 preface is not scanned",
                "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                None,
            ),
        ];
        for (name, stream, want) in cases {
            for step in [1, 3, 7, 4096] {
                assert_eq!(scan(stream, step), *want, "case {name}, step {step}");
            }
        }
    }

    #[test]
    fn requests_from_the_flagged_one_on_are_refused() {
        let verdict = Arc::new(Verdict::default());
        let mut s = Scanner::new(1024, verdict.clone());
        s.feed(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx");
        assert_eq!(verdict.next_request(), None);
        assert_eq!(verdict.next_request(), Some(Violation::DuplicateLength));
        assert_eq!(verdict.next_request(), Some(Violation::DuplicateLength));
    }
}

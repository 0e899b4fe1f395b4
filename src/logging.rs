//! Log output: the `tracing` subscriber the binary installs (`--log-format`,
//! `RUST_LOG` levels and module filters) and where its lines go. Owns the
//! line sink on stderr, batching it per proxy worker and flushing it, and the
//! hand-written JSON line of the access-log event. The pipeline owns the
//! event and its fields; `main` and `serve_per_core` say which threads batch.
//!
//! Why batch per worker: a `write(2)` per line cost a worker about 15% of its
//! throughput (measured at c77b704), and a writer thread (tracing-appender's
//! non-blocking writer, used until this module) competes with the workers
//! for the cores and costs a channel send and often a wakeup per line. Here a
//! proxy worker appends whole lines to its own 64 KiB buffer and writes it
//! with one `write(2)` when the next line would not fit, every
//! `--log-flush-ms` (default [`DEFAULT_FLUSH_MS`], 100 ms) from a timer on
//! its own runtime, and when it stops.
//! Every other thread (the blocking pool, `demo-upstream`, CLI commands,
//! tests) writes each line as it comes.
//!
//! Invariants:
//! * A `write(2)` carries whole lines only, so lines of different threads
//!   never interleave: on a regular file because Linux moves the offset of
//!   one open file atomically per write (also without `O_APPEND`); on a pipe
//!   or terminal because each write is at most `PIPE_BUF` (4096) bytes,
//!   which POSIX makes atomic. The one exception is a single line longer
//!   than 4096 bytes (a client sending a multi-KiB path), which goes out in
//!   a write of its own and may interleave on a pipe.
//! * While the process runs, a line waits at most the flush interval (plus
//!   however long its worker is busy with one poll) before its write. On a
//!   graceful shutdown each worker writes its buffer as it stops, before
//!   `main` exits; a crash that skips unwinding (SIGKILL, abort) loses up to
//!   one interval or 64 KiB of lines per worker.
//! * Each worker's lines are in order; lines of different workers are not
//!   merged in time order (sort by `timestamp`).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::future::Future;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Json, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::cli::LogFormat;
use crate::pipeline::ACCESS_LOG;

/// Default of `--log-flush-ms`, the longest a line waits in a worker's
/// buffer while the worker runs: short enough for `tail -f`, long enough
/// that an idle worker wakes ten times a second at most.
pub const DEFAULT_FLUSH_MS: u64 = 100;

/// The flush interval `init` set, in milliseconds.
static FLUSH_MS: AtomicU64 = AtomicU64::new(DEFAULT_FLUSH_MS);

/// A worker's buffer. 64 KiB holds ~150 access-log lines of ~400 bytes, so a
/// saturated worker makes one `write(2)` per ~150 requests.
const BUFFER_BYTES: usize = 64 * 1024;

/// `PIPE_BUF` on Linux: a write of at most this many bytes to a pipe is
/// atomic, never mixed with another writer's.
const PIPE_BUF: usize = 4096;

/// Installs the process-wide subscriber: `RUST_LOG` (default `info`), the
/// format, lines to stderr through [`Sink::stderr`], batched threads
/// flushing every `flush_ms` milliseconds.
pub fn init(format: LogFormat, flush_ms: u64) {
    use tracing_subscriber::util::SubscriberInitExt as _;
    FLUSH_MS.store(flush_ms.max(1), Ordering::Relaxed);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    dispatch(format, filter, Sink::stderr()).init();
}

/// The subscriber `init` installs, writing to `writer`: tests hand it their
/// own writer to read what an operator would.
pub fn dispatch<W>(format: LogFormat, filter: EnvFilter, writer: W) -> tracing::Dispatch
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Json => {
            let stock = tracing_subscriber::fmt::format().json();
            tracing::Dispatch::new(builder.json().event_format(JsonLines { stock }).finish())
        }
        LogFormat::Pretty => tracing::Dispatch::new(builder.finish()),
    }
}

/// Runs `fut` on `rt` with the log lines this thread writes meanwhile
/// batched: flushed every `--log-flush-ms` and when `fut` completes (or
/// unwinds). Only a current-thread runtime runs the flush timer on this
/// thread; on any other `fut` runs unbatched.
pub fn block_on_batched<F: Future>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output {
    if rt.handle().runtime_flavor() != tokio::runtime::RuntimeFlavor::CurrentThread {
        return rt.block_on(fut);
    }
    let _batching = Batching::start();
    rt.block_on(async {
        let timer = tokio::spawn(async {
            let every = Duration::from_millis(FLUSH_MS.load(Ordering::Relaxed));
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                BATCH.with_borrow_mut(Batch::flush);
            }
        });
        let out = fut.await;
        timer.abort();
        out
    })
}

/// Marks this thread as batching; when dropped, flushes and stops.
struct Batching;

impl Batching {
    fn start() -> Batching {
        BATCH.with_borrow_mut(|b| b.on = true);
        Batching
    }
}

impl Drop for Batching {
    fn drop(&mut self) {
        // `try_with`: a panic while the thread's locals are torn down must
        // not turn into an abort here.
        let _ = BATCH.try_with(|b| {
            if let Ok(mut b) = b.try_borrow_mut() {
                b.flush();
                b.on = false;
            }
        });
    }
}

thread_local! {
    static BATCH: RefCell<Batch> = const {
        RefCell::new(Batch { on: false, lines: Vec::new(), out: None })
    };
}

/// One thread's unwritten lines and where they go.
struct Batch {
    on: bool,
    lines: Vec<u8>,
    out: Option<Arc<Output>>,
}

impl Batch {
    fn push(&mut self, out: &Arc<Output>, line: &[u8]) {
        if self.out.as_ref().is_some_and(|o| !Arc::ptr_eq(o, out)) {
            self.flush();
            self.out = None;
        }
        let target = self.out.get_or_insert_with(|| out.clone());
        if self.lines.len() + line.len() > BUFFER_BYTES && !self.lines.is_empty() {
            target.write_lines(&self.lines);
            self.lines.clear();
        }
        if self.lines.capacity() == 0 {
            self.lines.reserve_exact(BUFFER_BYTES);
        }
        self.lines.extend_from_slice(line);
    }

    fn flush(&mut self) {
        if let Some(out) = &self.out
            && !self.lines.is_empty()
        {
            out.write_lines(&self.lines);
        }
        self.lines.clear();
    }
}

impl Drop for Batch {
    /// A thread that exits without its [`Batching`] guard (a worker thread
    /// unwinding past it) still writes what it holds.
    fn drop(&mut self) {
        self.flush();
    }
}

/// Where log lines go: a [`MakeWriter`] for tracing-subscriber, which hands
/// each event's whole line (or lines) to one `write` call.
#[derive(Clone)]
pub struct Sink(Arc<Output>);

struct Output {
    /// A duplicate of the destination's descriptor (same open file, same
    /// offset); `None` when there is none, and lines are dropped.
    file: Option<File>,
    /// Most bytes per `write(2)`: unbounded for a regular file, `PIPE_BUF`
    /// for anything else.
    max_write: usize,
}

impl Sink {
    /// Standard error, whatever it is (file, pipe, terminal, `/dev/null`).
    pub fn stderr() -> Sink {
        let file = io::stderr()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(File::from);
        Sink::to(file)
    }

    /// Any file or pipe, with the same batching and line-cutting rules.
    pub fn to(file: Option<File>) -> Sink {
        let regular = file
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .is_some_and(|m| m.is_file());
        Sink(Arc::new(Output {
            file,
            max_write: if regular { usize::MAX } else { PIPE_BUF },
        }))
    }
}

impl Output {
    /// Writes `lines` (whole lines, newline-terminated) in pieces of at most
    /// `max_write` bytes, each ending at a newline; a line longer than that
    /// is a piece of its own.
    fn write_lines(&self, mut lines: &[u8]) {
        let Some(mut file) = self.file.as_ref() else {
            return;
        };
        while !lines.is_empty() {
            let cut = piece(lines, self.max_write);
            // A failed write (closed pipe, full disk) drops these lines:
            // there is nowhere left to report it, and the gateway keeps
            // serving.
            let _ = file.write_all(&lines[..cut]);
            lines = &lines[cut..];
        }
    }
}

/// The length of the next write: all of `lines` if it fits in `max`, else
/// up to the last newline within `max`, else the first line whole.
fn piece(lines: &[u8], max: usize) -> usize {
    if lines.len() <= max {
        return lines.len();
    }
    memchr::memrchr(b'\n', &lines[..max])
        .or_else(|| memchr::memchr(b'\n', lines))
        .map_or(lines.len(), |i| i + 1)
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> SinkWriter<'a> {
        SinkWriter(&self.0)
    }
}

/// One event's writer: into this thread's batch when it batches, else
/// straight to the destination.
pub struct SinkWriter<'a>(&'a Arc<Output>);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        BATCH.with(|b| match b.try_borrow_mut() {
            Ok(mut b) if b.on => b.push(self.0, buf),
            _ => self.0.write_lines(buf),
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `--log-format json`: tracing-subscriber's JSON lines, except the
/// access-log event, which is written here field by field into the line.
/// The stock formatter builds its timestamp in a new `String`, goes through
/// serde with a UTF-8 check per piece and allocates for every `Debug` field;
/// the access log is the one event per request, so it gets the short path.
/// Same bytes as the stock formatter (a unit test compares them), so log
/// shippers see one format. An access event inside a span (none is opened
/// around the pipeline today) goes to the stock formatter, which lists spans.
pub struct JsonLines {
    stock: Format<Json>,
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        if meta.target() != ACCESS_LOG || event.parent().is_some() || ctx.lookup_current().is_some()
        {
            return self.stock.format_event(ctx, w, event);
        }
        // The line is built in a `String` of this thread's and handed over
        // whole: `w` is a `dyn fmt::Write`, and a call through it per piece
        // (~10 per field) cost more than the copy. A fresh `String` when
        // the thread's is in use (a `Debug` field that logs).
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LINE.with(|cell| match cell.try_borrow_mut() {
            Ok(mut line) => w.write_str(access_line(&mut line, event)),
            Err(_) => w.write_str(access_line(&mut String::new(), event)),
        })
    }
}

/// The access event's JSON line in `line`, which it clears first.
fn access_line<'a>(line: &'a mut String, event: &Event<'_>) -> &'a str {
    let meta = event.metadata();
    line.clear();
    line.push_str("{\"timestamp\":\"");
    push_timestamp(line);
    line.push_str("\",\"level\":\"");
    line.push_str(meta.level().as_str());
    line.push_str("\",\"fields\":{");
    event.record(&mut JsonFields { line, first: true });
    line.push_str("},\"target\":");
    push_json_str(line, meta.target());
    line.push_str("}\n");
    line
}

/// `"key":value` pairs as tracing-serde writes them: strings, `Debug` (the
/// message among them) and `Display` values as JSON strings, integers and
/// finite floats as numbers (zmij, like serde_json), other floats as `null`.
struct JsonFields<'a> {
    line: &'a mut String,
    first: bool,
}

impl JsonFields<'_> {
    /// Starts an entry: the comma, the key and the colon.
    fn key(&mut self, field: &Field) -> &mut String {
        if !std::mem::take(&mut self.first) {
            self.line.push(',');
        }
        push_json_str(self.line, field.name());
        self.line.push(':');
        self.line
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        push_json_str(self.key(field), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.key(field).push_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.key(field).push_str(itoa::Buffer::new().format(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        let line = self.key(field);
        if value.is_finite() {
            line.push_str(zmij::Buffer::new().format_finite(value));
        } else {
            line.push_str("null");
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.key(field)
            .push_str(if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let line = self.key(field);
        line.push('"');
        // Writing into a `String` cannot fail.
        let _ = write!(Escaped(line), "{value:?}");
        line.push('"');
    }
}

/// `s` as a JSON string.
fn push_json_str(line: &mut String, s: &str) {
    line.push('"');
    push_escaped(line, s);
    line.push('"');
}

/// `s` escaped as serde_json escapes inside a string: `"`, `\` and control
/// characters (the short forms where JSON has them, else `\u00XX`);
/// everything else, non-ASCII included, as is.
fn push_escaped(line: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(found) = bytes[start..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
    {
        let i = start + found;
        // `bytes[i]` is ASCII, so both slices end on char boundaries.
        line.push_str(&s[start..i]);
        match bytes[i] {
            b'"' => line.push_str("\\\""),
            b'\\' => line.push_str("\\\\"),
            b'\n' => line.push_str("\\n"),
            b'\r' => line.push_str("\\r"),
            b'\t' => line.push_str("\\t"),
            0x08 => line.push_str("\\b"),
            0x0c => line.push_str("\\f"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                line.push_str("\\u00");
                line.push(char::from(HEX[usize::from(b >> 4)]));
                line.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = i + 1;
    }
    line.push_str(&s[start..]);
}

/// A `fmt::Write` that escapes what passes through into a JSON string.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// The stock formatter's timestamp, `2026-12-01T09:12:03.120456Z` (UTC,
/// microseconds). The part up to the second is rendered once a second per
/// thread.
fn push_timestamp(line: &mut String) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != now.as_secs() {
            *second = now.as_secs();
            text.clear();
            let ts = i64::try_from(*second)
                .ok()
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
            let _ = write!(text, "{}", ts.strftime("%Y-%m-%dT%H:%M:%S"));
        }
        line.push_str(text);
    });
    let mut frac = *b".000000Z";
    let mut micros = now.subsec_micros();
    for d in frac[1..7].iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    line.push_str(std::str::from_utf8(&frac).expect("ASCII digits"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The lines `emit` logs through the subscriber `make` builds, with
    /// each timestamp (which differs between two runs) checked for shape
    /// and replaced by `T`.
    fn capture(make: fn(Captured) -> tracing::Dispatch, emit: &dyn Fn()) -> String {
        let out = Captured::default();
        tracing::dispatcher::with_default(&make(out.clone()), emit);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| {
                let (head, rest) = l.split_once("\"timestamp\":\"").expect("a timestamp");
                let (ts, tail) = rest.split_once('"').expect("closed");
                assert_eq!(ts.len(), 27, "{ts}");
                assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "{ts}");
                format!("{head}\"timestamp\":\"T\"{tail}\n")
            })
            .collect()
    }

    /// tracing-subscriber's own JSON format, as the gateway used until now.
    fn stock(out: Captured) -> tracing::Dispatch {
        tracing::Dispatch::new(
            tracing_subscriber::fmt()
                .json()
                .with_env_filter(EnvFilter::new("trace"))
                .with_writer(move || out.clone())
                .finish(),
        )
    }

    fn ours(out: Captured) -> tracing::Dispatch {
        dispatch(LogFormat::Json, EnvFilter::new("trace"), move || {
            out.clone()
        })
    }

    #[test]
    fn access_line_has_the_stock_json_bytes() {
        let tricky = "/a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é🦀/";
        let emit = || {
            tracing::info!(
                target: ACCESS_LOG,
                request_id = "req-\"1\"",
                path = tricky,
                route = None::<&str>,
                status = 200u16,
                duration_ms = 1.25f64,
                small = 1e-7f64,
                big = 1e21f64,
                nan = f64::NAN,
                delta = -3i64,
                hit = true,
                error = ?"debug \"value\"",
                shown = %"display\tvalue",
                "request"
            );
            tracing::info!(target: ACCESS_LOG, "no fields but the message {}", 7);
            tracing::warn!(other = tricky, "not the access log");
        };
        let (want, got) = (capture(stock, &emit), capture(ours, &emit));
        assert_eq!(got, want);
        assert_eq!(got.lines().count(), 3, "{got}");
        let first: serde_json::Value = serde_json::from_str(got.lines().next().unwrap()).unwrap();
        assert_eq!(first["fields"]["path"], tricky, "escaping round-trips");
        assert!(first["fields"].get("route").is_none(), "None is left out");
    }

    #[test]
    fn access_event_in_a_span_lists_the_span_like_the_stock_format() {
        let emit = || {
            let span = tracing::info_span!("conn", peer = "127.0.0.1:1");
            let _entered = span.enter();
            tracing::info!(target: ACCESS_LOG, status = 200u16, "request");
        };
        let (want, got) = (capture(stock, &emit), capture(ours, &emit));
        assert_eq!(got, want);
        assert!(got.contains("\"span\":{"), "{got}");
    }

    #[test]
    fn writes_are_cut_after_a_newline() {
        // (name, lines, max_write, expected pieces)
        let cases: [(&str, &str, usize, &[&str]); 5] = [
            ("fits", "a\nb\n", 8, &["a\nb\n"]),
            (
                "cut at the last newline that fits",
                "aa\nbb\ncc\n",
                7,
                &["aa\nbb\n", "cc\n"],
            ),
            ("one line per write", "aaa\nbbb\n", 5, &["aaa\n", "bbb\n"]),
            (
                "a long line alone",
                "a\nbbbbbbbb\nc\n",
                4,
                &["a\n", "bbbbbbbb\n", "c\n"],
            ),
            ("unterminated tail", "a\nbbbbbb", 4, &["a\n", "bbbbbb"]),
        ];
        for (name, lines, max, want) in cases {
            let mut rest = lines.as_bytes();
            let mut got = Vec::new();
            while !rest.is_empty() {
                let cut = piece(rest, max);
                got.push(std::str::from_utf8(&rest[..cut]).unwrap());
                rest = &rest[cut..];
            }
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn a_batching_thread_writes_when_full_and_when_it_stops() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let sink = Sink::to(Some(file.reopen().unwrap()));
        let written = || std::fs::read_to_string(file.path()).unwrap();
        let line = format!("{}\n", "x".repeat(999));
        std::thread::scope(|s| {
            s.spawn(|| {
                let batching = Batching::start();
                sink.make_writer().write_all(line.as_bytes()).unwrap();
                assert_eq!(written(), "", "held in the batch");
                for _ in 0..BUFFER_BYTES / line.len() {
                    sink.make_writer().write_all(line.as_bytes()).unwrap();
                }
                let first = written();
                assert_eq!(first.len(), BUFFER_BYTES / line.len() * line.len());
                drop(batching);
                assert_eq!(written().len(), first.len() + line.len(), "flushed on stop");
            });
        });
        // Not batching (this thread): written at once.
        let before = written().len();
        sink.make_writer().write_all(b"now\n").unwrap();
        assert_eq!(written().len(), before + 4);
    }
}

//! Log output: the `tracing` subscriber the binary installs (`--log-format`,
//! `RUST_LOG` levels and module filters) and where its lines go. Owns the
//! line sink on stderr, batching it per proxy worker and flushing it, and the
//! hand-written JSON line of the access log: written straight to the sink by
//! [`write_json_event`] under `--log-format json` (no `tracing` event is
//! built), else formatted from the event by [`JsonLines`], same bytes as
//! tracing-subscriber's JSON either way. The pipeline owns the event, its
//! fields and the `RUST_LOG` check; `main` and `serve_per_core` say which
//! threads batch.
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
    let writer = Arc::new(writer);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Shared(writer.clone()));
    match format {
        LogFormat::Json => {
            let json = JsonLines {
                stock: tracing_subscriber::fmt::format().json(),
                direct: Box::new(move |line| {
                    // As the formatter's writes: failures are dropped.
                    let _ = writer.make_writer().write_all(line);
                }),
            };
            tracing::Dispatch::new(builder.json().event_format(json).finish())
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
/// access-log line, which is written here piece by piece. The stock
/// formatter builds its timestamp in a new `String`, goes through serde
/// with a UTF-8 check per piece and allocates for every `Debug` field; the
/// access log is the one line per request, so it gets the short path. Same
/// bytes as the stock formatter (unit tests compare them), so log shippers
/// see one format. An access event inside a span (none is opened around
/// the pipeline today) goes to the stock formatter, which lists spans.
pub struct JsonLines {
    stock: Format<Json>,
    /// The subscriber's writer, for [`write_json_event`], which skips
    /// `tracing`'s dispatch.
    direct: WriteLine,
}

/// Writes whole lines to a subscriber's writer.
type WriteLine = Box<dyn Fn(&[u8]) + Send + Sync>;

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
        with_line(|line| {
            event.record(&mut line.start(meta.level()));
            // Whole `str`s and ASCII only went in: the check cannot fail.
            let text = std::str::from_utf8(line.finish(meta.target())).map_err(|_| fmt::Error)?;
            w.write_str(text)
        })
    }
}

/// A [`MakeWriter`] shared by the formatter and [`JsonLines::direct`].
struct Shared<W>(Arc<W>);

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for Shared<W> {
    type Writer = W::Writer;

    fn make_writer(&'a self) -> W::Writer {
        self.0.make_writer()
    }
}

/// Writes an event's JSON line straight to the writer of the current
/// subscriber, without building a `tracing` event, when that subscriber is
/// [`dispatch`]'s `--log-format json` one and no span is entered; the line
/// has the bytes [`JsonLines`] would write for the event. Returns `false`,
/// having written nothing, otherwise: emit the event through `tracing`
/// then. The caller checks that `RUST_LOG` enables the event
/// (`tracing::enabled!` with its target, level and field names) and adds
/// the fields after `message` in the event's order.
///
/// The access log's path: a `tracing` event costs a dispatch through the
/// subscriber's layers and a dynamic call per field into a visitor, which
/// cost more than writing the line itself.
pub fn write_json_event(
    level: tracing::Level,
    target: &'static str,
    message: &'static str,
    fields: &dyn Fn(&mut JsonFields<'_>),
) -> bool {
    tracing::dispatcher::get_default(|d| {
        let Some(json) = d.downcast_ref::<JsonLines>() else {
            return false;
        };
        if d.current_span().id().is_some() {
            return false;
        }
        with_line(|line| {
            line.start(&level);
            line.message(message);
            fields(&mut JsonFields {
                buf: &mut line.buf,
                first: false,
            });
            (json.direct)(line.finish(target));
        });
        true
    })
}

/// Runs `f` on this thread's line buffer, or on a fresh one when that is
/// in use (a `Debug` field that logs).
fn with_line<T>(f: impl FnOnce(&mut JsonLine) -> T) -> T {
    thread_local! {
        static LINE: RefCell<JsonLine> = const { RefCell::new(JsonLine::new()) };
    }
    LINE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut line) => f(&mut line),
        Err(_) => f(&mut JsonLine::new()),
    })
}

/// Bytes appended with the room check inline and the growth out of line:
/// `Vec::extend_from_slice` called `reserve` for every piece (a call each,
/// ~40 pieces a line). A literal piece goes in with [`Buf::put_array`],
/// which copies a known length in a few moves. Holds only whole `str`s and
/// ASCII, so it is UTF-8.
struct Buf {
    /// Zero-filled beyond `len`; its length is the room.
    bytes: Vec<u8>,
    len: usize,
}

impl Buf {
    const fn new() -> Buf {
        Buf {
            bytes: Vec::new(),
            len: 0,
        }
    }

    // `inline(always)`: a call per piece is what this type avoids.
    #[inline(always)]
    fn put(&mut self, s: &[u8]) {
        let end = self.len + s.len();
        if end > self.bytes.len() {
            self.grow(end);
        }
        self.bytes[self.len..end].copy_from_slice(s);
        self.len = end;
    }

    #[inline(always)]
    fn put_array<const N: usize>(&mut self, s: &[u8; N]) {
        let end = self.len + N;
        if end > self.bytes.len() {
            self.grow(end);
        }
        let to: &mut [u8; N] = (&mut self.bytes[self.len..end])
            .try_into()
            .expect("N bytes");
        *to = *s;
        self.len = end;
    }

    /// The next `n` bytes, appended: the caller fills them all. One room
    /// check for a piece made of several.
    #[inline(always)]
    fn room(&mut self, n: usize) -> &mut [u8] {
        let (start, end) = (self.len, self.len + n);
        if end > self.bytes.len() {
            self.grow(end);
        }
        self.len = end;
        &mut self.bytes[start..end]
    }

    #[inline(always)]
    fn put_str(&mut self, s: &str) {
        self.put(s.as_bytes());
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, min: usize) {
        // 1 KiB holds an access line with a long path; doubling after.
        let room = min.max(2 * self.bytes.len()).max(1024);
        self.bytes.resize(room, 0);
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// One thread's JSON line, reused line after line (no allocation once it
/// has grown), and the timestamp up to the second, rendered once a second.
struct JsonLine {
    buf: Buf,
    /// The UNIX second `second_text` renders (`u64::MAX`: none yet).
    second: u64,
    /// `{"timestamp":"2026-12-01T09:12:03`: the line up to the fraction.
    second_text: String,
    /// The message and target of the last direct line (one call site in
    /// practice), and their JSON: `"message":"request"` and
    /// `},"target":"switchyard::access"}` with the newline.
    message: &'static str,
    message_json: Vec<u8>,
    target: &'static str,
    target_json: Vec<u8>,
}

impl JsonLine {
    const fn new() -> JsonLine {
        JsonLine {
            buf: Buf::new(),
            second: u64::MAX,
            second_text: String::new(),
            message: "",
            message_json: Vec::new(),
            target: "",
            target_json: Vec::new(),
        }
    }

    /// Starts a line: timestamp, level and the `fields` object's brace;
    /// the fields go into what it returns.
    fn start(&mut self, level: &tracing::Level) -> JsonFields<'_> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.start_at(level, now)
    }

    /// [`JsonLine::start`] at `now` (since the UNIX epoch).
    fn start_at(&mut self, level: &tracing::Level, now: Duration) -> JsonFields<'_> {
        if self.second != now.as_secs() {
            self.second = now.as_secs();
            self.second_text.clear();
            self.second_text.push_str("{\"timestamp\":\"");
            push_utc_second(&mut self.second_text, self.second);
        }
        let buf = &mut self.buf;
        buf.len = 0;
        buf.put_str(&self.second_text);
        buf.put_array(&micros(now.subsec_micros()));
        // One literal per level rather than the level's name between two.
        match *level {
            tracing::Level::ERROR => buf.put_array(b"\",\"level\":\"ERROR\",\"fields\":{"),
            tracing::Level::WARN => buf.put_array(b"\",\"level\":\"WARN\",\"fields\":{"),
            tracing::Level::INFO => buf.put_array(b"\",\"level\":\"INFO\",\"fields\":{"),
            tracing::Level::DEBUG => buf.put_array(b"\",\"level\":\"DEBUG\",\"fields\":{"),
            tracing::Level::TRACE => buf.put_array(b"\",\"level\":\"TRACE\",\"fields\":{"),
        }
        JsonFields { buf, first: true }
    }

    /// Ends the line after its fields: the target and the newline.
    fn finish(&mut self, target: &'static str) -> &[u8] {
        // Compared by address: the same `&'static str` of one call site.
        if !std::ptr::eq(self.target, target) || self.target_json.is_empty() {
            let mut json = Buf::new();
            json.put_array(b"},\"target\":");
            push_json_str(&mut json, target);
            json.put_array(b"}\n");
            self.target_json = json.as_bytes().to_vec();
            self.target = target;
        }
        self.buf.put(&self.target_json);
        self.buf.as_bytes()
    }

    /// The `message` field, first of the fields [`JsonLine::start`] began.
    fn message(&mut self, message: &'static str) {
        if !std::ptr::eq(self.message, message) || self.message_json.is_empty() {
            let mut json = Buf::new();
            JsonFields {
                buf: &mut json,
                first: true,
            }
            .str(b"message", Some(message));
            self.message_json = json.as_bytes().to_vec();
            self.message = message;
        }
        self.buf.put(&self.message_json);
    }
}

/// `second` (UNIX time) as `2026-12-01T09:12:03`, in UTC.
fn push_utc_second(text: &mut String, second: u64) {
    let ts = i64::try_from(second)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    // Writing into a `String` cannot fail.
    let _ = write!(text, "{}", ts.strftime("%Y-%m-%dT%H:%M:%S"));
}

/// `.120456Z`: the stock formatter's fraction (microseconds) and zone.
fn micros(micros: u32) -> [u8; 8] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut out = *b".000000Z";
    // Two digits a step; `micros < 1_000_000`, so each pair is 0..=99.
    for (i, pair) in [micros / 10_000, micros / 100 % 100, micros % 100]
        .into_iter()
        .enumerate()
    {
        let at = 2 * (pair as usize % 100);
        out[1 + 2 * i] = PAIRS[at];
        out[2 + 2 * i] = PAIRS[at + 1];
    }
    out
}

/// An event's `fields` object, `"key":value` pairs as tracing-serde writes
/// them: strings, `Debug` and `Display` values as JSON strings, integers
/// and finite floats as numbers (zmij, like serde_json), other floats as
/// `null`; a field whose value is `None` is left out. Filled by
/// [`write_json_event`]'s caller, or as the [`Visit`]or of an event.
pub struct JsonFields<'a> {
    buf: &'a mut Buf,
    first: bool,
}

impl JsonFields<'_> {
    /// A string field. `key` is written as is: a Rust identifier, which
    /// needs no escape.
    // `inline(always)` (here and below): at the call site `key` is a
    // literal of known length, and its copies become a few moves.
    #[inline(always)]
    pub fn str<const N: usize>(&mut self, key: &[u8; N], value: Option<&str>) {
        if let Some(value) = value {
            self.key(key);
            push_json_str(self.buf, value);
        }
    }

    /// A string field whose value needs no escape (no `"`, `\` or control
    /// character: hex digits, an HTTP token, a name the code chose), so it
    /// is copied without a scan; `key` as for [`JsonFields::str`].
    #[inline(always)]
    pub fn plain<const N: usize>(&mut self, key: &[u8; N], value: Option<&str>) {
        if let Some(value) = value {
            debug_assert_eq!(clean_prefix(value.as_bytes()), value.len(), "{value}");
            self.key(key);
            push_quoted(self.buf, value);
        }
    }

    /// An integer field; `key` as for [`JsonFields::str`].
    #[inline(always)]
    pub fn u64<const N: usize>(&mut self, key: &[u8; N], value: Option<u64>) {
        if let Some(value) = value {
            self.key(key);
            self.buf.put_str(itoa::Buffer::new().format(value));
        }
    }

    /// A float field; `key` as for [`JsonFields::str`].
    #[inline(always)]
    pub fn f64<const N: usize>(&mut self, key: &[u8; N], value: Option<f64>) {
        if let Some(value) = value {
            self.key(key);
            push_f64(self.buf, value);
        }
    }

    /// Starts an entry: the comma, `"key":`.
    #[inline(always)]
    fn key<const N: usize>(&mut self, key: &[u8; N]) {
        debug_assert_eq!(clean_prefix(key), N, "{key:?}");
        let comma = usize::from(!std::mem::take(&mut self.first));
        let room = self.buf.room(comma + N + 3);
        room[0] = b',';
        room[comma] = b'"';
        let name: &mut [u8; N] = (&mut room[comma + 1..comma + 1 + N])
            .try_into()
            .expect("N bytes");
        *name = *key;
        room[comma + 1 + N] = b'"';
        room[comma + 2 + N] = b':';
    }

    /// [`JsonFields::key`] for a `tracing` field, whose name may be any
    /// string literal.
    fn field(&mut self, field: &Field) -> &mut Buf {
        let name = field.name();
        if !std::mem::take(&mut self.first) {
            self.buf.put_array(b",");
        }
        push_json_str(self.buf, name);
        self.buf.put_array(b":");
        self.buf
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        push_json_str(self.field(field), value);
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field).put_str(itoa::Buffer::new().format(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field).put_str(itoa::Buffer::new().format(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        push_f64(self.field(field), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field)
            .put_str(if value { "true" } else { "false" });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let buf = self.field(field);
        buf.put_array(b"\"");
        // Writing into a `Buf` cannot fail.
        let _ = write!(Escaped(buf), "{value:?}");
        buf.put_array(b"\"");
    }
}

/// `value` as serde_json writes an `f64`: finite ones shortest round-trip
/// (zmij), the others `null`.
fn push_f64(buf: &mut Buf, value: f64) {
    if value.is_finite() {
        buf.put_str(zmij::Buffer::new().format_finite(value));
    } else {
        buf.put_array(b"null");
    }
}

/// `s` as a JSON string, escaped as serde_json escapes: `"`, `\` and
/// control characters (the short forms where JSON has them, else
/// `\u00XX`); everything else, non-ASCII included, as is.
#[inline(always)]
fn push_json_str(buf: &mut Buf, s: &str) {
    // Nearly every value needs no escape: one copy after a scan.
    let clean = clean_prefix(s.as_bytes());
    if clean == s.len() {
        push_quoted(buf, s);
    } else {
        buf.put_array(b"\"");
        push_escaped_from(buf, s, clean);
        buf.put_array(b"\"");
    }
}

/// `s` between quotes, as is.
#[inline(always)]
fn push_quoted(buf: &mut Buf, s: &str) {
    let room = buf.room(s.len() + 2);
    let (first, rest) = room.split_first_mut().expect("2 bytes or more");
    let (last, middle) = rest.split_last_mut().expect("1 byte or more");
    *first = b'"';
    middle.copy_from_slice(s.as_bytes());
    *last = b'"';
}

/// `s` escaped as in [`push_json_str`], without the quotes.
#[inline(always)]
fn push_escaped(buf: &mut Buf, s: &str) {
    // Nearly every value needs no escape: one copy after a scan.
    let clean = clean_prefix(s.as_bytes());
    if clean == s.len() {
        buf.put_str(s);
    } else {
        push_escaped_from(buf, s, clean);
    }
}

/// [`push_escaped`] for a string with a byte to escape at `next`.
#[cold]
#[inline(never)]
fn push_escaped_from(buf: &mut Buf, s: &str, mut next: usize) {
    let bytes = s.as_bytes();
    let mut start = 0;
    while next < bytes.len() {
        // `bytes[next]` is ASCII, so the pieces are whole characters.
        buf.put(&bytes[start..next]);
        match bytes[next] {
            b'"' => buf.put_array(b"\\\""),
            b'\\' => buf.put_array(b"\\\\"),
            b'\n' => buf.put_array(b"\\n"),
            b'\r' => buf.put_array(b"\\r"),
            b'\t' => buf.put_array(b"\\t"),
            0x08 => buf.put_array(b"\\b"),
            0x0c => buf.put_array(b"\\f"),
            b => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.put_array(b"\\u00");
                buf.put_array(&[HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
            }
        }
        start = next + 1;
        next = start + clean_prefix(&bytes[start..]);
    }
    buf.put(&bytes[start..]);
}

/// How many bytes at the start of `bytes` JSON leaves as they are inside a
/// string (all but `"`, `\` and control characters). Eight bytes a step,
/// the last step overlapping the one before, so a clean value of 8 bytes
/// or more is read in words only; shorter ones and the word with a match
/// byte by byte.
fn clean_prefix(bytes: &[u8]) -> usize {
    let n = bytes.len();
    let mut i = 0;
    if n >= 8 {
        while i + 8 <= n && clean_word(&bytes[i..i + 8]) {
            i += 8;
        }
        if i + 8 > n && (i == n || clean_word(&bytes[n - 8..])) {
            return n;
        }
    }
    bytes[i..]
        .iter()
        .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        .map_or(n, |p| i + p)
}

/// Whether none of the 8 bytes needs an escape: the "has a zero byte" and
/// "has a byte less than n" word tests, exact for the word as a whole (a
/// borrow only flags bytes above a true match).
#[inline(always)]
fn clean_word(word: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let v = u64::from_ne_bytes(word.try_into().expect("8 bytes"));
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let control = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
    let quote = has_zero(v ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(v ^ (ONES * u64::from(b'\\')));
    control | quote | backslash == 0
}

/// A `fmt::Write` that escapes what passes through into a JSON string.
struct Escaped<'a>(&'a mut Buf);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
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

    /// The access line as the pipeline writes it, through `write_json_event`
    /// when `direct`, else as a `tracing` event with the same fields.
    fn access_fields(direct: bool, path: &str, upstream_ms: Option<f64>) -> bool {
        let (request_id, status, bytes_in) = (Some("req-\"1\""), 200u16, None::<u64>);
        let duration_ms = 1.25f64;
        if direct {
            write_json_event(tracing::Level::INFO, ACCESS_LOG, "request", &|f| {
                f.str(b"request_id", request_id);
                f.str(b"path", Some(path));
                f.str(b"route", None);
                f.u64(b"status", Some(status.into()));
                f.f64(b"duration_ms", Some(duration_ms));
                f.f64(b"upstream_ms", upstream_ms);
                f.u64(b"bytes_in", bytes_in);
            })
        } else {
            let route = None::<&str>;
            tracing::info!(
                target: ACCESS_LOG,
                request_id,
                path,
                route,
                status,
                duration_ms,
                upstream_ms,
                bytes_in,
                "request"
            );
            true
        }
    }

    #[test]
    fn direct_access_line_has_the_stock_json_bytes() {
        let tricky = "/a\"b\\c\n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f}é🦀/";
        let cases: [(&str, Option<f64>); 5] = [
            ("/api/orders", Some(0.123456789)),
            (tricky, None),
            ("", Some(1e-7)),
            ("/exactly-16-byte", Some(1e21)),
            ("/very/long/path/with/a/quote/at/the/end\"", Some(f64::NAN)),
        ];
        for (path, upstream_ms) in cases {
            let stock_line = capture(stock, &|| {
                access_fields(false, path, upstream_ms);
            });
            let direct = capture(ours, &|| {
                assert!(access_fields(true, path, upstream_ms), "written directly");
            });
            assert_eq!(direct, stock_line, "{path:?}");
            assert_eq!(direct.lines().count(), 1);
        }
    }

    #[test]
    fn direct_write_declines_without_the_json_subscriber_or_inside_a_span() {
        let pretty = |out: Captured| {
            dispatch(LogFormat::Pretty, EnvFilter::new("trace"), move || {
                out.clone()
            })
        };
        for (name, make) in [("pretty", pretty as fn(Captured) -> _), ("stock", stock)] {
            let out = Captured::default();
            tracing::dispatcher::with_default(&make(out.clone()), || {
                assert!(!access_fields(true, "/x", None), "{name}");
            });
            assert!(out.0.lock().unwrap().is_empty(), "{name}: nothing written");
        }
        let out = Captured::default();
        tracing::dispatcher::with_default(&ours(out.clone()), || {
            let span = tracing::info_span!("conn");
            let _entered = span.enter();
            assert!(
                !access_fields(true, "/x", None),
                "a span: the stock formatter lists it"
            );
        });
        assert!(out.0.lock().unwrap().is_empty());
    }

    #[test]
    fn escaping_finds_every_byte_to_escape_wherever_it_sits() {
        // A byte to escape at every position of strings of 0 to 24 bytes
        // (short, whole words, a partial last word), and none at all.
        for len in 0..=24 {
            let clean = "a".repeat(len);
            assert_eq!(clean_prefix(clean.as_bytes()), len, "clean, {len}");
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x00, 0x1f] {
                    let mut bytes = clean.clone().into_bytes();
                    bytes[at] = special;
                    assert_eq!(clean_prefix(&bytes), at, "{special:#x} at {at} of {len}");
                }
            }
        }
        // Neighbours of the ranges: none needs an escape.
        let edge = "\u{20}!#[]~\u{7f}é🦀\u{80}";
        assert_eq!(clean_prefix(edge.as_bytes()), edge.len());
        // `"`, `\\` and controls escaped as serde_json does, around clean runs.
        let tricky = "12345678\"12345678\\\u{1}x\ty";
        let mut buf = Buf::new();
        push_json_str(&mut buf, tricky);
        assert_eq!(
            std::str::from_utf8(buf.as_bytes()).unwrap(),
            serde_json::to_string(tricky).unwrap()
        );
    }

    #[test]
    fn timestamp_renders_the_second_again_when_it_changes() {
        let mut line = JsonLine::new();
        let mut at = |secs: u64, micros: u32| {
            let now = Duration::new(secs, micros * 1000);
            line.start_at(&tracing::Level::INFO, now);
            let text = std::str::from_utf8(line.finish("t")).unwrap();
            text["{\"timestamp\":\"".len()..][..27].to_string()
        };
        // 2026-12-01T09:12:03Z is 1_796_116_323.
        assert_eq!(at(1_796_116_323, 999_999), "2026-12-01T09:12:03.999999Z");
        assert_eq!(at(1_796_116_324, 1), "2026-12-01T09:12:04.000001Z");
        assert_eq!(at(1_796_116_324, 120_456), "2026-12-01T09:12:04.120456Z");
        assert_eq!(at(1_796_116_383, 0), "2026-12-01T09:13:03.000000Z");
    }

    #[test]
    fn direct_lines_of_two_call_sites_keep_their_own_message_and_target() {
        let out = Captured::default();
        let sites = [
            ("a::b", "first"),
            ("c\"d", "second \"q\""),
            ("a::b", "first"),
        ];
        tracing::dispatcher::with_default(&ours(out.clone()), || {
            for (target, message) in sites {
                let written = write_json_event(tracing::Level::WARN, target, message, &|f| {
                    f.u64(b"n", Some(1));
                });
                assert!(written);
            }
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        for (line, (target, message)) in lines.iter().zip(sites) {
            assert_eq!(line["target"], target);
            assert_eq!(line["level"], "WARN");
            assert_eq!(line["fields"]["message"], message);
            assert_eq!(line["fields"]["n"], 1);
        }
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

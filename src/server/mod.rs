//! Listeners: accept loop, the lean HTTP/1.1 path for plain requests
//! ([`lean`]) and hyper-util's auto builder for the rest of a connection
//! once one needs it (HTTP/1.1 and h2c on one port), hyper's timers (h2
//! keep-alive pings), the idle timeout, and graceful shutdown: stop
//! accepting, let in-flight requests finish up to the grace period, then
//! return. The header-read timeout (slowloris) is kept by the lean path,
//! then by `framing::Guarded`, each of which sees a head's bytes arrive.
//!
//! Idle: a connection counts its requests from head to the end of the
//! response body (the body is dropped then); one with none for the idle
//! timeout is shut down gracefully (HTTP/1.1: closed; h2: GOAWAY). The
//! header-read timeout only starts at a request's first byte, so without
//! this a keep-alive connection could sit open forever. A small watcher
//! task per connection waits for the drain, the idle timeout and the hard
//! stop, and tells the connection through one atomic and its waker: the
//! connection's own task, woken for every request, never polls them.
//!
//! Balance: with several worker threads, each accepts on its own
//! `SO_REUSEPORT` socket, where the kernel places a connection by a hash of
//! its addresses, so a few long-lived connections (a load balancer's pool,
//! a load generator's) can land unevenly (26/14 of 40 in `tests/cli.rs`
//! with balancing off). A
//! [`Balancer`] counts each worker's open connections and hands a newly
//! accepted one to the least loaded worker when that has fewer than the
//! worker that accepted it (Envoy's "exact balance"): a cost per
//! connection (a channel send and the socket's move between reactors),
//! none per request.
//!
//! Placement: with `worker_cpu_affinity = "auto"` and as many allowed CPUs
//! as workers, each worker thread is pinned to a CPU of its own
//! ([`placement`]).
//!
//! Tunnels: a request that can upgrade carries a [`Lease`] on its
//! connection (its connection-limit slot, a drain token and the hard stop),
//! which the WebSocket tunnel holds once the connection is handed over, so
//! an upgraded connection stays counted and drained like any other.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::body::{Body, ClientBody};
use crate::config::{CpuAffinity, ServerSettings};
use crate::framing;
use crate::pipeline::Stamp;
use crate::problem::GatewayError;
use crate::tls::TlsTerminator;

mod lean;

/// Something that answers requests on a listener.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request from `peer`, on a TLS connection if `https`
    /// (known per connection: passed along rather than put in every
    /// request's extensions, which would allocate their map).
    fn call(
        &self,
        req: Request<Option<ClientBody>>,
        peer: SocketAddr,
        https: bool,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// [`Handler::call`] with fields to add to the response kept apart,
    /// for the lean path, which writes them after the response's own
    /// (see [`Stamp`]). By default there are none.
    fn call_stamped(
        &self,
        req: Request<Option<ClientBody>>,
        peer: SocketAddr,
        https: bool,
    ) -> impl Future<Output = (Response<Body>, Stamp)> + Send {
        let call = self.call(req, peer, https);
        async move { (call.await, Stamp::default()) }
    }
}

impl Handler for crate::pipeline::Gateway {
    fn call(
        &self,
        req: Request<Option<ClientBody>>,
        peer: SocketAddr,
        https: bool,
    ) -> impl Future<Output = Response<Body>> + Send {
        self.handle(req, peer, https)
    }

    fn call_stamped(
        &self,
        req: Request<Option<ClientBody>>,
        peer: SocketAddr,
        https: bool,
    ) -> impl Future<Output = (Response<Body>, Stamp)> + Send {
        self.handle_stamped(req, peer, https, true)
    }
}

/// Connection-level settings.
#[derive(Debug, Clone)]
pub struct ConnSettings {
    /// Header read timeout (slowloris guard).
    pub header_read_timeout: Duration,
    /// hyper's HTTP/1 read buffer, which caps the request head.
    pub max_buf_size: usize,
    /// How long in-flight requests may run after shutdown starts.
    pub grace: Duration,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_streams: u32,
    /// Close a connection with no request in flight for this long (None:
    /// never).
    pub idle_timeout: Option<Duration>,
    /// This listener's connection and in-flight counters (shared by every
    /// worker serving it; [`ConnSettings::for_another_listener`] gives a
    /// listener its own).
    pub admission: Arc<Admission>,
    /// Serve plain HTTP/1.1 requests on the lean path ([`lean`]).
    pub lean_http1: bool,
    /// `switchyard_http1_handoffs_total`: connections the lean path handed
    /// to hyper, by reason (none: not counted).
    pub handoffs: Option<prometheus::IntCounterVec>,
}

impl ConnSettings {
    /// The same settings with fresh counters, for another listener.
    pub fn for_another_listener(&self) -> ConnSettings {
        ConnSettings {
            idle_timeout: self.idle_timeout,
            admission: Arc::new(Admission::new(
                self.admission.max_connections,
                self.admission.max_inflight,
            )),
            ..self.clone()
        }
    }
}

/// Per-listener load shedding: open connections and requests in flight,
/// each against its limit (0 = none). One relaxed atomic add and subtract
/// per request; no lock.
#[derive(Debug)]
pub struct Admission {
    max_connections: usize,
    max_inflight: usize,
    connections: AtomicUsize,
    inflight: AtomicUsize,
}

impl Admission {
    /// Counters at zero with these limits.
    pub fn new(max_connections: usize, max_inflight: usize) -> Admission {
        Admission {
            max_connections,
            max_inflight,
            connections: AtomicUsize::new(0),
            inflight: AtomicUsize::new(0),
        }
    }

    /// Open connections now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    fn connection(self: &Arc<Self>) -> (Slot, bool) {
        let n = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let over = self.max_connections != 0 && n > self.max_connections;
        (Slot(self.clone(), Counter::Connections), over)
    }

    fn request(self: &Arc<Self>) -> (Slot, bool) {
        let n = self.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        let over = self.max_inflight != 0 && n > self.max_inflight;
        (Slot(self.clone(), Counter::Inflight), over)
    }

    /// What a request is refused with (503) when its connection is over
    /// the connection limit (`shed`) or it is over the in-flight limit.
    fn overload(&self, shed: bool, over: bool) -> Option<GatewayError> {
        if shed {
            Some(GatewayError::Overloaded {
                limit: "connections",
                max: self.max_connections,
            })
        } else if over {
            Some(GatewayError::Overloaded {
                limit: "requests in flight",
                max: self.max_inflight,
            })
        } else {
            None
        }
    }

    /// [`Admission::request`] for a request that ends before the
    /// connection: no reference count to touch (the counters are shared by
    /// every worker, so each atomic on them can move a cache line between
    /// cores).
    fn request_here(&self) -> (InflightSlot<'_>, bool) {
        let n = self.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        let over = self.max_inflight != 0 && n > self.max_inflight;
        (InflightSlot(&self.inflight), over)
    }
}

/// Gives its in-flight count back when dropped.
struct InflightSlot<'a>(&'a AtomicUsize);

impl Drop for InflightSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone, Copy)]
enum Counter {
    Connections,
    Inflight,
}

/// Gives its count back when dropped.
struct Slot(Arc<Admission>, Counter);

impl Drop for Slot {
    fn drop(&mut self) {
        let c = match self.1 {
            Counter::Connections => &self.0.connections,
            Counter::Inflight => &self.0.inflight,
        };
        c.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What an open connection holds until it (or its tunnel) closes: its
/// connection-limit slot and its worker's seat.
struct Held {
    _slot: Slot,
    _seat: Option<Seat>,
}

impl From<&ServerSettings> for ConnSettings {
    fn from(s: &ServerSettings) -> Self {
        ConnSettings {
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            // Twice our own limit: heads a little over it still parse, so the
            // pipeline answers 431 as problem+json instead of hyper's bare 431.
            max_buf_size: (s.max_header_bytes * 2).max(8192),
            grace: Duration::from_millis(s.grace_period_ms),
            h2_max_streams: s.h2_max_concurrent_streams,
            idle_timeout: optional_ms(s.idle_timeout_ms),
            admission: Arc::new(Admission::new(s.max_connections, s.max_requests_in_flight)),
            lean_http1: s.lean_http1,
            handoffs: None,
        }
    }
}

/// A timeout setting in ms as a duration (0: never).
pub fn optional_ms(ms: u64) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(ms))
}

/// A connection's requests: started so far, and in flight (head received,
/// response body not yet finished). Touched by its own tasks only, so the
/// atomics are uncontended.
#[derive(Debug, Default)]
struct Activity {
    started: AtomicU64,
    active: AtomicUsize,
}

impl Activity {
    fn begin(self: &Arc<Self>) -> Active {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// Resolves once no request has been in flight or started for
    /// `timeout` (checked every quarter of it, so within 1.25 x `timeout`).
    async fn idle_for(&self, timeout: Duration) {
        quiet_for(timeout, || {
            (
                self.started.load(Ordering::Relaxed),
                self.active.load(Ordering::Relaxed) > 0,
            )
        })
        .await
    }
}

/// Resolves once `probe`'s count has not moved and it has not reported busy
/// for `timeout`, polled every quarter of it (so within 1.25 x `timeout`):
/// a timer per event would cost a wheel update per request or message.
pub(crate) async fn quiet_for(timeout: Duration, mut probe: impl FnMut() -> (u64, bool)) {
    let step = (timeout / 4).max(Duration::from_millis(1));
    let mut seen = probe().0;
    let mut quiet = Duration::ZERO;
    loop {
        tokio::time::sleep(step).await;
        let (count, busy) = probe();
        if count != seen || busy {
            seen = count;
            quiet = Duration::ZERO;
            continue;
        }
        quiet += step;
        if quiet >= timeout {
            return;
        }
    }
}

/// One request in flight; ends when dropped with its response body.
struct Active(Arc<Activity>);

impl Clone for Active {
    fn clone(&self) -> Active {
        self.0.active.fetch_add(1, Ordering::Relaxed);
        Active(self.0.clone())
    }
}

/// What a tunnel (WebSocket, after a `101` or an RFC 8441 CONNECT's `200`)
/// keeps of its client connection: a request extension of every request
/// that can upgrade, which the tunnel holds for its life. While held, the
/// connection still counts against `max_connections`, the listener's
/// drain waits for it, and (h2) the connection does not count as idle;
/// [`Lease::stopped`] resolves when the grace period is over.
pub struct Lease {
    _slot: Arc<Held>,
    _token: tokio_util::task::task_tracker::TaskTrackerToken,
    stop: CancellationToken,
    _active: Option<Active>,
}

impl Lease {
    /// Resolves when the listener's grace period is over: the tunnel must
    /// close.
    pub async fn stopped(&self) {
        self.stop.cancelled().await
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's [`Active`] until hyper
    /// drops it (written out, or the stream was reset).
    pub struct Tracked {
        #[pin]
        body: Body,
        active: Option<Active>,
    }
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = crate::body::BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Spreads one listener's connections over the worker threads: see the
/// module doc. Each worker's open connections are a gauge
/// (`switchyard_worker_connections`), which is also what the placement reads.
pub struct Balancer {
    /// Off (`balance_connections = false`): connections are only counted.
    spread: bool,
    open: Box<[prometheus::IntGauge]>,
    inboxes: Box<[mpsc::UnboundedSender<Handoff>]>,
}

/// A connection accepted by one worker for another, already counted there.
struct Handoff {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    seat: Seat,
}

/// One open connection counted for a worker, until dropped.
struct Seat(prometheus::IntGauge);

impl Drop for Seat {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A worker's side of a [`Balancer`]: its index and its inbox.
pub struct WorkerBalance {
    balancer: Arc<Balancer>,
    me: usize,
    inbox: mpsc::UnboundedReceiver<Handoff>,
}

impl Balancer {
    /// A balancer over one worker per gauge (each counts that worker's
    /// open connections); the workers' sides, in the same order. Without
    /// `spread` it only counts.
    pub fn workers(open: Vec<prometheus::IntGauge>, spread: bool) -> Vec<WorkerBalance> {
        let (inboxes, receivers): (Vec<_>, Vec<_>) =
            open.iter().map(|_| mpsc::unbounded_channel()).unzip();
        let balancer = Arc::new(Balancer {
            spread,
            open: open.into(),
            inboxes: inboxes.into(),
        });
        receivers
            .into_iter()
            .enumerate()
            .map(|(me, inbox)| WorkerBalance {
                balancer: balancer.clone(),
                me,
                inbox,
            })
            .collect()
    }

    /// Where worker `me`'s new connection goes: `me` unless another worker
    /// has fewer open connections (the first of the fewest), counted there.
    fn place(&self, me: usize) -> (usize, Seat) {
        let mut to = me;
        if self.spread {
            let mut least = self.open[me].get();
            for (i, g) in self.open.iter().enumerate() {
                let n = g.get();
                if n < least {
                    (to, least) = (i, n);
                }
            }
        }
        (to, self.seat(to))
    }

    /// A connection counted on worker `i` until the seat is dropped.
    fn seat(&self, i: usize) -> Seat {
        self.open[i].inc();
        Seat(self.open[i].clone())
    }
}

impl WorkerBalance {
    /// The seat for a connection this worker accepted: its own, or, with
    /// the stream, handed to a less loaded worker (`None`). A worker that is
    /// gone (draining) has closed its inbox: the connection stays here.
    fn place(&self, stream: TcpStream, peer: SocketAddr) -> Option<(TcpStream, Seat)> {
        let (to, seat) = self.balancer.place(self.me);
        if to == self.me {
            return Some((stream, seat));
        }
        // Deregistered from this worker's reactor; the target registers it.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection lost before its handoff");
                return None;
            }
        };
        match self.balancer.inboxes[to].send(Handoff { stream, peer, seat }) {
            Ok(()) => None,
            Err(mpsc::error::SendError(back)) => {
                drop(back.seat);
                match TcpStream::from_std(back.stream) {
                    Ok(s) => Some((s, self.balancer.seat(self.me))),
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "connection lost after a failed handoff");
                        None
                    }
                }
            }
        }
    }
}

fn builder(settings: &ConnSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // The header timeout is the connection's (`framing::Guarded`):
        // hyper's would arm a timer for every request.
        .header_read_timeout(None)
        .max_buf_size(settings.max_buf_size)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        // RFC 8441: WebSockets over h2 (extended CONNECT).
        .enable_connect_protocol()
        .max_concurrent_streams(settings.h2_max_streams)
        .max_header_list_size(settings.max_buf_size as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves `listener` with `handler` until `shutdown` is cancelled, then
/// drains: in-flight requests get up to `settings.grace` to finish.
/// With `balance`, new connections are spread over the workers (see
/// [`Balancer`]). Returns whether the drain completed in time.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ConnSettings,
    shutdown: CancellationToken,
    balance: Option<WorkerBalance>,
) -> bool {
    serve_inner(listener, None, handler, settings, shutdown, balance).await
}

/// [`serve`] behind TLS: each connection's handshake (within the
/// terminator's timeout) happens on its own task, then the decrypted stream
/// is served exactly like a plain one.
pub async fn serve_tls<H: Handler>(
    listener: TcpListener,
    tls: Arc<TlsTerminator>,
    handler: Arc<H>,
    settings: ConnSettings,
    shutdown: CancellationToken,
    balance: Option<WorkerBalance>,
) -> bool {
    serve_inner(listener, Some(tls), handler, settings, shutdown, balance).await
}

async fn serve_inner<H: Handler>(
    listener: TcpListener,
    tls: Option<Arc<TlsTerminator>>,
    handler: Arc<H>,
    settings: ConnSettings,
    shutdown: CancellationToken,
    mut balance: Option<WorkerBalance>,
) -> bool {
    let builder = builder(&settings);
    // Connections (and TLS handshakes) in flight: the drain waits for them.
    let tracker = TaskTracker::new();
    let draining = CancellationToken::new();
    let hard_stop = CancellationToken::new();
    loop {
        let (stream, peer, seat) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(h) = async { balance.as_mut()?.inbox.recv().await } => {
                match TcpStream::from_std(h.stream) {
                    Ok(stream) => (stream, h.peer, Some(h.seat)),
                    Err(e) => {
                        tracing::debug!(peer = %h.peer, error = %e, "handed-off connection lost");
                        continue;
                    }
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match &balance {
                        None => (stream, peer, None),
                        Some(b) => match b.place(stream, peer) {
                            Some((stream, seat)) => (stream, peer, Some(seat)),
                            None => continue,
                        },
                    }
                }
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let (slot, shed) = settings.admission.connection();
        if shed {
            tracing::debug!(%peer, "connection limit reached: shedding");
        }
        let conn = Conn {
            builder: builder.clone(),
            handler: handler.clone(),
            peer,
            max_head: settings.max_buf_size,
            header_timeout: (!settings.header_read_timeout.is_zero())
                .then_some(settings.header_read_timeout),
            hard_stop: hard_stop.clone(),
            draining: draining.clone(),
            tracker: tracker.clone(),
            idle_timeout: settings.idle_timeout,
            admission: settings.admission.clone(),
            slot: Held {
                _slot: slot,
                _seat: seat,
            },
            shed,
            lean_http1: settings.lean_http1,
            handoffs: settings.handoffs.clone(),
        };
        match &tls {
            None => conn.serve(crate::sock::RawTcp::new(stream), false, false),
            Some(tls) => {
                let (acceptor, timeout) = (tls.acceptor(), tls.handshake_timeout());
                // The handshake counts as in flight: a drain waits for it
                // (bounded by its timeout) rather than cutting it.
                let stop = hard_stop.clone();
                tracker.spawn(async move {
                    let handshake = tokio::select! {
                        r = tokio::time::timeout(timeout, acceptor.accept(stream)) => r,
                        _ = stop.cancelled() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            // ALPN said h2: nothing for the lean path to try.
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            conn.serve(stream, true, h2)
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, ?timeout, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    // Handoffs still queued are closed with the inbox; no more arrive.
    drop(balance);
    draining.cancel();
    tracker.close();
    tokio::select! {
        _ = tracker.wait() => true,
        _ = tokio::time::sleep(settings.grace) => {
            tracing::warn!(grace = ?settings.grace, "grace period over; closing remaining connections");
            hard_stop.cancel();
            false
        }
    }
}

/// What serving one accepted connection needs.
struct Conn<H> {
    builder: auto::Builder<TokioExecutor>,
    handler: Arc<H>,
    peer: SocketAddr,
    max_head: usize,
    /// The slowloris guard: a request head must arrive within this.
    header_timeout: Option<Duration>,
    hard_stop: CancellationToken,
    /// Cancelled when the listener starts draining.
    draining: CancellationToken,
    tracker: TaskTracker,
    idle_timeout: Option<Duration>,
    admission: Arc<Admission>,
    /// Held for the connection's life.
    slot: Held,
    /// Over the connection limit: every request gets 503 and the
    /// connection closes after the first answer.
    shed: bool,
    /// Plain HTTP/1.1 requests take the lean path (`[server] lean_http1`).
    lean_http1: bool,
    handoffs: Option<prometheus::IntCounterVec>,
}

impl<H: Handler> Conn<H> {
    /// Serves `stream` (decrypted, if `https`) until it closes: plain
    /// HTTP/1.1 requests on the lean path (see [`lean`]), the rest of the
    /// connection by hyper from the first request that needs it (all of it
    /// if `h2`: TLS negotiated HTTP/2).
    fn serve<IO>(self, mut stream: IO, https: bool, h2: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            builder,
            handler,
            peer,
            max_head,
            header_timeout,
            hard_stop,
            draining,
            tracker,
            idle_timeout,
            admission,
            slot,
            shed,
            lean_http1,
            handoffs,
        } = self;
        let activity = Arc::new(Activity::default());
        let track = idle_timeout.is_some().then(|| activity.clone());
        let task_tracker = tracker.clone();
        task_tracker.spawn(async move {
            // Shared with the tunnels this connection may open (see `Lease`).
            let slot = Arc::new(slot);
            let signal = Arc::new(Signal::default());
            // Aborted when the connection ends, whichever way.
            let _watcher = AbortOnDropHandle::new(tokio::spawn(watch(
                signal.clone(),
                peer,
                draining,
                hard_stop.clone(),
                idle_timeout.map(|t| (t, activity)),
            )));
            let (rest, first) = if lean_http1 && !h2 {
                let lane = lean::Lane {
                    handler: &*handler,
                    peer,
                    https,
                    max_head,
                    header_timeout,
                    signal: &signal,
                    admission: &admission,
                    shed,
                    activity: track.as_ref(),
                };
                let lean = lean::serve(&mut stream, lane);
                tokio::pin!(lean);
                let end = std::future::poll_fn(|cx| {
                    signal.waker.register(cx.waker());
                    if signal.state.load(Ordering::Acquire) == STOP {
                        return Poll::Ready(None);
                    }
                    lean.as_mut().poll(cx).map(Some)
                })
                .await;
                match end {
                    Some(lean::End::Hyper {
                        rest,
                        first,
                        reason,
                    }) => {
                        if let Some(h) = &handoffs {
                            h.with_label_values(&[reason]).inc();
                        }
                        (rest, first)
                    }
                    Some(lean::End::Closed) | None => return,
                }
            } else {
                (bytes::BytesMut::new(), true)
            };
            // hyper drops or merges a conflicting Content-Length before the
            // handler sees the head, so framing is checked on the raw bytes
            // (after decryption, for TLS).
            let verdict = Arc::new(framing::Verdict::default());
            let stream = framing::Guarded::new(
                Prefixed { rest, io: stream },
                max_head,
                verdict.clone(),
                header_timeout,
            );
            let (lease_slot, lease_tracker, lease_stop) =
                (slot.clone(), tracker.clone(), hard_stop.clone());
            let service = service_fn(move |mut req: Request<Incoming>| {
                let handler = handler.clone();
                let violation = verdict.next_request();
                let active = track.as_ref().map(Activity::begin);
                // hyper gives every request that can upgrade (HTTP/1.1
                // `Upgrade`, h2 CONNECT) an `OnUpgrade`; others have no
                // extensions, so the check is one null test.
                if req
                    .extensions()
                    .get::<hyper::upgrade::OnUpgrade>()
                    .is_some()
                {
                    let lease = Lease {
                        _slot: lease_slot.clone(),
                        _token: lease_tracker.token(),
                        stop: lease_stop.clone(),
                        _active: active.clone(),
                    };
                    req.extensions_mut().insert(Arc::new(lease));
                }
                let (request_slot, over) = admission.request();
                let overload = admission.overload(shed, over);
                async move {
                    let _request_slot = request_slot;
                    let resp = if let Some(v) = violation {
                        let mut resp =
                            GatewayError::BadRequest { reason: v.reason() }.to_response(None);
                        resp.headers_mut()
                            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                        resp
                    } else if let Some(e) = overload {
                        let mut resp = e.to_response(None);
                        if shed {
                            resp.headers_mut().insert(
                                http::header::CONNECTION,
                                HeaderValue::from_static("close"),
                            );
                        }
                        resp
                    } else {
                        // Boxed: this future is what hyper spawns for every
                        // h2 stream (and keeps for every HTTP/1.1 request),
                        // and the request's future inside it is several
                        // KiB, which the spawn would copy whole at each step
                        // (into the task cell, and again when it finishes);
                        // boxed here, it is built once on the heap at the
                        // first poll.
                        Box::pin(handler.call(
                            req.map(|b| Some(ClientBody::Stream(b))),
                            peer,
                            https,
                        ))
                        .await
                    };
                    Ok::<_, Infallible>(resp.map(|body| Tracked { body, active }))
                }
            });
            // After a request served on the lean path the connection is
            // HTTP/1.1: no h2 preface is looked for then.
            let builder = if first { builder } else { builder.http1_only() };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut closing = false;
            // One atomic load per poll instead of polling the drain, idle
            // and stop futures on every wake-up of the connection (each
            // would re-register with its notifier, taking its lock).
            let result = std::future::poll_fn(|cx| {
                signal.waker.register(cx.waker());
                match signal.state.load(Ordering::Acquire) {
                    STOP => return Poll::Ready(None),
                    CLOSE if !closing => {
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    }
                    _ => {}
                }
                conn.as_mut().poll(cx).map(Some)
            })
            .await;
            if let Some(Err(e)) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

pin_project_lite::pin_project! {
    /// A client stream after the lean path: the bytes it read and did not
    /// serve come first.
    struct Prefixed<IO> {
        rest: bytes::BytesMut,
        #[pin]
        io: IO,
    }
}

impl<IO: AsyncRead> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if this.rest.is_empty() {
            return this.io.poll_read(cx, buf);
        }
        let n = this.rest.len().min(buf.remaining());
        buf.put_slice(&this.rest.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite> AsyncWrite for Prefixed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// What a connection's watcher asks of it.
const CLOSE: u8 = 1;
/// Past the grace period: dropping the connection closes it.
const STOP: u8 = 2;

/// A connection's watcher's verdict ([`CLOSE`], [`STOP`]) and the
/// connection task's waker.
#[derive(Default)]
struct Signal {
    state: std::sync::atomic::AtomicU8,
    waker: atomic_waker::AtomicWaker,
}

impl Signal {
    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
        self.waker.wake();
    }
}

/// Watches one connection on its own task, so that the connection's task
/// is not woken or slowed by it: asks for a graceful close when the
/// listener drains or the connection has been idle for its timeout, and
/// for a hard stop when the grace period is over.
async fn watch(
    signal: Arc<Signal>,
    peer: SocketAddr,
    draining: CancellationToken,
    hard_stop: CancellationToken,
    idle: Option<(Duration, Arc<Activity>)>,
) {
    let idle = async {
        match &idle {
            Some((t, activity)) => activity.idle_for(*t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = draining.cancelled() => {}
        _ = idle => tracing::debug!(%peer, "idle connection: closing"),
        _ = hard_stop.cancelled() => return signal.set(STOP),
    }
    signal.set(CLOSE);
    hard_stop.cancelled().await;
    signal.set(STOP);
}

/// Where the proxy workers run (`server.worker_cpu_affinity`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Worker `i` runs on CPU `cpus[i]` only.
    Pinned(Vec<usize>),
    /// Left to the kernel's scheduler, for this reason.
    Unpinned(&'static str),
}

/// Where `workers` proxy workers should run, given the setting and the
/// CPUs this process may run on (`None`: unknown).
///
/// Why only when the counts match: then each worker owns a CPU and stays
/// on it, its caches warm, and the kernel never queues two workers on one
/// CPU while the other idles (on a 2-CPU machine shared with the load
/// generator and the upstream, unpinned workers left 12-14% of the CPU
/// idle at 32 connections where pinned ones left 6-7% in an ad hoc run,
/// and pinned ones served 4-7% more requests at 32 connections in
/// `benches/load.sh`: see the README's
/// Benchmarks). With a CPU quota over a larger set (a container's
/// `cpu.max`), the CPUs are shared with other tenants: pinning would tie
/// the workers to the few that happen to come first.
pub fn placement(setting: CpuAffinity, workers: usize, allowed: Option<&[usize]>) -> Placement {
    match (setting, allowed) {
        (CpuAffinity::Off, _) => Placement::Unpinned("worker_cpu_affinity = \"off\""),
        (CpuAffinity::Auto, None) => {
            Placement::Unpinned("the CPUs this process may use are unknown")
        }
        (CpuAffinity::Auto, Some(cpus)) if cpus.len() != workers => {
            Placement::Unpinned("the process may use more or fewer CPUs than it has workers")
        }
        (CpuAffinity::Auto, Some(cpus)) => Placement::Pinned(cpus.to_vec()),
    }
}

/// The CPUs this process may run on (its affinity mask), in order.
pub fn allowed_cpus() -> Option<Vec<usize>> {
    core_affinity::get_core_ids().map(|ids| ids.into_iter().map(|c| c.id).collect())
}

/// Pins the calling thread to `cpu`; a failure is logged and the thread
/// runs unpinned.
pub fn pin_current_thread(cpu: usize) {
    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        tracing::warn!(
            cpu,
            "could not pin a proxy worker to its CPU: it runs unpinned"
        );
    }
}

/// Binds a listener with `SO_REUSEADDR` and a deep backlog.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::from_std(bind_std(addr, false)?)
}

/// Binds `count` (at least one) listeners to `addr` with `SO_REUSEPORT`, one
/// per worker, so the kernel spreads accepted connections over the workers
/// without a shared accept queue. Port 0 picks one free port for all.
pub fn bind_workers(addr: SocketAddr, count: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let first = bind_std(addr, true)?;
    let addr = first.local_addr()?;
    let mut listeners = Vec::with_capacity(count.max(1));
    listeners.push(first);
    for _ in 1..count {
        listeners.push(bind_std(addr, true)?);
    }
    Ok(listeners)
}

fn bind_std(addr: SocketAddr, reuse_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_are_pinned_only_when_each_can_have_a_cpu_of_its_own() {
        let cpus = [2, 3, 5];
        assert_eq!(
            placement(CpuAffinity::Auto, 3, Some(&cpus)),
            Placement::Pinned(vec![2, 3, 5])
        );
        for (setting, workers, allowed) in [
            (CpuAffinity::Off, 3, Some(&cpus[..])),
            (CpuAffinity::Auto, 2, Some(&cpus[..])),
            (CpuAffinity::Auto, 4, Some(&cpus[..])),
            (CpuAffinity::Auto, 3, None),
        ] {
            assert!(
                matches!(placement(setting, workers, allowed), Placement::Unpinned(_)),
                "{setting:?}, {workers} workers, {allowed:?}"
            );
        }
    }

    fn gauges(open: &[i64]) -> Vec<prometheus::IntGauge> {
        open.iter()
            .enumerate()
            .map(|(i, &n)| {
                let g = prometheus::IntGauge::new(format!("w{i}"), "open").expect("gauge");
                g.set(n);
                g
            })
            .collect()
    }

    #[test]
    fn a_connection_goes_to_the_worker_with_the_fewest_open() {
        let g = gauges(&[3, 1, 1]);
        let sides = Balancer::workers(g.clone(), true);
        // Worker 0 has more than the others: the first of the fewest gets it.
        let (to, seat) = sides[0].balancer.place(0);
        assert_eq!(to, 1);
        assert_eq!(g[1].get(), 2, "counted where it goes");
        // A tie keeps it where it arrived.
        let (to, _kept) = sides[2].balancer.place(2);
        assert_eq!(to, 2);
        assert_eq!(g[2].get(), 2);
        drop(seat);
        assert_eq!(g[1].get(), 1, "a seat gives its count back");
        // Not spreading: counted where it arrived.
        let sides = Balancer::workers(g.clone(), false);
        let (to, _kept) = sides[0].balancer.place(0);
        assert_eq!(to, 0);
        assert_eq!(g[0].get(), 4);
    }
}

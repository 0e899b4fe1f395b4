//! Listeners: accept loop, hyper-util's auto builder (HTTP/1.1 and h2c on
//! one port), hyper's timers (so the header-read timeout is really armed),
//! and graceful shutdown: stop accepting, let in-flight requests finish up
//! to the grace period, then return.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::body::Body;
use crate::config::ServerSettings;
use crate::framing;
use crate::problem::GatewayError;
use crate::tls::{TlsInfo, TlsTerminator};

/// Something that answers requests on a listener.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request from `peer`.
    fn call(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send;
}

impl Handler for crate::pipeline::Gateway {
    fn call(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send {
        self.handle(req, peer)
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
    /// This listener's connection and in-flight counters (shared by every
    /// worker serving it; [`ConnSettings::for_another_listener`] gives a
    /// listener its own).
    pub admission: Arc<Admission>,
}

impl ConnSettings {
    /// The same settings with fresh counters, for another listener.
    pub fn for_another_listener(&self) -> ConnSettings {
        ConnSettings {
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

impl From<&ServerSettings> for ConnSettings {
    fn from(s: &ServerSettings) -> Self {
        ConnSettings {
            header_read_timeout: Duration::from_millis(s.header_read_timeout_ms),
            // Twice our own limit: heads a little over it still parse, so the
            // pipeline answers 431 as problem+json instead of hyper's bare 431.
            max_buf_size: (s.max_header_bytes * 2).max(8192),
            grace: Duration::from_millis(s.grace_period_ms),
            h2_max_streams: s.h2_max_concurrent_streams,
            admission: Arc::new(Admission::new(s.max_connections, s.max_requests_in_flight)),
        }
    }
}

fn builder(settings: &ConnSettings) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_buf_size(settings.max_buf_size)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(settings.h2_max_streams)
        .max_header_list_size(settings.max_buf_size as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves `listener` with `handler` until `shutdown` is cancelled, then
/// drains: in-flight requests get up to `settings.grace` to finish.
/// Returns whether the drain completed in time.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    settings: ConnSettings,
    shutdown: CancellationToken,
) -> bool {
    serve_inner(listener, None, handler, settings, shutdown).await
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
) -> bool {
    serve_inner(listener, Some(tls), handler, settings, shutdown).await
}

async fn serve_inner<H: Handler>(
    listener: TcpListener,
    tls: Option<Arc<TlsTerminator>>,
    handler: Arc<H>,
    settings: ConnSettings,
    shutdown: CancellationToken,
) -> bool {
    let builder = builder(&settings);
    let graceful = GracefulShutdown::new();
    let hard_stop = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (slot, shed) = settings.admission.connection();
        if shed {
            tracing::debug!(%peer, "connection limit reached: shedding");
        }
        let conn = Conn {
            builder: builder.clone(),
            handler: handler.clone(),
            peer,
            max_head: settings.max_buf_size,
            hard_stop: hard_stop.clone(),
            admission: settings.admission.clone(),
            slot,
            shed,
        };
        match &tls {
            None => conn.serve(stream, None, graceful.watcher()),
            Some(tls) => {
                let (acceptor, timeout) = (tls.acceptor(), tls.handshake_timeout());
                let watcher = graceful.watcher();
                // The handshake counts as in flight: a drain waits for it
                // (bounded by its timeout) rather than cutting it.
                let stop = hard_stop.clone();
                tokio::spawn(async move {
                    let handshake = tokio::select! {
                        r = tokio::time::timeout(timeout, acceptor.accept(stream)) => r,
                        _ = stop.cancelled() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            let (_, session) = stream.get_ref();
                            let info = TlsInfo {
                                server_name: session.server_name().map(Arc::from),
                                client_certificate: session.peer_certificates().is_some(),
                            };
                            conn.serve(stream, Some(info), watcher);
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, ?timeout, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => true,
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
    hard_stop: CancellationToken,
    admission: Arc<Admission>,
    /// Held for the connection's life.
    slot: Slot,
    /// Over the connection limit: every request gets 503 and the
    /// connection closes after the first answer.
    shed: bool,
}

impl<H: Handler> Conn<H> {
    fn serve<IO>(self, stream: IO, tls: Option<TlsInfo>, watcher: Watcher)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            builder,
            handler,
            peer,
            max_head,
            hard_stop,
            admission,
            slot,
            shed,
        } = self;
        // hyper drops or merges a conflicting Content-Length before the
        // handler sees the head, so framing is checked on the raw bytes
        // (after decryption, for TLS).
        let verdict = Arc::new(framing::Verdict::default());
        let stream = framing::Guarded::new(stream, max_head, verdict.clone());
        let service = service_fn(move |mut req: Request<Incoming>| {
            let handler = handler.clone();
            let violation = verdict.next_request();
            if let Some(info) = &tls {
                req.extensions_mut().insert(info.clone());
            }
            let (request_slot, over) = admission.request();
            let overload = if shed {
                Some(GatewayError::Overloaded {
                    limit: "connections",
                    max: admission.max_connections,
                })
            } else if over {
                Some(GatewayError::Overloaded {
                    limit: "requests in flight",
                    max: admission.max_inflight,
                })
            } else {
                None
            };
            async move {
                let _request_slot = request_slot;
                if let Some(v) = violation {
                    let mut resp =
                        GatewayError::BadRequest { reason: v.reason() }.to_response(None);
                    resp.headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    return Ok(resp);
                }
                if let Some(e) = overload {
                    let mut resp = e.to_response(None);
                    if shed {
                        resp.headers_mut()
                            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                    }
                    return Ok(resp);
                }
                Ok::<_, Infallible>(handler.call(req, peer).await)
            }
        });
        tokio::spawn(async move {
            let _slot = slot;
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let conn = watcher.watch(conn.into_owned());
            tokio::select! {
                result = conn => if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                // Past the grace period: dropping the connection closes it.
                _ = hard_stop.cancelled() => {}
            }
        });
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

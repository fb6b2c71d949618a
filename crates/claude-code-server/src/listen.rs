//! The accept loop: connection limits, timeouts for slow or silent clients, graceful
//! draining. Built on hyper-util rather than `axum::serve`, which holds a connection
//! for as long as its client likes.
//!
//! Each connection is watched by a small clock that knows whether a request is in
//! progress (the service counts requests and their response bodies) and whether bytes
//! of a new request have arrived (the socket wrapper notes reads):
//!
//! - before its first request, a connection has `header_timeout` from accept to
//!   deliver a complete request head (this covers hyper-util's protocol sniffing and
//!   HTTP/2, which hyper's own HTTP/1 header timeout does not);
//! - between requests, it may stay idle for `idle_timeout`; once the first byte of
//!   the next request arrives, the head must be complete within `header_timeout`;
//! - while a request is in progress, the clock stops: its body must arrive within
//!   `body_timeout` of its head, then the run's own limits apply (request timeout,
//!   stream stall timeout), and a socket that accepts no byte of the response for
//!   `stream_stall_timeout` fails the connection.
//!
//! A connection over the global or per-address cap is answered `503` without being
//! read and closed at once.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::{AppState, ServerConfig};

/// The most connections the derived default allows, however high the open-files limit.
pub(crate) const MAX_DERIVED_CONNECTIONS: usize = 65_536;

/// How often refused connections are reported in the log, at most.
const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(10);

/// What a connection over a cap is told before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\n\
content-type: application/json\r\nretry-after: 1\r\ncontent-length: 179\r\n\r\n\
{\"error\":{\"kind\":\"too_many_connections\",\"message\":\"the server holds as many connections as it allows (in total or from your address); retry later\",\"transient\":true},\"messages\":[]}";

/// Serves `state`'s router on `listener` until `shutdown` completes, with the
/// connection limits of its [`ServerConfig`]: caps on connections (in total and per
/// client address), a header timeout, an idle timeout and a stall timeout.
///
/// When `shutdown` completes, the server stops accepting, ends running streams with
/// an `error` event `shutting_down` ([`AppState::shut_down`]), closes connections with
/// no request in progress, and returns once every connection is closed. The caller
/// drops its [`AppState`] clones afterwards, which kills the CLIs the pool holds.
/// [`serve`](crate::serve) wires this to `SIGINT` and `SIGTERM`.
///
/// # Errors
///
/// An [`io::ErrorKind::InvalidInput`] error, before anything is served, when a limit
/// of the configuration is zero.
///
/// # Cancel safety
///
/// Dropping the future stops accepting; connections already accepted keep being
/// served by their own tasks (within their limits) until they end. Complete
/// `shutdown` instead to drain them.
pub async fn serve_on<F>(listener: TcpListener, state: AppState, shutdown: F) -> io::Result<()>
where
    F: Future<Output = ()> + Send,
{
    let limits = Limits::of(&state.inner.config)?;
    let app = crate::router(state.clone());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The watchdog does hyper's header timeout's job, for both protocols and for the
    // protocol sniffing; hyper's own would also close idle keep-alive connections.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let stopping = CancellationToken::new();
    let admission = Admission::new(limits.max_connections, limits.max_connections_per_ip);
    tracing::info!(
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        header_timeout = ?limits.header_timeout,
        idle_timeout = ?limits.idle_timeout,
        body_timeout = ?limits.body_timeout,
        stall_timeout = ?limits.stall_timeout,
        "connection limits"
    );
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => accepted,
            Err(err) if is_connection_error(&err) => continue,
            Err(err) => {
                // Out of file descriptors, most likely: wait for some to be given back
                // rather than spin.
                tracing::error!(error = %err, "accept failed; pausing for a second");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        let admitted = match admission.admit(remote.ip()) {
            Ok(admitted) => admitted,
            Err(cap) => {
                admission.report_refusal(cap);
                refuse(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let socket = Socket {
            stream,
            activity: activity.clone(),
            stall: limits.stall_timeout,
            write_stalled: None,
        };
        let service =
            connection_service(app.clone(), remote, activity.clone(), limits.body_timeout);
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(socket), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let stopping = stopping.clone();
        tokio::spawn(async move {
            tokio::select! {
                served = connection => {
                    if let Err(err) = served {
                        tracing::debug!(%remote, error = %err, "connection ended with an error");
                    }
                }
                why = activity.expired(&limits, &stopping) => {
                    tracing::debug!(%remote, why, "closing a connection");
                }
            }
            drop(admitted);
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "stopped accepting; ending streams and waiting for connections to close"
    );
    stopping.cancel();
    state.shut_down();
    graceful.shutdown().await;
    Ok(())
}

/// The limits the accept loop enforces, checked.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_timeout: Duration,
    idle_timeout: Duration,
    body_timeout: Duration,
    stall_timeout: Duration,
    max_connections: usize,
    max_connections_per_ip: usize,
}

impl Limits {
    fn of(config: &ServerConfig) -> io::Result<Limits> {
        config.check_limits()?;
        Ok(Limits {
            header_timeout: config.header_timeout,
            idle_timeout: config.idle_timeout,
            body_timeout: config.body_timeout,
            stall_timeout: config.stream_stall_timeout,
            max_connections: config
                .max_connections
                .unwrap_or_else(derived_max_connections),
            max_connections_per_ip: config.max_connections_per_ip,
        })
    }
}

/// Half the soft limit on open files (at least 1, at most
/// [`MAX_DERIVED_CONNECTIONS`]): the other half is left for the CLIs' pipes, logs and
/// the rest.
pub(crate) fn derived_max_connections() -> usize {
    use nix::sys::resource::{Resource, getrlimit};
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 2)
        .unwrap_or(MAX_DERIVED_CONNECTIONS)
        .clamp(1, MAX_DERIVED_CONNECTIONS)
}

/// Raises the soft limit on open files to the hard limit (the most an unprivileged
/// process may ask for). Returns the soft limit in force afterwards.
pub(crate) fn raise_open_files_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        if let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            tracing::debug!(error = %err, soft, hard, "could not raise the open-files limit");
            return Some(soft);
        }
        return Some(hard);
    }
    Some(soft)
}

/// Errors of one connection that the listener survives (axum's list).
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// Tells a connection over a cap to come back later, without reading from it or
/// waiting on it, and closes it.
fn refuse(stream: TcpStream) {
    // A fresh socket's send buffer is empty: this either writes it all or nothing.
    let _ = stream.try_write(BUSY);
    // Read what already arrived, so that closing does not turn into a reset that
    // destroys the answer in flight.
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        if !matches!(stream.try_read(&mut sink), Ok(n) if n > 0) {
            break;
        }
    }
    drop(stream);
}

/// The per-connection service: the router, with the caller's address as
/// [`ConnectInfo`], each request's body given `body_timeout`, each request counted as
/// in progress until its response body ends.
fn connection_service(
    app: Router,
    remote: SocketAddr,
    activity: Arc<Activity>,
    body_timeout: Duration,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Tracked>, Infallible>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    hyper::service::service_fn(move |request: Request<Incoming>| {
        let busy = Busy::new(activity.clone());
        let deadline = Instant::now() + body_timeout;
        let mut request = request.map(|body| Deadline {
            body,
            deadline,
            timer: None,
        });
        request.extensions_mut().insert(ConnectInfo(remote));
        let app = app.clone();
        async move {
            let response = match app.oneshot(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            Ok(response.map(|body| Tracked { body, _busy: busy }))
        }
    })
}

/// A response body that keeps its request counted as in progress until it is done.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fails once its deadline passes.
struct Deadline {
    body: Incoming,
    deadline: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl hyper::body::Body for Deadline {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(
                        Err("the request body did not arrive in time".into()),
                    ));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// No request in progress since `since`; `head` is when the first byte of the
    /// next one arrived; `first` until the first request.
    Waiting {
        since: Instant,
        head: Option<Instant>,
        first: bool,
    },
    /// This many requests in progress (more than one on HTTP/2).
    Busy(usize),
}

/// A connection's clock: what it is doing, and a signal when that changes.
struct Activity {
    phase: Mutex<Phase>,
    changed: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            phase: Mutex::new(Phase::Waiting {
                since: Instant::now(),
                head: None,
                first: true,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived.
    fn read(&self) {
        let mut phase = self.lock();
        if let Phase::Waiting {
            head: head @ None, ..
        } = &mut *phase
        {
            *head = Some(Instant::now());
            drop(phase);
            self.changed.notify_one();
        }
    }

    /// When the connection is to be closed, if nothing changes; `None` while a request
    /// is in progress.
    fn deadline(&self, limits: &Limits, stopping: bool) -> Option<Instant> {
        match *self.lock() {
            Phase::Busy(_) => None,
            // Shutting down: nothing in progress, nothing to wait for.
            Phase::Waiting { .. } if stopping => Some(Instant::now()),
            Phase::Waiting {
                since, first: true, ..
            } => Some(since + limits.header_timeout),
            Phase::Waiting {
                since, head: None, ..
            } => Some(since + limits.idle_timeout),
            Phase::Waiting {
                head: Some(head), ..
            } => Some(head + limits.header_timeout),
        }
    }

    /// Completes when the connection has been waiting for a request head (or idle) for
    /// longer than the limits allow, or has nothing in progress at shutdown. Says why.
    async fn expired(&self, limits: &Limits, stopping: &CancellationToken) -> &'static str {
        loop {
            let changed = self.changed.notified();
            let stopped = stopping.is_cancelled();
            let deadline = self.deadline(limits, stopped);
            if let Some(deadline) = deadline
                && deadline <= Instant::now()
            {
                return match *self.lock() {
                    _ if stopped => "shutting down",
                    Phase::Waiting {
                        head: None,
                        first: false,
                        ..
                    } => "idle",
                    _ => "request head not received in time",
                };
            }
            let sleep = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = changed => {}
                () = sleep => {}
                () = stopping.cancelled(), if !stopped => {}
            }
        }
    }
}

/// A request in progress, until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: Arc<Activity>) -> Busy {
        {
            let mut phase = activity.lock();
            *phase = match *phase {
                Phase::Busy(n) => Phase::Busy(n + 1),
                Phase::Waiting { .. } => Phase::Busy(1),
            };
        }
        activity.changed.notify_one();
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        {
            let mut phase = self.0.lock();
            *phase = match *phase {
                Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
                _ => Phase::Waiting {
                    since: Instant::now(),
                    head: None,
                    first: false,
                },
            };
        }
        self.0.changed.notify_one();
    }
}

/// The accepted socket: notes reads for the clock, and fails a write that makes no
/// progress for the stall timeout (the client stopped reading).
struct Socket {
    stream: TcpStream,
    activity: Arc<Activity>,
    stall: Duration,
    write_stalled: Option<Pin<Box<Sleep>>>,
}

impl Socket {
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_stalled = None;
            return polled;
        }
        let stall = self.stall;
        let timer = self
            .write_stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_ready() {
            // Discard what the client never took, now, rather than keep it queued.
            let _ = self.stream.set_zero_linger();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client accepted no data for the stall timeout",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.read();
        }
        polled
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Which cap refused a connection.
#[derive(Debug, Clone, Copy)]
enum Cap {
    Total,
    PerAddress,
}

/// The connection caps: a semaphore for the total, a count per client address.
struct Admission {
    total: Arc<Semaphore>,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
    max_per_address: usize,
    refused: Mutex<Refused>,
}

#[derive(Default)]
struct Refused {
    last_report: Option<Instant>,
    total: u64,
    per_address: u64,
}

/// An admitted connection's places under the caps, given back on drop.
struct Admitted {
    _permit: OwnedSemaphorePermit,
    address: IpAddr,
    per_address: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Admission {
    fn new(max_total: usize, max_per_address: usize) -> Admission {
        Admission {
            total: Arc::new(Semaphore::new(max_total.min(Semaphore::MAX_PERMITS))),
            per_address: Arc::new(Mutex::new(HashMap::new())),
            max_per_address,
            refused: Mutex::new(Refused::default()),
        }
    }

    fn admit(&self, ip: IpAddr) -> Result<Admitted, Cap> {
        let address = client_key(ip);
        let permit = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| Cap::Total)?;
        {
            let mut counts = lock(&self.per_address);
            let count = counts.entry(address).or_insert(0);
            if *count >= self.max_per_address {
                return Err(Cap::PerAddress);
            }
            *count += 1;
        }
        Ok(Admitted {
            _permit: permit,
            address,
            per_address: self.per_address.clone(),
        })
    }

    /// Counts a refusal; logs the counts at most every [`REFUSAL_REPORT_EVERY`], so a
    /// flood of connections does not become a flood of log lines.
    fn report_refusal(&self, cap: Cap) {
        let mut refused = lock(&self.refused);
        match cap {
            Cap::Total => refused.total += 1,
            Cap::PerAddress => refused.per_address += 1,
        }
        let due = refused
            .last_report
            .is_none_or(|last| last.elapsed() >= REFUSAL_REPORT_EVERY);
        if due {
            tracing::warn!(
                over_total_cap = refused.total,
                over_per_address_cap = refused.per_address,
                "refused connections over the connection limits"
            );
            *refused = Refused {
                last_report: Some(Instant::now()),
                ..Refused::default()
            };
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = lock(&self.per_address);
        if let Some(count) = counts.get_mut(&self.address) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The address a connection counts against: an IPv4 address (IPv4-mapped IPv6
/// included), or an IPv6 /64 network (one host usually holds a whole /64).
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_network_counts_as_one_address() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn caps_count_and_give_back() {
        let admission = Admission::new(3, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert!(matches!(admission.admit(a), Err(Cap::PerAddress)));
        let _third = admission.admit(b).unwrap();
        assert!(matches!(admission.admit(b), Err(Cap::Total)));
        drop(first);
        let _again = admission.admit(a).unwrap();
        assert!(lock(&admission.per_address).len() == 2);
    }

    #[test]
    fn the_busy_answer_declares_its_length() {
        let text = std::str::from_utf8(BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let _: serde_json::Value = serde_json::from_str(body).unwrap();
    }
}

//! The connection layer's own bounds, below HTTP: how many connections may be open at once, and
//! when a connection that nobody uses, or whose peer stopped reading, is ended.
//!
//! - [`Gate`]: the cap on open connections (`max_connections`, never more than the process's
//!   file-descriptor limit allows, see [`connection_budget`]). A connection beyond it is answered
//!   503 at once (plain HTTP) or closed, and one log line at most every few seconds says how many
//!   were turned away; failed `accept` calls are logged the same way.
//! - [`Activity`]: what one connection is doing, recorded by its byte stream ([`Io`]) and by its
//!   requests ([`track_requests`]), and watched by [`watch`], which ends the connection when
//!   (a) no request is in flight and no byte was read or written for the idle timeout (an idle
//!   keep-alive connection, an HTTP/2 preface followed by silence), (b) a write has waited for the
//!   peer to accept a byte for longer than the stall timeout (a download nobody reads), or (c) on
//!   HTTP/2, an answer has not been asked for more data for the stall timeout (a stream whose
//!   flow-control window the peer keeps closed). Ending the connection drops its answers, which
//!   gives back their memory and their download slots.
//!
//! No timer runs per byte: the stream and the answers only store a time, and the watch wakes once
//! per timeout period (or at the earliest deadline) to compare.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// File descriptors kept for everything but connections: the listener, the metadata and body
/// stores' own files and connections, the log, refusals being answered.
const FD_RESERVE: u64 = 128;
/// Longest a refused connection is kept while its 503 is written and its request read and dropped.
const REFUSAL_TIME: Duration = Duration::from_secs(3);
/// How long a refused connection's answer waits for the request to begin (on a loaded machine a
/// client can take more than half a second between connecting and writing its request).
const REQUEST_WAIT: Duration = Duration::from_secs(2);
/// Refusals answered at once; beyond, refused connections are closed without an answer.
const MAX_REFUSING: usize = 32;
/// At most one log line per this period for refused connections and for failed `accept` calls.
const LOG_PERIOD: Duration = Duration::from_secs(5);
/// What a client turned away at the cap is told to wait, in seconds.
const REFUSAL_RETRY_AFTER: u32 = 2;

/// Raises the soft limit on open files to the hard limit and returns the soft limit in force.
#[cfg(unix)]
fn raise_fd_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every platform
    Some(limit.rlim_cur as u64)
}

#[cfg(not(unix))]
fn raise_fd_limit() -> Option<u64> {
    None
}

/// How many connections may be open at once: `configured`, lowered (with a warning) to what the
/// process's open-file limit allows once raised to its hard limit. Each connection may need two
/// descriptors (its socket, and the file or store connection an upload or download uses), and
/// [`FD_RESERVE`] are kept for the rest.
pub(crate) fn connection_budget(configured: usize) -> usize {
    let Some(files) = raise_fd_limit() else {
        return configured;
    };
    let budget = fd_budget(files);
    if configured <= budget {
        return configured;
    }
    tracing::warn!(
        "max_connections is {configured}, but this process may open only {files} files (ulimit -n) and each \
         connection may need two: serving at most {budget} connections at once; raise the open-file limit \
         (ulimit -n, or LimitNOFILE= in a systemd unit) to allow more"
    );
    budget
}

/// Connections that `files` open files leave room for.
fn fd_budget(files: u64) -> usize {
    usize::try_from(files.saturating_sub(FD_RESERVE) / 2)
        .unwrap_or(usize::MAX)
        .max(1)
}

/// Counts events and says, at most once per [`LOG_PERIOD`], how many happened since it last said.
struct Throttled {
    last: Option<Instant>,
    count: u64,
}

impl Throttled {
    fn new() -> Throttled {
        Throttled { last: None, count: 0 }
    }

    /// Counts one event; returns how many to report when a line is due.
    fn hit(&mut self) -> Option<u64> {
        self.count += 1;
        if self.last.is_some_and(|last| last.elapsed() < LOG_PERIOD) {
            return None;
        }
        self.last = Some(Instant::now());
        Some(std::mem::take(&mut self.count))
    }
}

/// The cap on open connections, used by the accept loop.
pub(crate) struct Gate {
    slots: Arc<Semaphore>,
    limit: usize,
    refusing: Arc<AtomicUsize>,
    turned_away: Throttled,
    accept_failures: Throttled,
}

/// An open connection's place under the cap; given back when dropped.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("stowage_connections_open").decrement(1.0);
    }
}

impl Gate {
    /// A gate whose `limit` places are `slots`, shared with other listeners' gates: one cap over
    /// every listener of the server (the open-file limit is one).
    pub(crate) fn sharing(limit: usize, slots: Arc<Semaphore>) -> Gate {
        let limit = limit.clamp(1, Semaphore::MAX_PERMITS);
        Gate {
            slots,
            limit,
            refusing: Arc::new(AtomicUsize::new(0)),
            turned_away: Throttled::new(),
            accept_failures: Throttled::new(),
        }
    }

    /// A place for a newly accepted connection, or `None` at the cap: the connection is then
    /// answered 503 with `Retry-After` when `answer` (plain HTTP; bounded in time and in number),
    /// else closed.
    pub(crate) fn admit(
        &mut self,
        stream: tokio::net::TcpStream,
        answer: bool,
    ) -> Option<(tokio::net::TcpStream, Slot)> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            metrics::gauge!("stowage_connections_open").increment(1.0);
            return Some((stream, Slot { _permit: permit }));
        }
        metrics::counter!("stowage_connections_refused_total").increment(1);
        if let Some(count) = self.turned_away.hit() {
            tracing::warn!(
                "{count} connection(s) turned away: {} are open, as many as max_connections allows; \
                 raise max_connections (and the open-file limit) if this is legitimate load",
                self.limit
            );
        }
        if answer && self.refusing.load(Ordering::Relaxed) < MAX_REFUSING {
            self.refusing.fetch_add(1, Ordering::Relaxed);
            let refusing = self.refusing.clone();
            let limit = self.limit;
            tokio::spawn(async move {
                let _ = tokio::time::timeout(REFUSAL_TIME, refuse(stream, limit)).await;
                refusing.fetch_sub(1, Ordering::Relaxed);
            });
        }
        None
    }

    /// Logs a failed `accept` (out of file descriptors and the like), at most one line per period.
    pub(crate) fn accept_failed(&mut self, error: &std::io::Error) {
        metrics::counter!("stowage_accept_failures_total").increment(1);
        if let Some(count) = self.accept_failures.hit() {
            tracing::warn!(error = %error, failures = count, "accept failed");
        }
    }
}

/// Answers a connection turned away at the cap with a 503, then reads and drops what the client
/// sent (so that closing does not reset the connection before the answer is read). The answer
/// waits (briefly) for the whole request head: an HTTP client such as hyper treats an answer that
/// arrives before it has finished writing its request as a broken connection, not as a 503 (it
/// did, under load, when the answer waited only for the request's first bytes).
async fn refuse(mut stream: tokio::net::TcpStream, limit: usize) {
    let _ = tokio::time::timeout(REQUEST_WAIT, read_request_head(&mut stream)).await;
    let body = format!(
        "{{\"success\":false,\"errors\":[\"The server has {limit} connections open, as many as it allows at once \
         (max_connections); try again in a few seconds\"]}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json; charset=utf-8\r\n\
         retry-after: {REFUSAL_RETRY_AFTER}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(answer.as_bytes()).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let mut read = 0;
    while read < 64 * 1024 {
        match tokio::io::AsyncReadExt::read(&mut stream, &mut sink).await {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n,
        }
    }
}

/// Most bytes read while waiting for the end of a refused connection's request head.
const HEAD_LIMIT: usize = 64 * 1024;

/// Reads and drops what a client sends up to the blank line that ends its request head (or
/// [`HEAD_LIMIT`] bytes, or the client's end of the stream).
async fn read_request_head(stream: &mut tokio::net::TcpStream) {
    let mut chunk = [0u8; 4096];
    // The last three bytes of what came before, then the newest chunk: a "\r\n\r\n" split
    // across two reads is still found.
    let mut window = Vec::with_capacity(chunk.len() + 3);
    let mut read = 0;
    while read < HEAD_LIMIT {
        let n = match tokio::io::AsyncReadExt::read(stream, &mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        read += n;
        window.extend_from_slice(&chunk[..n]);
        if window.windows(4).any(|w| w == b"\r\n\r\n") {
            return;
        }
        window.drain(..window.len().saturating_sub(3));
    }
}

/// "No time": a write that is not waiting.
const NOT_WAITING: u64 = u64::MAX;

/// What one connection is doing: times are milliseconds since the connection began.
pub(crate) struct Activity {
    start: Instant,
    /// The last byte read or written, or the last request that ended.
    last_io: AtomicU64,
    /// Since when a write has been waiting for the peer to accept a byte ([`NOT_WAITING`]: none).
    write_waiting: AtomicU64,
    /// Requests whose answers have not been handed over whole.
    requests: AtomicUsize,
    http2: AtomicBool,
    /// The HTTP/2 answers being sent.
    answers: Mutex<Vec<Weak<AnswerProgress>>>,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_io: AtomicU64::new(0),
            write_waiting: AtomicU64::new(NOT_WAITING),
            requests: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
            answers: Mutex::new(Vec::new()),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NOT_WAITING - 1)
    }

    fn moved(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// A request begins; it ends when the returned guard is dropped.
    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        RequestGuard(self.clone())
    }

    /// Why the connection must end now, or the time at which to look again.
    fn verdict(&self, idle: u64, stall: u64) -> Result<u64, Ending> {
        let now = self.now();
        let mut next = now.saturating_add(idle.min(stall));
        let waiting = self.write_waiting.load(Ordering::Relaxed);
        if waiting != NOT_WAITING {
            let deadline = waiting.saturating_add(stall);
            if deadline <= now {
                return Err(Ending::WriteStalled);
            }
            next = next.min(deadline);
        } else if self.requests.load(Ordering::Relaxed) == 0 {
            let deadline = self.last_io.load(Ordering::Relaxed).saturating_add(idle);
            if deadline <= now {
                return Err(Ending::Idle);
            }
            next = next.min(deadline);
        }
        if self.http2.load(Ordering::Relaxed) {
            let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
            for answer in answers.iter().filter_map(Weak::upgrade) {
                if answer.waiting.load(Ordering::Relaxed) || answer.done.load(Ordering::Relaxed) {
                    continue;
                }
                let deadline = answer.last.load(Ordering::Relaxed).saturating_add(stall);
                if deadline <= now {
                    return Err(Ending::AnswerStalled);
                }
                next = next.min(deadline);
            }
        }
        Ok(next)
    }

    fn register(&self, progress: &Arc<AnswerProgress>) {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.len() >= 32 {
            answers.retain(|a| a.upgrade().is_some_and(|a| !a.done.load(Ordering::Relaxed)));
        }
        answers.push(Arc::downgrade(progress));
    }
}

/// Why [`watch`] ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Idle,
    WriteStalled,
    AnswerStalled,
}

impl Ending {
    fn label(self) -> &'static str {
        match self {
            Ending::Idle => "idle",
            Ending::WriteStalled => "write_stalled",
            Ending::AnswerStalled => "answer_stalled",
        }
    }
}

/// A request in flight on a connection.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::Relaxed);
        self.0.moved();
    }
}

/// Serves `connection` until it ends, or ends it (by dropping it) when `activity` shows it idle
/// for `idle` or stalled for `stall` (see the module documentation). Resolves to the connection's
/// outcome, or `None` when it was ended here.
pub(crate) fn watch<F: Future>(connection: F, activity: Arc<Activity>, idle: Duration, stall: Duration) -> Watch<F> {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    let first = activity.start;
    Watch {
        connection: Box::pin(connection),
        activity,
        idle: millis(idle),
        stall: millis(stall),
        timer: Box::pin(tokio::time::sleep_until(first)),
    }
}

/// The future of [`watch`].
pub(crate) struct Watch<F> {
    connection: Pin<Box<F>>,
    activity: Arc<Activity>,
    idle: u64,
    stall: u64,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<F: Future> Future for Watch<F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        if let Poll::Ready(output) = self.connection.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        while self.timer.as_mut().poll(cx).is_ready() {
            match self.activity.verdict(self.idle, self.stall) {
                Ok(next) => {
                    let at = self.activity.start + Duration::from_millis(next);
                    self.timer.as_mut().reset(at);
                }
                Err(ending) => {
                    metrics::counter!("stowage_connections_timed_out_total", "reason" => ending.label()).increment(1);
                    tracing::debug!(reason = ending.label(), "connection ended by the server");
                    return Poll::Ready(None);
                }
            }
        }
        Poll::Pending
    }
}

/// Wraps the service of one connection so that `activity` knows which requests are in flight
/// (from the call until their answer's body has been handed over whole, or dropped) and, on
/// HTTP/2, how each answer progresses.
pub(crate) fn track_requests<S>(service: S, activity: Arc<Activity>) -> Tracked<S> {
    Tracked {
        inner: service,
        activity,
    }
}

/// The service of one connection, wrapped by [`track_requests`].
#[derive(Clone)]
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> tower::Service<hyper::Request<hyper::body::Incoming>> for Tracked<S>
where
    S: tower::Service<hyper::Request<hyper::body::Incoming>, Response = axum::response::Response>,
    S::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<axum::response::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: hyper::Request<hyper::body::Incoming>) -> Self::Future {
        let activity = self.activity.clone();
        let guard = activity.begin();
        let http2 = request.version() == hyper::Version::HTTP_2;
        if http2 {
            activity.http2.store(true, Ordering::Relaxed);
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            // Watched from the moment the answer exists: a handler that takes long (an upload
            // streaming in, a slow store) is not a stalled answer.
            let progress = http2.then(|| {
                let progress = Arc::new(AnswerProgress {
                    last: AtomicU64::new(activity.now()),
                    waiting: AtomicBool::new(false),
                    done: AtomicBool::new(false),
                });
                activity.register(&progress);
                progress
            });
            Ok(response.map(|body| {
                Body::new(Answer {
                    body,
                    guard: Some(guard),
                    progress,
                })
            }))
        })
    }
}

/// How an HTTP/2 answer's body is being taken by the connection.
struct AnswerProgress {
    /// When the body last handed over a frame (or was created).
    last: AtomicU64,
    /// The connection asked for a frame and the body has none yet: the wait is on this side.
    waiting: AtomicBool,
    done: AtomicBool,
}

/// An answer's body, holding its request's place among those in flight until it ends.
struct Answer {
    body: Body,
    guard: Option<RequestGuard>,
    progress: Option<Arc<AnswerProgress>>,
}

impl HttpBody for Answer {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        let this = &mut *self;
        match &polled {
            Poll::Pending => {
                if let Some(progress) = &this.progress {
                    progress.waiting.store(true, Ordering::Relaxed);
                }
            }
            Poll::Ready(Some(_)) => {
                if let (Some(progress), Some(guard)) = (&this.progress, &this.guard) {
                    progress.last.store(guard.0.now(), Ordering::Relaxed);
                    progress.waiting.store(false, Ordering::Relaxed);
                }
            }
            Poll::Ready(None) => {
                if let Some(progress) = &this.progress {
                    progress.done.store(true, Ordering::Relaxed);
                }
                this.guard = None;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        if let Some(progress) = &self.progress {
            progress.done.store(true, Ordering::Relaxed);
        }
    }
}

/// A connection's byte stream, recording in [`Activity`] when bytes move and since when a write
/// has been waiting for the peer.
pub(crate) struct Io<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Io<T> {
    pub(crate) fn new(inner: T, activity: Arc<Activity>) -> Io<T> {
        Io { inner, activity }
    }

    fn wrote(&self, polled: &Poll<std::io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.activity.moved();
                self.activity.write_waiting.store(NOT_WAITING, Ordering::Relaxed);
            }
            Poll::Pending => {
                let now = self.activity.now();
                let _ = self.activity.write_waiting.compare_exchange(
                    NOT_WAITING,
                    now,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            _ => {}
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Io<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.moved();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Io<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.wrote(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    const IDLE: Duration = Duration::from_secs(60);
    const STALL: Duration = Duration::from_secs(10);

    /// A refused connection's 503 waits for the end of the request head, even when the head
    /// comes in pieces (the blank line split across two writes here).
    #[tokio::test]
    async fn a_refusal_is_answered_after_the_whole_request_head() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            refuse(stream, 7).await;
        });
        let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        client
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: example\r\n\r")
            .await
            .expect("send");
        let mut first = [0u8; 64];
        let early = tokio::time::timeout(Duration::from_millis(300), client.read(&mut first)).await;
        assert!(
            early.is_err(),
            "answered before the request head was complete: {early:?}"
        );
        client.write_all(b"\n").await.expect("send");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("an answer in time")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{answer}");
        assert!(answer.contains("retry-after: "), "{answer}");
        assert!(answer.contains("The server has 7 connections open"), "{answer}");
        // The refusal reads what the client still sends until the client closes.
        drop(client);
        server.await.expect("the refusal ends");
    }

    #[test]
    fn the_budget_leaves_room_for_two_descriptors_per_connection_and_a_reserve() {
        assert_eq!(fd_budget(256), 64);
        assert_eq!(fd_budget(1024), 448);
        assert_eq!(fd_budget(10), 1, "never zero");
    }

    #[test]
    fn a_throttled_line_counts_what_it_held_back() {
        let mut throttled = Throttled::new();
        assert_eq!(throttled.hit(), Some(1), "the first event is said at once");
        assert_eq!(throttled.hit(), None);
        assert_eq!(throttled.hit(), None);
        throttled.last = Some(Instant::now() - LOG_PERIOD);
        assert_eq!(
            throttled.hit(),
            Some(3),
            "the next line counts the two held back and itself"
        );
    }

    /// The server end of a connection, wrapped in [`Io`], and the client end.
    fn watched() -> (Arc<Activity>, Io<tokio::io::DuplexStream>, tokio::io::DuplexStream) {
        let (server, client) = tokio::io::duplex(1024);
        let activity = Activity::new();
        (activity.clone(), Io::new(server, activity), client)
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_ends_after_the_idle_timeout_and_not_before() {
        let (activity, _server, _client) = watched();
        let started = Instant::now();
        let outcome = watch(std::future::pending::<()>(), activity, IDLE, STALL).await;
        assert_eq!(outcome, None);
        assert_eq!(started.elapsed(), IDLE);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_moving_keep_a_connection_open() {
        let (activity, mut server, mut client) = watched();
        let started = Instant::now();
        // The client sends a byte every 50 s: never idle for 60 s. The connection "ends" after
        // 200 s by itself.
        let connection = async move {
            let mut byte = [0u8; 1];
            for _ in 0..4 {
                server.read_exact(&mut byte).await.expect("a byte");
            }
        };
        let client = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_secs(50)).await;
                client.write_all(b"x").await.expect("write");
            }
            client
        });
        assert_eq!(watch(connection, activity, IDLE, STALL).await, Some(()));
        assert_eq!(started.elapsed(), Duration::from_secs(200));
        drop(client.await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_flight_is_never_idle() {
        let (activity, _server, _client) = watched();
        let guard = activity.begin();
        let slow_handler = tokio::time::sleep(Duration::from_secs(600));
        assert_eq!(watch(slow_handler, activity.clone(), IDLE, STALL).await, Some(()));
        drop(guard);
        let started = Instant::now();
        assert_eq!(watch(std::future::pending::<()>(), activity, IDLE, STALL).await, None);
        assert_eq!(started.elapsed(), IDLE, "idle counts from the end of the last request");
    }

    #[tokio::test(start_paused = true)]
    async fn an_http2_answer_not_asked_for_data_ends_the_connection_after_the_stall_timeout() {
        let (activity, _server, _client) = watched();
        activity.http2.store(true, Ordering::Relaxed);
        let _request = activity.begin();
        let answer = Arc::new(AnswerProgress {
            last: AtomicU64::new(0),
            waiting: AtomicBool::new(true),
            done: AtomicBool::new(false),
        });
        activity.register(&answer);
        // The answer itself is slow (the connection waits for it): never a stall.
        tokio::time::sleep(STALL * 3).await;
        assert!(
            activity
                .verdict(IDLE.as_millis() as u64, STALL.as_millis() as u64)
                .is_ok()
        );
        // The connection stops asking (the peer keeps the stream's window closed).
        answer.waiting.store(false, Ordering::Relaxed);
        answer.last.store(activity.now(), Ordering::Relaxed);
        let started = Instant::now();
        assert!(
            watch(std::future::pending::<()>(), activity, IDLE, STALL)
                .await
                .is_none()
        );
        assert_eq!(started.elapsed(), STALL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_does_not_take_ends_the_connection_after_the_stall_timeout() {
        let (activity, mut server, _client) = watched();
        let _request = activity.begin();
        let started = Instant::now();
        // 1 KiB fits in the pipe; the rest waits for a reader that never comes.
        let writer = async move { server.write_all(&[7u8; 4096]).await };
        assert!(watch(writer, activity, IDLE, STALL).await.is_none());
        assert_eq!(started.elapsed(), STALL);
    }
}

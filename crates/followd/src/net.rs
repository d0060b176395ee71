//! The HTTP listener: accepts connections, bounds them, serves each with hyper, shuts down gracefully.
//!
//! `axum::serve` would do most of this, but it offers neither a cap on open connections nor hyper's
//! header-read timeout, and both are what keep memory bounded under a flood:
//! - at most `max_connections` are open (WebSockets included); one past it is answered at once with
//!   the `60007` envelope ("server busy, retry") and closed, so a client never waits in silence;
//! - a client has `header_read_timeout_ms` to send a request's headers, counted from the connection
//!   or the previous answer (this also closes idle keep-alive connections); a slow or silent client
//!   (slowloris) is disconnected;
//! - request headers are read into at most [`MAX_HEADER_BUFFER`] bytes (HTTP 431 past it), bodies at
//!   most 64 KiB ([`crate::MAX_BODY_BYTES`]), so a connection's buffers stay small.
//!
//! Everything after the headers (the body, the deadline, the concurrency limit) is
//! [`crate::surface::overload`]'s job.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::metrics::Refusal;
use crate::state::AppState;

/// The most bytes of request line and headers read for one request.
pub const MAX_HEADER_BUFFER: usize = 16 * 1024;
/// Refusals in progress at once (each takes at most [`REFUSAL_TIME`]); past it, accepting waits.
const MAX_REFUSING: usize = 1024;
/// How long a refusal may take: writing the answer, then reading what the client sent so that closing
/// does not reset the connection under the answer.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// Connections the kernel may hold for us before we accept them (capped by `net.core.somaxconn`):
/// a burst past the backlog has its connection attempts dropped and retried after 1 s, 3 s, 7 s….
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listening socket with a backlog of [`LISTEN_BACKLOG`] (the standard library's is 128,
/// tokio's 1024).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The connection limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time allowed for a request's headers.
    pub header_read_timeout: Duration,
}

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets in-flight
/// requests finish and returns once every HTTP connection has closed (WebSockets are told to close
/// by the caller).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    st: Arc<AppState>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    // `stop` tells connections to finish; each holds a `done` receiver, so `closed()` waits for all.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
        };
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let open = st.metrics.open_connections.clone();
                open.inc();
                let conn = Connection { router: router.clone(), peer, limits, stop: stop_rx.clone(), done: done_rx.clone() };
                tokio::spawn(conn.serve(Counted { stream, _permit: permit, open }));
            }
            Err(_) => {
                st.metrics.refused(Refusal::Connections);
                // Past MAX_REFUSING refusals in progress, accepting waits for one to end (each takes
                // at most REFUSAL_TIME); later connections wait in the backlog, none is dropped unanswered.
                let slot = tokio::select! {
                    () = &mut shutdown => break,
                    slot = refusing.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                };
                tokio::spawn(refuse(stream, st.next_request_id(), slot));
            }
        }
    }
    drop(listener);
    st.health.set_stopping();
    let _ = stop_tx.send(true);
    drop(done_rx);
    done_tx.closed().await;
    Ok(())
}

/// Errors of `accept` that concern one connection are skipped; others (out of file descriptors)
/// pause accepting briefly, as the connections open may soon close.
async fn accept_error(e: io::Error) {
    if matches!(e.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused) {
        return;
    }
    tracing::error!(error = %e, "cannot accept connections (out of file descriptors? raise `ulimit -n` or lower max_connections)");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Answers a connection over the cap with the overload envelope, without reading its request. Which
/// API it was for is unknown, so the envelope carries `ErrorDisplay` as a follow API's does: an extra
/// field an account API's client ignores, and the answer matches every API's documented error.
async fn refuse(mut stream: TcpStream, request_id: String, _slot: OwnedSemaphorePermit) {
    let body = format!(
        r#"{{"ActionStatus":"FAIL","ErrorCode":{},"ErrorInfo":"server busy: too many open connections; retry","ErrorDisplay":"","RequestId":"{request_id}"}}"#,
        followd_protocol::code::RATE_LIMITED
    );
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\naccess-control-allow-origin: *\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await?;
        // Closing with unread input would reset the connection, and a reset can discard the answer
        // before the client reads it: read until the client closes (or the time is up).
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, io::Error>(())
    })
    .await;
}

/// One accepted connection.
struct Connection {
    router: Router,
    peer: SocketAddr,
    limits: Limits,
    stop: watch::Receiver<bool>,
    done: watch::Receiver<()>,
}

impl Connection {
    async fn serve(mut self, io: Counted) {
        let (router, peer) = (self.router, self.peer);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            tower_service::Service::call(&mut router.clone(), req)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder.timer(TokioTimer::new()).header_read_timeout(self.limits.header_read_timeout).max_buf_size(MAX_HEADER_BUFFER);
        let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service).with_upgrades());
        let mut stopping = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                    break;
                }
                changed = self.stop.changed(), if !stopping => {
                    stopping = true;
                    if changed.is_ok() {
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
        }
        drop(self.done);
    }
}

/// A connection's socket, holding its slot among `max_connections` until it is dropped, which for a
/// WebSocket is when the WebSocket closes.
struct Counted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    open: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.dec();
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

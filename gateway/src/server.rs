//! The HTTP/1 accept loop, with the limits a server on the open internet needs.
//!
//! `axum::serve` sets no timer on hyper's connections, which turns hyper's header read timeout
//! off: a client that sends half a request header (or opens a connection and says nothing, or
//! keeps an idle keep-alive connection) holds its socket for ever, and enough of them use up the
//! file descriptors and stall a graceful shutdown, which waits for every connection. Here:
//!
//! - every connection has [`Limits::header_read_timeout`] to send a complete request header, from
//!   its start and again each time it goes idle after a response (hyper starts the same timer
//!   while a keep-alive connection waits for its next request), so a silent or idle connection is
//!   closed after it;
//! - at most [`Limits::connections_max`] connections are open: past it the loop stops accepting
//!   (the kernel's backlog holds new ones) until one closes;
//! - on shutdown the loop stops accepting, asks every connection to finish its request in flight
//!   and close, and returns after [`Limits::drain_timeout`] at the latest, leaving whatever is still
//!   open to be dropped with the runtime;
//! - each request carries the peer's address as `ConnectInfo<SocketAddr>` (per-address limits).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// The accept loop's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time a connection has to send a whole request header, from its start or from the end of
    /// its previous response.
    pub header_read_timeout: Duration,
    /// Connections open at once.
    pub connections_max: usize,
    /// How long a shutdown waits for open connections to finish.
    pub drain_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            connections_max: 16_384,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_RETRY_AFTER: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `shutdown` completes, then drains (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let open = Arc::new(Semaphore::new(limits.connections_max));
    let (closing, closed) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&open).acquire_owned() => {
                permit.expect("the semaphore is never closed")
            }
        };
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let app = app.clone();
                let closed = closed.clone();
                tokio::spawn(async move {
                    connection(stream, peer, app, limits, closed).await;
                    drop(permit);
                });
            }
            Err(error) => {
                tracing::warn!(%error, "accepting a connection failed; retrying");
                tokio::time::sleep(ACCEPT_RETRY_AFTER).await;
            }
        }
    }
    drop(listener);
    let _ = closing.send(true);
    let limit = u32::try_from(limits.connections_max).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(limits.drain_timeout, open.acquire_many(limit)).await;
    if drained.is_err() {
        tracing::warn!(
            open = limits.connections_max - open.available_permits(),
            "connections still open after the drain timeout; closing them"
        );
    }
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut closed: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(app.clone(), request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    let mut asked_to_close = *closed.borrow();
    if asked_to_close {
        connection.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
                return;
            }
            changed = closed.changed(), if !asked_to_close => {
                // A dropped sender is a shutdown too.
                let _ = changed;
                asked_to_close = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

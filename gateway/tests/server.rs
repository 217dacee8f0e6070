//! The accept loop against clients that are slow, idle or too many (`surge_gateway::server`).
//! Every wait is bounded generously; none depends on how fast the machine is: a limit under test
//! is short, and the assertion is that the effect happens at all within seconds.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use surge_gateway::server::{serve, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const REQUEST: &[u8] = b"GET /peer HTTP/1.1\r\nHost: test\r\n\r\n";
const HALF_A_HEADER: &[u8] = b"GET /peer HTTP/1.1\r\nHost: te";
/// Far more than any limit under test: reaching it means the server did not act.
const BOUND: Duration = Duration::from_secs(20);

struct Server {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(limits: Limits) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new().route(
        "/peer",
        get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move { peer.to_string() }),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(listener, app, limits, async move {
        let _ = stopped.await;
    }));
    Server { address, stop: Some(stop), done }
}

fn limits(header_read_timeout: Duration, connections_max: usize) -> Limits {
    Limits { header_read_timeout, connections_max, drain_timeout: Duration::from_millis(200) }
}

/// Reads until the server closes the connection; the bytes it sent before.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server kept the connection open; it sent {seen:?}");
    seen
}

/// Reads one whole response (headers and a body of `content-length`).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buffer = [0u8; 4096];
    let read = tokio::time::timeout(BOUND, async {
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed before a response: {seen:?}");
            seen.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&seen).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length: "))
                    .map_or(0, |value| value.trim().parse::<usize>().unwrap());
                if body.len() >= length {
                    return text;
                }
            }
        }
    })
    .await;
    read.expect("a response within the bound")
}

#[tokio::test]
async fn a_connection_that_sends_half_a_header_is_closed() {
    let server = start(limits(Duration::from_millis(200), 64)).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(HALF_A_HEADER).await.unwrap();
    read_to_close(&mut stream).await;
    // A connection that says nothing at all goes the same way.
    let mut silent = TcpStream::connect(server.address).await.unwrap();
    read_to_close(&mut silent).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_response() {
    let server = start(limits(Duration::from_millis(200), 64)).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(REQUEST).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The handler saw the client's own address.
    let local = stream.local_addr().unwrap().to_string();
    assert!(response.ends_with(&local), "{response} does not name {local}");
    // Kept alive, then closed once idle for the header timeout, with nothing more sent.
    let after = read_to_close(&mut stream).await;
    assert!(after.is_empty(), "{after:?}");
}

#[tokio::test]
async fn past_the_connection_cap_a_new_client_waits_until_one_closes() {
    let server = start(limits(Duration::from_secs(600), 2)).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream.write_all(HALF_A_HEADER).await.unwrap();
        held.push(stream);
    }
    // The kernel completes the handshake (backlog); the server does not take the connection.
    let mut waiting = TcpStream::connect(server.address).await.unwrap();
    waiting.write_all(REQUEST).await.unwrap();
    let mut buffer = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut buffer)).await;
    assert!(early.is_err(), "answered past the cap: {early:?}");
    // One of the held connections goes away: the waiting client is served.
    drop(held.pop());
    let response = read_response(&mut waiting).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[tokio::test]
async fn a_shutdown_is_not_stalled_by_a_client_that_never_finishes_its_header() {
    let mut server = start(limits(Duration::from_secs(600), 64)).await;
    let mut stream = TcpStream::connect(server.address).await.unwrap();
    stream.write_all(HALF_A_HEADER).await.unwrap();
    // Make sure the server has taken the connection before shutting down.
    let mut probe = TcpStream::connect(server.address).await.unwrap();
    probe.write_all(REQUEST).await.unwrap();
    read_response(&mut probe).await;
    server.stop.take().unwrap().send(()).unwrap();
    tokio::time::timeout(BOUND, &mut server.done)
        .await
        .expect("serve returned after its drain timeout")
        .unwrap();
}

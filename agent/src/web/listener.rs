//! The listening socket as axum sees it: each connection accepted, then (when the web
//! configuration in force says so) its TLS handshake done in a task of its own, so that a slow
//! or silent client holds up nobody else; only finished connections reach the router.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_openssl::SslStream;
use tokio_util::sync::CancellationToken;

use super::Web;

/// A client has this long to send its first bytes and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in flight at once; more wait to be accepted.
const HANDSHAKES: usize = 64;
/// The first byte of a TLS record carrying a handshake.
const TLS_HANDSHAKE: u8 = 0x16;
/// What Go's exporters answer to plain HTTP on a TLS port, so that curl and a browser say why.
const PLAIN_ON_TLS: &[u8] = b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\n\
Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

pub struct WebListener {
    rx: mpsc::Receiver<(Conn, SocketAddr)>,
    local: SocketAddr,
}

impl WebListener {
    /// Starts accepting on `tcp` until `shutdown`.
    pub fn start(tcp: TcpListener, web: Arc<Web>, shutdown: CancellationToken) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(HANDSHAKES);
        tokio::spawn(accept_loop(tcp, web, tx, shutdown));
        Ok(WebListener { rx, local })
    }
}

impl axum::serve::Listener for WebListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Conn, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept loop ended (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_loop(
    tcp: TcpListener,
    web: Arc<Web>,
    tx: mpsc::Sender<(Conn, SocketAddr)>,
    shutdown: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(HANDSHAKES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "http: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // A changed file is read before the connection it may concern.
        let active = web.refresh();
        let tx = tx.clone();
        let web = web.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let conn = match &active.acceptor {
                None => Some(Conn::Plain(stream)),
                Some(acceptor) => {
                    match tokio::time::timeout(
                        HANDSHAKE_TIMEOUT,
                        handshake(acceptor, &active.allowed_sans, stream),
                    )
                    .await
                    {
                        Ok(Ok(c)) => Some(c),
                        Ok(Err(reason)) => {
                            web.refused(reason);
                            None
                        }
                        Err(_) => {
                            web.refused("handshake_timeout");
                            None
                        }
                    }
                }
            };
            if let Some(conn) = conn {
                let _ = tx.send((conn, peer)).await;
            }
        });
    }
}

/// The TLS handshake, or why the connection was closed instead (a metric label).
async fn handshake(
    acceptor: &openssl::ssl::SslAcceptor,
    allowed_sans: &[String],
    mut stream: TcpStream,
) -> Result<Conn, &'static str> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1) => {}
        _ => return Err("closed"),
    }
    if first[0] != TLS_HANDSHAKE {
        if first[0].is_ascii_uppercase() {
            let _ = stream.write_all(PLAIN_ON_TLS).await;
            let _ = stream.shutdown().await;
            return Err("plain_http");
        }
        return Err("not_tls");
    }
    let ssl = openssl::ssl::Ssl::new(acceptor.context()).map_err(|_| "tls_handshake")?;
    let mut tls = SslStream::new(ssl, stream).map_err(|_| "tls_handshake")?;
    if let Err(e) = Pin::new(&mut tls).accept().await {
        tracing::debug!(error = %e, "http: TLS handshake failed");
        return Err("tls_handshake");
    }
    if !super::tls::san_allowed(tls.ssl(), allowed_sans) {
        tracing::warn!("http: a client certificate names none of client_allowed_sans");
        return Err("client_san");
    }
    Ok(Conn::Tls(Box::new(tls)))
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

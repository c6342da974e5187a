//! The HTTPS listener: TLS termination, one HTTP/1.1 connection task per client (so the
//! WebSocket upgrade works), security headers, and graceful shutdown. Routing lives in
//! [`crate::api`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::media::MediaHandle;
use crate::media::tcp::{FirstBytes, classify};
use crate::shutdown::Stopping;

/// Where a request came from and which local address it reached; handlers use the latter
/// as the address the browser can reach the appliance on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
}

const MAX_CONNECTIONS: usize = 10_000;
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new connection may take to send the bytes that say what it is. Browsers
/// open connections ahead of need and may leave them idle for some seconds.
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// More request headers than this, or more bytes of them, are refused (431) by the API
/// as typed JSON; the connection's own limit sits above, so that answer is the one given.
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Waits for the first bytes of a connection and says what it speaks.
async fn first_bytes(stream: &tokio::net::TcpStream) -> FirstBytes {
    let mut buf = [0u8; 4];
    let deadline = tokio::time::Instant::now() + FIRST_BYTES_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return FirstBytes::Other,
            Ok(Ok(n)) => n,
        };
        match classify(&buf[..n]) {
            FirstBytes::Undecided => {
                // Peeking returns at once while the same bytes are waiting; give the
                // rest of a split first packet a moment to arrive.
                if tokio::time::Instant::now() >= deadline {
                    return FirstBytes::Other;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            decided => return decided,
        }
    }
}

/// Accepts connections until the shutdown begins, then lets open requests finish.
/// Connections that open with ICE-TCP instead of TLS go to the media relay.
pub async fn serve(
    listener: TcpListener,
    media: MediaHandle,
    tls: Arc<ServerConfig>,
    router: Router,
    stopping: Stopping,
) {
    let acceptor = TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = stopping.wait() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopping.wait() => break,
        };
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        // Answers and WebSocket messages are small writes in a row (a pointer's moves, an
        // answer's records): with Nagle's algorithm each one after the first waits for the
        // peer's delayed ACK, up to 40 ms.
        let _ = stream.set_nodelay(true);
        let info = ConnInfo { peer, local };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let stopping = stopping.clone();
        let media = media.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match first_bytes(&stream).await {
                FirstBytes::Tls => {}
                FirstBytes::IceTcp => {
                    match stream.into_std() {
                        Ok(stream) => media.accept_tcp(stream, peer),
                        Err(e) => tracing::debug!(%peer, error = %e, "cannot hand over ICE-TCP"),
                    }
                    return;
                }
                FirstBytes::Undecided | FirstBytes::Other => {
                    tracing::debug!(%peer, "connection neither TLS nor ICE-TCP; closed");
                    media.tcp_rejected();
                    return;
                }
            }
            let tls =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                };
            let service =
                router.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(info);
                    request
                });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                // Above the API's own limit, so that its typed 431 is the answer.
                .max_headers(MAX_HEADERS * 2)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = stopping.wait() => {}
            }
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), connection).await;
        });
    }
    drop(listener);
    // Let open connections finish (each is told to shut down gracefully) so that nothing
    // still holds the appliance's state when the caller continues.
    let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(8), permits.acquire_many(all)).await;
}

/// Headers every response carries: a strict CSP for the embedded pages, HSTS (Mozilla's
/// two years), and no sniffing, framing or referrers.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
         form-action 'self'; object-src 'none'",
    );
    set(
        headers,
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=63072000",
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::REFERRER_POLICY, "no-referrer");
    set(
        headers,
        header::HeaderName::from_static("permissions-policy"),
        "camera=(self), microphone=(self), geolocation=()",
    );
    set(
        headers,
        header::HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

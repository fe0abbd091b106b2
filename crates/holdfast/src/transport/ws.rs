//! SIP over WebSocket (RFC 7118): the `sip` subprotocol, one SIP message per
//! WebSocket message, with the same guard and limits as the other transports.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use holdfast_sip::parse_datagram;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::config::Config;
use crate::guard::Admission;
use crate::metrics::IngressLimit;
use crate::shared::{Peer, Shared};
use crate::transport::stream::ConnPermit;

/// The underlying byte stream, noting when bytes of a message not yet complete first
/// arrived, so that a frame trickled in slowly is cut by the read timeout as on TCP.
struct TimedIo<S> {
    inner: S,
    epoch: Instant,
    /// Milliseconds after `epoch` (plus one) when unfinished bytes first arrived; 0
    /// when nothing is pending.
    pending: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for TimedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before && self.pending.load(Ordering::Relaxed) == 0 {
            let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.pending.store(ms.saturating_add(1), Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TimedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[allow(clippy::result_large_err)] // the callback signature is tungstenite's
fn negotiate(req: &Request, mut resp: Response) -> Result<Response, ErrorResponse> {
    let offers_sip = req
        .headers()
        .get_all("Sec-WebSocket-Protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("sip"));
    if !offers_sip {
        let mut err = ErrorResponse::new(Some("the sip subprotocol is required (RFC 7118)".into()));
        *err.status_mut() = StatusCode::BAD_REQUEST;
        return Err(err);
    }
    resp.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    Ok(resp)
}

pub async fn serve<S>(shared: Arc<Shared>, io: S, peer: Peer, _permit: ConnPermit)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let limits = &shared.config.limits;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_size))
        .max_frame_size(Some(limits.max_message_size))
        .max_write_buffer_size(
            limits
                .max_message_size
                .saturating_mul(limits.write_queue)
                .max(1 << 20),
        );
    let pending = Arc::new(AtomicU64::new(0));
    let opened = Instant::now();
    let io = TimedIo {
        inner: io,
        epoch: opened,
        pending: pending.clone(),
    };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(io, negotiate, Some(ws_config));
    let ws =
        match tokio::time::timeout(Config::ms(limits.tls_handshake_timeout_ms), handshake).await {
            Ok(Ok(ws)) => ws,
            _ => {
                shared.metrics.ingress_limit(IngressLimit::TlsHandshake);
                super::offence(&shared, peer.remote.ip(), "ws_handshake");
                return;
            }
        };
    let (sink, mut stream) = ws.split();
    let sink = Arc::new(tokio::sync::Mutex::new(sink));
    let (id, close, writer) = super::stream::outbound(&shared, &peer, move |batch: Vec<Bytes>| {
        let sink = sink.clone();
        Box::pin(async move {
            let mut s = sink.lock().await;
            let send_all = async {
                for bytes in batch {
                    let msg = match std::str::from_utf8(&bytes) {
                        Ok(text) => WsMessage::text(text),
                        Err(_) => WsMessage::binary(bytes),
                    };
                    s.feed(msg).await?;
                }
                s.flush().await
            };
            matches!(
                tokio::time::timeout(Duration::from_secs(10), send_all).await,
                Ok(Ok(()))
            )
        })
    });
    let peer = Peer {
        conn: Some(id),
        ..peer
    };
    let mut shutdown = shared.shutdown.clone();
    // The handshake's own bytes are not a message.
    pending.store(0, Ordering::Relaxed);
    let mut heard = false;
    let mut last_activity = Instant::now();
    loop {
        let started = pending.load(Ordering::Relaxed);
        let (deadline, expiry) = if started != 0 {
            (
                opened
                    + Duration::from_millis(started.saturating_sub(1))
                    + Config::ms(limits.message_read_timeout_ms),
                Some(IngressLimit::ReadTimeout),
            )
        } else if heard {
            (last_activity + Config::ms(limits.idle_timeout_ms), None)
        } else {
            (
                opened + Config::ms(limits.first_message_timeout_ms),
                Some(IngressLimit::FirstMessageTimeout),
            )
        };
        let next = tokio::select! {
            r = timeout_at(deadline, stream.next()) => r,
            // Re-evaluate the deadline once a message starts arriving.
            _ = tokio::time::sleep(Duration::from_millis(250)), if started == 0 => continue,
            _ = close.notified() => break,
            _ = shutdown.changed() => break,
        };
        let data = match next {
            Err(_) => {
                if let Some(limit) = expiry {
                    shared.metrics.ingress_limit(limit);
                    super::offence(&shared, peer.remote.ip(), limit.as_str());
                }
                break;
            }
            Ok(None) | Ok(Some(Err(_))) => break,
            Ok(Some(Ok(WsMessage::Text(t)))) => Bytes::from(t),
            Ok(Some(Ok(WsMessage::Binary(b)))) => b,
            Ok(Some(Ok(WsMessage::Close(_)))) => break,
            Ok(Some(Ok(_))) => {
                pending.store(0, Ordering::Relaxed);
                last_activity = Instant::now();
                continue;
            }
        };
        pending.store(0, Ordering::Relaxed);
        last_activity = Instant::now();
        heard = true;
        if super::is_keepalive(&data) {
            continue;
        }
        match super::admit(&shared, &peer) {
            Admission::Allow => {}
            Admission::RateLimited => continue,
            Admission::Banned => break,
        }
        let ok = super::guarded(&shared, &peer, || {
            match parse_datagram(data.clone(), &shared.wire) {
                Ok(msg) => {
                    super::fault_injection(&shared, &msg);
                    super::deliver(&shared, peer, msg);
                }
                Err(e) => super::parse_failed(&shared, &peer, &data, &e),
            }
        });
        if ok.is_none() {
            break;
        }
    }
    shared.unregister_conn(id);
    writer.abort();
}

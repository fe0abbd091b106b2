//! TLS (rustls): server configuration from PEM files, and a bounded handshake.

use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, TlsConfig};
use crate::metrics::IngressLimit;
use crate::shared::{Peer, Shared};

pub fn acceptor(cfg: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
    let cert_path = cfg
        .certificate
        .as_deref()
        .context("[tls] certificate is not set")?;
    let key_path = cfg
        .private_key
        .as_deref()
        .context("[tls] private_key is not set")?;
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut BufReader::new(file)).collect();
    let certs = certs.with_context(|| format!("{}: not a PEM certificate", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate found",
        path.display()
    );
    Ok(certs)
}

fn read_key(path: &Path) -> anyhow::Result<rustls::pki_types::PrivateKeyDer<'static>> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    rustls_pemfile::private_key(&mut BufReader::new(file))
        .with_context(|| format!("{}: not a PEM private key", path.display()))?
        .with_context(|| format!("{}: no private key found", path.display()))
}

/// Runs the handshake within the configured time; a failure or timeout is an offence.
pub async fn handshake(
    shared: &Shared,
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: &Peer,
) -> Option<TlsStream<TcpStream>> {
    let limit = Config::ms(shared.config.limits.tls_handshake_timeout_ms);
    let mut shutdown = shared.shutdown.clone();
    let result = tokio::select! {
        r = tokio::time::timeout(limit, acceptor.accept(tcp)) => r,
        _ = shutdown.changed() => return None,
    };
    match result {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            shared.metrics.ingress_limit(IngressLimit::TlsHandshake);
            super::offence(shared, peer.remote.ip(), "tls_handshake");
            if shared.logs.allow("tls") {
                tracing::info!(remote = %peer.remote, error = %e, "TLS handshake failed");
            }
            None
        }
        Err(_) => {
            shared.metrics.ingress_limit(IngressLimit::TlsHandshake);
            super::offence(shared, peer.remote.ip(), "tls_handshake");
            None
        }
    }
}

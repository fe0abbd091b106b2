//! Starting and stopping a core: process hardening, listeners, the core task, the
//! admin listener, and a bounded drain on SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::{Config, ListenTransport};
use crate::shared::Shared;
use crate::transport;

/// Disables core dumps (unless configured) and raises the open-file soft limit to the
/// hard limit. Returns the open-file limit in force.
pub fn harden_process(config: &Config) -> anyhow::Result<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    if !config.process.core_dumps {
        setrlimit(
            Resource::Core,
            Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        )
        .context("disabling core dumps")?;
    }
    let files = getrlimit(Resource::Nofile);
    if let Some(max) = files.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// Adds each `user@domain:password` (and its domain) when missing, or resets its
/// password: what a first start needs so that a phone can register at once.
async fn ensure_users(store: &holdfast_store::SqliteStore, users: &[String]) -> anyhow::Result<()> {
    use holdfast_store::{Directory, StoreError};
    for spec in users {
        let (aor, password) = spec
            .split_once(':')
            .context("--user takes user@domain:password")?;
        let (user, domain) =
            crate::admin::split_aor(aor).context("--user takes user@domain:password")?;
        match store.add_domain(domain).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        match store.add_user(user, domain, password).await {
            Ok(_) => tracing::info!(aor, "user added"),
            Err(StoreError::AlreadyExists { .. }) => {
                store.set_password(user, domain, password).await?
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub async fn run(
    mut config: Config,
    data_dir: std::path::PathBuf,
    users: Vec<String>,
) -> anyhow::Result<()> {
    let files = harden_process(&config)?;
    // Leave room under the open-file cap for listeners, the log and the store.
    let room = usize::try_from(files.saturating_sub(256)).unwrap_or(usize::MAX);
    if config.limits.max_connections > room {
        tracing::warn!(
            configured = config.limits.max_connections,
            room,
            "max_connections lowered to fit the open-file limit"
        );
        config.limits.max_connections = room.max(1);
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let shards = config.sip.shards();
    let (core_tx, core_rx): (Vec<_>, Vec<_>) = (0..shards).map(|_| mpsc::channel(16_384)).unzip();
    let tls = if config
        .listeners()
        .iter()
        .any(|l| matches!(l.transport, ListenTransport::Tls | ListenTransport::Wss))
    {
        Some(transport::tls::acceptor(&config.tls)?)
    } else {
        None
    };
    let shared = Arc::new(Shared::new(config.clone(), core_tx, shutdown_rx));
    // Every binding is back in memory before the first listener opens.
    let store = Arc::new(
        holdfast_store::SqliteStore::open(&data_dir)
            .with_context(|| format!("opening the data directory {}", data_dir.display()))?,
    );
    ensure_users(&store, &users).await?;
    let (reply_tx, reply_rx): (Vec<_>, Vec<_>) = (0..shards).map(|_| mpsc::channel(65_536)).unzip();
    let replies = crate::registrar::Replies::new(reply_tx);
    let registrar = crate::registrar::Registrar::start(&shared, store.clone(), replies).await?;
    let _ = shared.registrar.set(registrar.clone());
    let calls = crate::calls::Calls::start(
        store.clone(),
        config.registrar.node_name.clone(),
        shared.metrics.clone(),
        shards,
    )
    .await?;
    let domains = Arc::new(crate::proxy::Domains::new(store.clone()));
    let cores: Vec<_> = core_rx
        .into_iter()
        .zip(reply_rx)
        .zip(calls)
        .enumerate()
        .map(|(shard, ((rx, replies), calls))| {
            tokio::spawn(crate::core::run(
                shard,
                shared.clone(),
                rx,
                registrar.clone(),
                replies,
                domains.clone(),
                calls,
            ))
        })
        .collect();
    tracing::info!(shards, "core shards running");
    let mut tasks = Vec::new();
    for l in config.listeners() {
        match l.transport {
            ListenTransport::Udp => {
                let sock = Arc::new(tokio::net::UdpSocket::from_std(
                    transport::udp::bind(l.addr)
                        .with_context(|| format!("binding udp:{}", l.addr))?,
                )?);
                let local = sock.local_addr()?;
                shared.add_local(local);
                shared
                    .udp
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(local, sock.clone());
                tracing::info!(%local, "listening on udp");
                tasks.push(tokio::spawn(transport::udp::serve(shared.clone(), sock)));
            }
            t => {
                let listener = TcpListener::bind(l.addr)
                    .await
                    .with_context(|| format!("binding {}:{}", t.as_str(), l.addr))?;
                let local = listener.local_addr()?;
                shared.add_local(local);
                tracing::info!(%local, transport = t.as_str(), "listening");
                tasks.push(tokio::spawn(transport::stream::accept_loop(
                    shared.clone(),
                    listener,
                    t,
                    tls.clone(),
                )));
            }
        }
    }
    if !config.admin.listen.is_empty() {
        let listener = TcpListener::bind(&config.admin.listen)
            .await
            .with_context(|| format!("binding admin listener {}", config.admin.listen))?;
        tracing::info!(local = %listener.local_addr()?, "admin listening");
        let app = crate::admin::router(shared.clone(), store.clone());
        let mut stop = shared.shutdown.clone();
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.changed().await;
                })
                .await;
        }));
    }
    tracing::info!("holdfast running");

    wait_for_signal().await;
    tracing::info!("stopping: no new connections; draining");
    let _ = shutdown_tx.send(true);
    // Transactions in flight get a bounded time to finish.
    let grace = Duration::from_secs(config.sip.shutdown_grace_secs);
    let _ = tokio::time::timeout(grace, async {
        for t in tasks {
            let _ = t.await;
        }
    })
    .await;
    shared.close_all_connections();
    for core in cores {
        core.abort();
    }
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

//! holdfast: a SIP core for hosted voice.
//!
//! The binary is the I/O shell around the sans-IO crates: configuration, the tokio
//! transports (UDP, TCP, TLS, WS, WSS) with their ingress limits and bans, the admin
//! HTTP listener, metrics and the command line. Peer input never reaches code that
//! can take the process down: parsing and handling run under a panic guard per
//! connection, and core dumps are off by default.

// A binary crate: `pub` marks each module's interface to the others.
#![allow(unreachable_pub)]

/// mimalloc instead of glibc's malloc: the message path allocates and frees many small
/// objects across threads (parsed headers, responses, channel nodes), where glibc spent
/// a fifth of the CPU of a REGISTER load in `_int_malloc`, `malloc_consolidate` and
/// arena growth (`docs/performance.md`). Built without transparent huge pages
/// (`no_thp`): with them every reuse of memory mimalloc had purged faulted in and
/// zeroed a whole 2 MiB page, a tenth of the CPU of a UDP REGISTER load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod admin;
mod calls;
mod cdr;
mod challenge;
mod config;
mod core;
mod guard;
mod log;
mod metrics;
mod proxy;
mod registrar;
mod server;
mod shared;
mod transport;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(name = "holdfast", version, about = "A SIP core for hosted voice")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the core. Without --config it starts on the embedded defaults (UDP and TCP
    /// on port 5060, admin on 127.0.0.1:9060).
    Run {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the core keeps its data.
        #[arg(long, default_value = "holdfast-data")]
        data_dir: PathBuf,
        /// Make sure this user exists before starting, as `user@domain:password`
        /// (its domain is added when missing; an existing user gets this password).
        /// Repeatable.
        #[arg(long = "user", value_name = "USER@DOMAIN:PASSWORD")]
        users: Vec<String>,
    },
    /// Check a configuration file and print every problem found.
    CheckConfig { file: PathBuf },
    /// Manage users (stored as HA1 digests, never as passwords).
    User {
        #[command(subcommand)]
        action: UserAction,
        #[arg(long, default_value = "holdfast-data", global = true)]
        data_dir: PathBuf,
    },
    /// Manage the domains this core serves.
    Domain {
        #[command(subcommand)]
        action: DomainAction,
        #[arg(long, default_value = "holdfast-data", global = true)]
        data_dir: PathBuf,
    },
    /// List the current registrations.
    Registrations {
        #[arg(long, default_value = "holdfast-data")]
        data_dir: PathBuf,
    },
    /// List call records, newest first, one page at a time.
    Cdrs {
        #[arg(long, default_value = "holdfast-data")]
        data_dir: PathBuf,
        #[command(flatten)]
        query: cdr::CdrQuery,
        /// Print the page as JSON, as the admin API answers it.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Add a user: `user add alice@example.com --password PW`.
    Add {
        aor: String,
        #[arg(long)]
        password: String,
    },
    /// List users, optionally of one domain.
    List { domain: Option<String> },
    /// Change a user's password.
    Passwd {
        aor: String,
        #[arg(long)]
        password: String,
    },
    /// Delete a user.
    Del { aor: String },
}

#[derive(Debug, Subcommand)]
enum DomainAction {
    /// Add a domain.
    Add { name: String },
    /// List domains.
    List,
    /// Delete a domain (with --cascade, its users too).
    Del {
        name: String,
        #[arg(long)]
        cascade: bool,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    Config::load(path).map_err(|problems| {
        #[allow(clippy::print_stderr)] // operator-facing CLI output
        for p in &problems {
            eprintln!("{}: {p}", path.display());
        }
        ExitCode::from(2)
    })
}

/// Replaces the default panic output (a line, or a whole backtrace, on stderr per
/// panic) with one rate-limited log line: a peer that can trigger a caught panic must
/// not be able to grow stderr or the log.
fn install_panic_hook() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    std::panic::set_hook(Box::new(|info| {
        let now = registrar::unix_now();
        let last = LAST.load(Ordering::Relaxed);
        if now >= last.saturating_add(10)
            && LAST
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            tracing::error!(%location, suppressed, "panic: {}", panic_message(info));
        } else {
            SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        }
    }));
}

fn panic_message(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match load(Some(&file)) {
            Ok(_) => {
                #[allow(clippy::print_stdout)] // operator-facing CLI output
                {
                    println!("{}: ok", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::User { action, data_dir } => directory_command(&data_dir, |store| {
            Box::pin(async move { user_command(store, action).await })
        }),
        Command::Domain { action, data_dir } => directory_command(&data_dir, |store| {
            Box::pin(async move { domain_command(store, action).await })
        }),
        Command::Registrations { data_dir } => directory_command(&data_dir, |store| {
            Box::pin(async move {
                use holdfast_store::Location;
                let now = i64::try_from(registrar::unix_now()).unwrap_or(i64::MAX);
                let list = store.load_unexpired(now).await?;
                let rows: Vec<_> = list.iter().map(|b| admin::binding_json(b, now)).collect();
                Ok(serde_json::to_string_pretty(&rows)?)
            })
        }),
        Command::Cdrs {
            data_dir,
            query,
            json,
        } => cdrs_command(&data_dir, query, json),
        Command::Run {
            config,
            data_dir,
            users,
        } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            install_panic_hook();
            if let Err(e) = log::init(&config.log) {
                #[allow(clippy::print_stderr)] // logging is not up yet
                {
                    eprintln!("holdfast: cannot start logging: {e:#}");
                }
                return ExitCode::FAILURE;
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the runtime");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(server::run(config, data_dir, users)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "holdfast stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

type CommandFuture = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<String>>>>;

/// Runs a directory command against the data directory of a stopped or running core
/// (SQLite in WAL mode takes writers from several processes).
fn directory_command(
    data_dir: &std::path::Path,
    f: impl FnOnce(std::sync::Arc<holdfast_store::SqliteStore>) -> CommandFuture,
) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| {
            rt.block_on(async {
                let store = std::sync::Arc::new(holdfast_store::SqliteStore::open(data_dir)?);
                f(store).await
            })
        });
    #[allow(clippy::print_stdout, clippy::print_stderr)] // operator-facing CLI output
    match result {
        Ok(out) => {
            if !out.is_empty() {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("holdfast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `holdfast cdrs`: the flags are checked before the data directory is opened, and a
/// bad one exits 2, like a usage error.
fn cdrs_command(data_dir: &std::path::Path, query: cdr::CdrQuery, json: bool) -> ExitCode {
    if let Err(e) = query.filter() {
        #[allow(clippy::print_stderr)] // operator-facing CLI output
        {
            eprintln!("holdfast cdrs: invalid --{e}");
        }
        return ExitCode::from(2);
    }
    directory_command(data_dir, |store| {
        Box::pin(async move {
            let page = match query.run(store.as_ref()).await {
                Ok(page) => page,
                Err(cdr::QueryError::Param(e)) => anyhow::bail!("invalid --{e}"),
                Err(cdr::QueryError::Store(e)) => return Err(e.into()),
            };
            Ok(if json {
                serde_json::to_string_pretty(&cdr::page_json(&page))?
            } else {
                cdr::table(&page)
            })
        })
    })
}

async fn user_command(
    store: std::sync::Arc<holdfast_store::SqliteStore>,
    action: UserAction,
) -> anyhow::Result<String> {
    use holdfast_store::Directory;
    let split = |aor: &str| -> anyhow::Result<(String, String)> {
        admin::split_aor(aor)
            .map(|(u, d)| (u.to_string(), d.to_string()))
            .ok_or_else(|| anyhow::anyhow!("expected user@domain, got {aor:?}"))
    };
    Ok(match action {
        UserAction::Add { aor, password } => {
            let (u, d) = split(&aor)?;
            let user = store.add_user(&u, &d, &password).await?;
            format!("added {}@{}", user.username, user.domain)
        }
        UserAction::List { domain } => store
            .list_users(domain.as_deref())
            .await?
            .iter()
            .map(|u| format!("{}@{}", u.username, u.domain))
            .collect::<Vec<_>>()
            .join("\n"),
        UserAction::Passwd { aor, password } => {
            let (u, d) = split(&aor)?;
            store.set_password(&u, &d, &password).await?;
            format!("password of {aor} changed")
        }
        UserAction::Del { aor } => {
            let (u, d) = split(&aor)?;
            store.delete_user(&u, &d).await?;
            format!("deleted {aor}")
        }
    })
}

async fn domain_command(
    store: std::sync::Arc<holdfast_store::SqliteStore>,
    action: DomainAction,
) -> anyhow::Result<String> {
    use holdfast_store::Directory;
    Ok(match action {
        DomainAction::Add { name } => format!("added {}", store.add_domain(&name).await?.name),
        DomainAction::List => store
            .list_domains()
            .await?
            .iter()
            .map(|d| d.name.clone())
            .collect::<Vec<_>>()
            .join("\n"),
        DomainAction::Del { name, cascade } => {
            store.delete_domain(&name, cascade).await?;
            format!("deleted {name}")
        }
    })
}

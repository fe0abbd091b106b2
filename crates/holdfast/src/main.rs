//! holdfast: a SIP core for hosted voice.
//!
//! The binary is the I/O shell around the sans-IO crates: configuration, the tokio
//! transports (UDP, TCP, TLS, WS, WSS) with their ingress limits and bans, the admin
//! HTTP listener, metrics and the command line. Peer input never reaches code that
//! can take the process down: parsing and handling run under a panic guard per
//! connection, and core dumps are off by default.

// A binary crate: `pub` marks each module's interface to the others.
#![allow(unreachable_pub)]

mod admin;
mod config;
mod core;
mod guard;
mod log;
mod metrics;
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
    },
    /// Check a configuration file and print every problem found.
    CheckConfig { file: PathBuf },
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
        Command::Run {
            config,
            data_dir: _,
        } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
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
            match runtime.block_on(server::run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "holdfast stopped");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

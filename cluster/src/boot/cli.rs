//! The command line every binary shares: `config check FILE`, `config print [FILE]`, and how
//! a start ends. An error an operator can fix (a wrong key, a missing file, a port in use) is
//! printed once on stderr, as `error: ` and its message, with no backtrace whatever
//! `RUST_BACKTRACE` says, and the process exits with a code from [`exit`]. A bug still panics.
//!
//! A binary's `main` is a few lines:
//!
//! ```ignore
//! #[derive(clap::Parser)]
//! #[command(version = starling_buildinfo::version(), after_help = cli::EXIT_CODES)]
//! struct Args {
//!     #[arg(long, short, env = "STARLING_COMET_CONFIG")]
//!     config: Option<PathBuf>,
//!     #[command(subcommand)]
//!     command: Option<cli::Command>,
//! }
//!
//! fn main() -> ExitCode {
//!     let args: Args = cli::parse_args();
//!     cli::main(args.config.as_deref(), args.command, |config: NodeConfig| {
//!         boot::init_logging(&config.log.filter);
//!         node::run(config)
//!     })
//! }
//! ```

use super::{ConfigFile, load};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit codes, from BSD's sysexits.h (`man 3 sysexits`) so a supervisor can tell a
/// configuration to fix from a failure worth a restart (systemd:
/// `RestartPreventExitStatus=64 78`).
pub mod exit {
    /// Stopped cleanly (after SIGTERM or SIGINT), or a `config` command succeeded.
    pub const OK: u8 = 0;
    /// A failure at start or while running that is not the configuration's: a port already
    /// in use (the message names the address), a runtime that could not start, a store that
    /// could not open. Worth a retry.
    pub const FAILURE: u8 = 1;
    /// EX_USAGE: the command line is wrong (unknown flag or subcommand, missing argument).
    pub const USAGE: u8 = 64;
    /// EX_CONFIG: the configuration is wrong: its file is missing, unreadable or not TOML,
    /// a key is unknown or of the wrong type, `validate` refused a value, or a file it names
    /// (a TLS certificate or key) is missing or malformed.
    pub const CONFIG: u8 = 78;
}

/// The exit codes as `--help` lists them (`#[command(after_help = cli::EXIT_CODES)]`).
pub const EXIT_CODES: &str = "Exit codes: 0 stopped cleanly or `config` succeeded; 1 a failure \
    that is not the configuration's (a port in use, a dependency unreachable); 64 usage; \
    78 configuration (file missing, unreadable or invalid; TLS files missing or malformed).";

/// Subcommands every binary takes; without one it serves.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The configuration file: check it, or print it with every default.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Parse and validate FILE (and the files it names): prints `ok: FILE` and exits 0, or
    /// the error and exits 78.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Print the effective configuration as TOML, every default filled in: of FILE, else of
    /// `--config`, else the defaults. The output passes `config check`.
    Print {
        /// The TOML file to print (default: `--config`'s, else none).
        file: Option<PathBuf>,
    },
}

/// Parses the command line; a usage error is printed with clap's help and exits 64
/// ([`exit::USAGE`]) rather than clap's 2; `--help` and `--version` print and exit 0.
pub fn parse_args<P: clap::Parser>() -> P {
    P::try_parse().unwrap_or_else(|e| {
        // Printing to a closed pipe is not worth a panic.
        let _ = e.print();
        let code = if e.use_stderr() {
            exit::USAGE
        } else {
            exit::OK
        };
        std::process::exit(code.into())
    })
}

/// A binary's whole life: runs `command` if one was given, else loads the file at `config`
/// (every default without one) and calls `serve` with it until it returns. Prints what went
/// wrong once and returns the exit code ([`exit`]): [`exit::CONFIG`] when the file does not
/// load, [`exit::FAILURE`] when `serve` fails. `serve` initialises logging itself (the filter
/// is in the file).
pub fn main<T, E>(
    config: Option<&Path>,
    command: Option<Command>,
    serve: impl FnOnce(T) -> Result<(), E>,
) -> ExitCode
where
    T: ConfigFile,
    E: std::fmt::Display,
{
    let code = match command {
        Some(Command::Config(c)) => config_command::<T>(c, config),
        None => match load::<T>(config) {
            Err(e) => fail(exit::CONFIG, &e),
            Ok(config) => match serve(config) {
                Ok(()) => exit::OK,
                Err(e) => fail(exit::FAILURE, &e),
            },
        },
    };
    ExitCode::from(code)
}

/// Prints `error: {e}` once on stderr and returns `code`.
fn fail(code: u8, e: &dyn std::fmt::Display) -> u8 {
    eprintln!("error: {e}");
    code
}

fn config_command<T: ConfigFile>(command: ConfigCommand, default: Option<&Path>) -> u8 {
    match command {
        ConfigCommand::Check { file } => match load::<T>(Some(&file)) {
            Ok(_) => {
                println!("ok: {}", file.display());
                exit::OK
            }
            Err(e) => fail(exit::CONFIG, &e),
        },
        ConfigCommand::Print { file } => {
            let path = file.as_deref().or(default);
            match load::<T>(path).map(|c| print(&c, path)) {
                Ok(Ok(text)) => {
                    print!("{text}");
                    exit::OK
                }
                Ok(Err(e)) => fail(exit::FAILURE, &e),
                Err(e) => fail(exit::CONFIG, &e),
            }
        }
    }
}

/// `config` as TOML, under a comment saying where it came from.
pub fn print<T: ConfigFile>(config: &T, from: Option<&Path>) -> Result<String, toml::ser::Error> {
    let from = match from {
        Some(p) => p.display().to_string(),
        None => "no file".into(),
    };
    let body = toml::to_string(config)?;
    Ok(format!(
        "# The effective configuration ({from}), every default filled in.\n\n{body}"
    ))
}

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
    /// `--config`, else the defaults. Secrets (tokens, signing secrets, passwords in URLs)
    /// are printed as `<redacted>` so the output can be pasted into a ticket; with
    /// `--show-secrets` it is the exact configuration and passes `config check`.
    Print {
        /// The TOML file to print (default: `--config`'s, else none).
        file: Option<PathBuf>,
        /// Print secrets as they are instead of `<redacted>`.
        #[arg(long)]
        show_secrets: bool,
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
        ConfigCommand::Print { file, show_secrets } => {
            let path = file.as_deref().or(default);
            match load::<T>(path).map(|c| print(&c, path, show_secrets)) {
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

/// `config` as TOML, under a comment saying where it came from; unless `show_secrets`, the
/// values of [`SECRET_KEYS`] and the passwords of URLs are replaced by `<redacted>`.
pub fn print<T: ConfigFile>(
    config: &T,
    from: Option<&Path>,
    show_secrets: bool,
) -> Result<String, toml::ser::Error> {
    let from = match from {
        Some(p) => p.display().to_string(),
        None => "no file".into(),
    };
    let mut table = toml::Table::try_from(config)?;
    let redacted = if show_secrets { 0 } else { redact(&mut table) };
    let body = toml::to_string(&table)?;
    let note = if redacted > 0 {
        " Secrets are <redacted>: --show-secrets prints them."
    } else {
        ""
    };
    Ok(format!(
        "# The effective configuration ({from}), every default filled in.{note}\n\n{body}"
    ))
}

/// Keys whose non-empty string values are secrets, whatever table holds them.
pub const SECRET_KEYS: &[&str] = &["token_secret", "admin_token", "push_token", "password"];

const REDACTED: &str = "<redacted>";

/// Replaces secrets in place: the values of [`SECRET_KEYS`], and the password of any string
/// that parses as a URL with one (`postgres://user:pw@host/db`, `redis://:pw@host`). Returns
/// how many values it replaced.
fn redact(table: &mut toml::Table) -> usize {
    table
        .iter_mut()
        .map(|(key, value)| redact_value(key, value))
        .sum()
}

fn redact_value(key: &str, value: &mut toml::Value) -> usize {
    match value {
        toml::Value::String(s) if SECRET_KEYS.contains(&key) && !s.is_empty() => {
            *s = REDACTED.into();
            1
        }
        toml::Value::String(s) => match url::Url::parse(s) {
            Ok(mut url) if url.password().is_some() => {
                if url.set_password(Some(REDACTED)).is_err() {
                    return 0;
                }
                *s = url.to_string();
                1
            }
            _ => 0,
        },
        toml::Value::Table(t) => redact(t),
        toml::Value::Array(items) => items.iter_mut().map(|v| redact_value(key, v)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[derive(Debug, Default, serde::Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct File {
        redis: Redis,
        im: Im,
    }

    #[derive(Debug, Default, serde::Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct Im {
        token_secret: String,
        admin_token: String,
        postgres_url: String,
        store_dir: String,
    }

    #[derive(Debug, Default, serde::Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct Redis {
        url: String,
    }

    impl ConfigFile for File {}

    fn file() -> File {
        File {
            im: Im {
                token_secret: "s3cret-signing-key".into(),
                admin_token: "admin-pw".into(),
                postgres_url: "postgres://starling:pg-pw@10.0.0.5:5432/im".into(),
                store_dir: "data/im".into(),
            },
            redis: Redis {
                url: "redis://:redis-pw@10.0.0.6:6379".into(),
            },
        }
    }

    #[test]
    fn print_redacts_secrets_unless_asked_and_keeps_the_rest() {
        let text = print(&file(), None, false).unwrap();
        for secret in ["s3cret-signing-key", "admin-pw", "pg-pw", "redis-pw"] {
            assert!(!text.contains(secret), "{secret} printed:\n{text}");
        }
        assert!(text.contains("token_secret = \"<redacted>\""), "{text}");
        assert!(
            text.contains("postgres://starling:%3Credacted%3E@10.0.0.5:5432/im"),
            "{text}"
        );
        assert!(text.contains("store_dir = \"data/im\""), "{text}");
        // Struct order is kept (the tables as the conf files document them).
        assert!(text.find("[redis]") < text.find("[im]"), "{text}");

        let exact = print(&file(), None, true).unwrap();
        let back: File = toml::from_str(&exact).unwrap();
        assert_eq!(back.im.token_secret, "s3cret-signing-key");
        assert_eq!(back.redis.url, "redis://:redis-pw@10.0.0.6:6379");
    }

    #[test]
    fn empty_secrets_stay_empty_so_the_defaults_print_checks() {
        let text = print(&File::default(), None, false).unwrap();
        assert!(!text.contains("<redacted>"), "{text}");
        let _: File = toml::from_str(&text).unwrap();
    }
}

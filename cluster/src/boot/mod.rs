//! How a binary starts (the tier binaries and the all-in-one alike): its command line, its
//! TOML file (every key defaulted, unknown keys named, values checked) and its logs.
//!
//! # Layout
//! - this file: [`ConfigFile`], [`load`] and [`parse`], their errors, logging, signals.
//! - [`cli`]: the shared command line (`config check`, `config print`, `--version`), how a
//!   failure is printed and the exit codes ([`cli::exit`]).

pub mod cli;

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

/// What a binary's TOML file parses into. Every key has a default and unknown keys are
/// refused (serde's `default` and `deny_unknown_fields`); `validate` checks what the types
/// cannot say; `Serialize` prints the effective file (`config print`).
pub trait ConfigFile: DeserializeOwned + Serialize + Default {
    /// Most files have nothing more to check.
    fn validate(&self) -> Result<(), Invalid> {
        Ok(())
    }

    /// Reads and checks the files the configuration names (a TLS certificate and key), as
    /// the start would, so a missing or malformed one is a configuration error found by
    /// `config check` and before anything binds. Most files name none.
    fn check_files(&self) -> Result<(), Invalid> {
        Ok(())
    }
}

/// Why parsed values are refused (the message names the key).
pub type Invalid = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Error)]
pub enum ConfigError {
    /// toml's message shows the line and column, the line itself, what was found and what
    /// was expected (for an unknown key, every known one); `key` is the dotted path of the
    /// key it happened at (`comet.tcp.nodelai`; empty when the text is not TOML at all).
    #[error("{}{}", at_key(key), source.to_string().trim_end())]
    Toml {
        key: String,
        /// Boxed: toml's error is large and this travels in every `Result` of a load.
        source: Box<toml::de::Error>,
    },
    #[error(transparent)]
    Invalid(Invalid),
}

fn at_key(key: &str) -> String {
    match key {
        "" | "." | "?" => String::new(),
        t => format!("key `{t}`: "),
    }
}

/// Everything that stops a file from loading; the message starts with the file's path.
#[derive(Debug, Error)]
pub enum BootError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse { path: String, source: ConfigError },
    /// A file the configuration names ([`ConfigFile::check_files`]).
    #[error("{path}: {source}")]
    Files { path: String, source: Invalid },
}

/// Parses and checks a TOML document.
pub fn parse<T: ConfigFile>(text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|source| ConfigError::Toml {
        key: String::new(),
        source: Box::new(source),
    })?;
    let config: T = serde_path_to_error::deserialize(de).map_err(|e| ConfigError::Toml {
        key: e.path().to_string(),
        source: Box::new(e.into_inner()),
    })?;
    config.validate().map_err(ConfigError::Invalid)?;
    Ok(config)
}

/// Parses the file at `path` and checks the files it names ([`ConfigFile::check_files`]),
/// or takes every default when there is none.
pub fn load<T: ConfigFile>(path: Option<&Path>) -> Result<T, BootError> {
    let Some(path) = path else {
        return Ok(T::default());
    };
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| BootError::Read {
        path: shown.clone(),
        source,
    })?;
    let config: T = parse(&text).map_err(|source| BootError::Parse {
        path: shown.clone(),
        source,
    })?;
    config.check_files().map_err(|source| BootError::Files {
        path: shown,
        source,
    })?;
    Ok(config)
}

/// Logs to stdout with `filter` (`RUST_LOG` overrides it); colour only on a terminal, so
/// journald and log files get plain text.
pub fn init_logging(filter: &str) {
    let from_env = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => match tracing_subscriber::EnvFilter::builder().parse(&v) {
            Ok(f) => Some(f),
            Err(e) => {
                // Before logging exists: said once on stderr, and the configured filter used.
                eprintln!("RUST_LOG ignored: not a tracing filter ({e}): {v:?}");
                None
            }
        },
        _ => None,
    };
    let filter =
        from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new(with_quiet_stores(filter)));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .init();
}

/// The embedded IM store (fjall, lsm-tree) logs every flush and compaction at INFO through
/// `log`: kept to warnings unless the filter names them.
fn with_quiet_stores(filter: &str) -> String {
    let mut f = filter.to_string();
    for target in ["fjall", "lsm_tree"] {
        if !f.contains(target) {
            f.push_str(&format!(",{target}=warn"));
        }
    }
    f
}

/// The `[log]` table.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Log {
    /// A tracing filter (`info`, `starling_comet=debug,info`); `RUST_LOG` overrides it. One
    /// that does not parse is a configuration error (`config check` finds it), not a filter
    /// silently dropped at start.
    #[serde(deserialize_with = "tracing_filter")]
    pub filter: String,
}

/// A `[log] filter` that parses as tracing-subscriber's `EnvFilter` directives.
fn tracing_filter<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = <String as serde::Deserialize>::deserialize(d)?;
    tracing_subscriber::EnvFilter::builder()
        .parse(&s)
        .map_err(|e| serde::de::Error::custom(format!("not a tracing filter ({e}): {s:?}")))?;
    Ok(s)
}

impl Default for Log {
    fn default() -> Self {
        Log {
            filter: "info".into(),
        }
    }
}

/// SIGINT or SIGTERM, whichever comes first.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Runs `main` on a multi-threaded tokio runtime whose threads are named `name`.
pub fn block_on<T>(name: &str, main: impl Future<Output = T>) -> std::io::Result<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name(name)
        .enable_all()
        .build()?;
    Ok(rt.block_on(main))
}

/// Allows one log line per second: the first call, then the first call after each second
/// (for warnings an abusive client could otherwise repeat thousands of times a second).
#[derive(Debug)]
pub struct Throttle {
    start: Instant,
    /// Milliseconds since `start` when the next line is allowed.
    next_ms: AtomicU64,
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle {
            start: Instant::now(),
            next_ms: AtomicU64::new(0),
        }
    }
}

impl Throttle {
    const EVERY: Duration = Duration::from_secs(1);

    /// Whether a line may be logged now.
    pub fn allow(&self) -> bool {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + Self::EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct File {
        outer: Outer,
    }

    #[derive(Debug, Default, serde::Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct Outer {
        inner: Inner,
    }

    #[derive(Debug, Default, serde::Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        count: u32,
    }

    impl ConfigFile for File {}

    #[test]
    fn an_error_names_the_key_line_and_column_and_what_was_expected() {
        let err = parse::<File>("[outer.inner]\n\ncout = 1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "key `outer.inner.cout`: TOML parse error at line 3, column 1\n  |\n3 | cout = 1\n  \
             | ^^^^\nunknown field `cout`, expected `count`"
        );
        let err = parse::<File>("[outer]\ninner = { count = -1 }\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("key `outer.inner.count`: TOML parse error at line 2, column 19"),
            "{err}"
        );
        // Not TOML at all: toml's own error, no key.
        let err = parse::<File>("[outer\n").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("TOML parse error at line 1, column 7"),
            "{err}"
        );
    }

    #[test]
    fn throttle_allows_one_line_then_holds() {
        let t = Throttle::default();
        assert!(t.allow());
        assert!(!t.allow(), "a second line within the second is held");
    }

    #[derive(Debug, Default, serde::Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct WithLog {
        log: Log,
    }

    impl ConfigFile for WithLog {}

    /// A `[log] filter` that does not parse is refused where `config check` sees it (the
    /// break-it run of issue 15: `"[[[bad"` passed the check, then was dropped at start).
    #[test]
    fn a_log_filter_that_does_not_parse_is_a_configuration_error() {
        let ok = parse::<WithLog>("[log]\nfilter = \"starling_comet=debug,info\"\n").unwrap();
        assert_eq!(ok.log.filter, "starling_comet=debug,info");
        let err = parse::<WithLog>("[log]\nfilter = \"[[[bad\"\n").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("key `log.filter`: ") && msg.contains("not a tracing filter"),
            "{msg}"
        );
    }
}

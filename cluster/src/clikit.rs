//! What every binary's command-line test checks ([`boot::cli`](crate::boot::cli)), run on the
//! built binary (`env!("CARGO_BIN_EXE_…")`) by each binary's `tests/cli.rs`: a wrong file is
//! one clear error and exit 78 even with `RUST_BACKTRACE=1`, `config check` and `config
//! print` agree, the shipped files pass, `--version` names the commit, a bad flag exits 64.

use crate::boot::cli::exit;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `bin` with `args` to its end, with `RUST_BACKTRACE=1` (as on many developer
/// machines) and no `RUST_LOG` or `STARLING_*` variables from the test's environment.
pub fn run(bin: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("STARLING_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("the binary runs")
}

/// A file in the temporary directory, named for this test process.
pub fn temp_file(name: &str, text: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("starling-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("writing a temporary file");
    path
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts `o` exited with `code`, printing both streams when it did not.
pub fn assert_exit(o: &Output, code: u8, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(code.into()),
        "{what}: stdout {}\nstderr {}",
        stdout(o),
        stderr(o)
    );
}

/// The command-line contract of a binary named `name` (as `--version` says it) whose files
/// have a `[log]` table, checked against the files it ships (`shipped`, each must pass
/// `config check`).
pub fn check_config_tools(bin: &str, name: &str, shipped: &[PathBuf]) {
    misspelled_key_is_one_error_and_exit_78(bin);
    check_and_print_agree(bin);
    for file in shipped {
        let o = run(bin, &["config", "check", path_str(file)]);
        assert_exit(&o, exit::OK, &format!("config check {}", file.display()));
        assert_eq!(stdout(&o), format!("ok: {}\n", file.display()));
    }
    version_names_the_commit(bin, name);
    let o = run(bin, &["--no-such-flag"]);
    assert_exit(&o, exit::USAGE, "an unknown flag");
    assert!(stderr(&o).contains("--no-such-flag"), "{}", stderr(&o));
    let missing = std::env::temp_dir().join("starling-cli-no-such-file.toml");
    let o = run(bin, &["--config", path_str(&missing)]);
    assert_exit(&o, exit::CONFIG, "a missing file");
    assert_eq!(
        stderr(&o),
        format!(
            "error: reading {}: No such file or directory (os error 2)\n",
            missing.display()
        )
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

/// A misspelled key, started as a server: the error once on stderr, naming the file, the
/// line and column and the key with what was expected; exit 78, no backtrace, nothing on
/// stdout (the server did not start).
fn misspelled_key_is_one_error_and_exit_78(bin: &str) {
    let file = temp_file("misspelled", "[log]\n# the filter:\nfiltr = \"info\"\n");
    for args in [
        vec!["--config", path_str(&file)],
        vec!["config", "check", path_str(&file)],
    ] {
        let o = run(bin, &args);
        assert_exit(&o, exit::CONFIG, &format!("{args:?}"));
        let err = stderr(&o);
        let first = format!(
            "error: {}: key `log.filtr`: TOML parse error at line 3, column 1\n",
            file.display()
        );
        assert!(err.starts_with(&first), "{args:?}: {err}");
        assert!(
            err.contains("unknown field `filtr`, expected `filter`"),
            "{args:?}: {err}"
        );
        assert_eq!(
            err.matches("filtr").count(),
            3,
            "once, with its line: {err}"
        );
        assert_eq!(err.matches("error").count(), 2, "{err}");
        assert!(
            !err.contains("backtrace") && !err.contains("panicked"),
            "{err}"
        );
        assert_eq!(stdout(&o), "", "{args:?}");
    }
    std::fs::remove_file(file).expect("removing a temporary file");
}

/// `config print` shows every default; its output, and that of a file, pass `config check`;
/// without FILE it prints `--config`'s.
fn check_and_print_agree(bin: &str) {
    let o = run(bin, &["config", "print"]);
    assert_exit(&o, exit::OK, "config print");
    let defaults = stdout(&o);
    assert!(
        defaults.contains("[log]\nfilter = \"info\"\n"),
        "{defaults}"
    );
    // Decimals print as written in the conf files (`factor = 1.8`), not as an f32 widened
    // to f64 (`1.7999999523162842`).
    let long_fraction = |l: &&str| {
        l.split('.')
            .skip(1)
            .any(|f| f.len() >= 8 && f.bytes().take(8).all(|b| b.is_ascii_digit()))
    };
    let noisy: Vec<&str> = defaults.lines().filter(long_fraction).collect();
    assert!(noisy.is_empty(), "float noise in config print: {noisy:?}");
    let printed = temp_file("printed", &defaults);
    let o = run(bin, &["config", "check", path_str(&printed)]);
    assert_exit(&o, exit::OK, &format!("config check of:\n{defaults}"));

    let file = temp_file("debug", "[log]\nfilter = \"debug\"\n");
    for args in [
        vec!["config", "print", path_str(&file)],
        vec!["--config", path_str(&file), "config", "print"],
    ] {
        let o = run(bin, &args);
        assert_exit(&o, exit::OK, &format!("{args:?}"));
        let text = stdout(&o);
        assert!(text.contains("[log]\nfilter = \"debug\"\n"), "{text}");
        assert_eq!(
            text.lines().filter(|l| l.contains(" = ")).count(),
            defaults.lines().filter(|l| l.contains(" = ")).count(),
            "every key, the file's and the defaults: {text}"
        );
    }
    let bad = temp_file("bad-value", "[log]\nfilter = 3\n");
    let o = run(bin, &["config", "print", path_str(&bad)]);
    assert_exit(&o, exit::CONFIG, "config print of a bad file");
    assert!(stderr(&o).contains("key `log.filter`"), "{}", stderr(&o));
    for f in [printed, file, bad] {
        std::fs::remove_file(f).expect("removing a temporary file");
    }
}

/// `NAME VERSION (COMMIT)`: a short hash (`-dirty` allowed) when git can see the source tree,
/// `unknown` when it cannot.
fn version_names_the_commit(bin: &str, name: &str) {
    let o = run(bin, &["--version"]);
    assert_exit(&o, exit::OK, "--version");
    let out = stdout(&o);
    let prefix = format!("{name} {} (", env!("CARGO_PKG_VERSION"));
    let commit = out
        .strip_prefix(&prefix)
        .and_then(|r| r.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("{out:?} is not {prefix}COMMIT)"));
    let in_git = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .is_ok_and(|o| o.status.success());
    if in_git {
        let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
        assert!(
            hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{out:?}"
        );
    } else {
        assert_eq!(commit, "unknown", "{out:?}");
    }
}

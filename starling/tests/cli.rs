//! The `starling` binary's command line (`boot::cli`): config errors, `config check`/`print`,
//! `--version`, exit codes, and a port already in use.

use starling_cluster::boot::cli::exit;
use starling_cluster::clikit::{self, assert_exit, run, stderr, temp_file};
use std::path::PathBuf;

const BIN: &str = env!("CARGO_BIN_EXE_starling");

/// Every file in conf/ that is not a tier's (those are checked by their own binaries).
fn all_in_one_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../conf"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            !["comet.toml", "logic.toml", "job.toml"].contains(&name)
        })
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    files
}

#[test]
fn config_tools_and_exit_codes() {
    clikit::check_config_tools(BIN, "starling", &all_in_one_files());
}

/// A taken port stops the start with the address in the message and exit 1, no backtrace.
#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let file = temp_file(
        "starling-port",
        &format!(
            "[comet]\nworkers = 1\n[comet.tcp]\nbind = [\"127.0.0.1:0\"]\n\
             [comet.websocket]\nbind = [\"127.0.0.1:0\"]\n[logic.http]\nbind = \"{addr}\"\n"
        ),
    );
    let o = run(BIN, &["--config", file.to_str().unwrap()]);
    assert_exit(&o, exit::FAILURE, "port in use");
    assert_eq!(
        stderr(&o),
        format!("error: binding the HTTP API on {addr}: Address already in use (os error 98)\n")
    );
    std::fs::remove_file(file).unwrap();
}

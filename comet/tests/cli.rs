//! The `comet` binary's command line (`boot::cli`): config errors, `config check`/`print`,
//! `--version`, exit codes, and a port already in use.

use starling_cluster::boot::cli::exit;
use starling_cluster::clikit::{self, assert_exit, run, stderr, temp_file};
use std::path::PathBuf;

const BIN: &str = env!("CARGO_BIN_EXE_comet");

#[test]
fn config_tools_and_exit_codes() {
    let conf = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/comet.toml"));
    clikit::check_config_tools(BIN, "comet", &[conf]);
}

/// A taken port stops the start with the address in the message and exit 1, no backtrace.
#[test]
fn a_port_in_use_is_named() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let file = temp_file(
        "comet-port",
        &format!(
            "[comet]\nworkers = 1\n[comet.tcp]\nbind = [\"{addr}\"]\n\
             [comet.websocket]\nbind = [\"127.0.0.1:0\"]\n[grpc]\nbind = \"127.0.0.1:0\"\n"
        ),
    );
    let o = run(BIN, &["--config", file.to_str().unwrap()]);
    assert_exit(&o, exit::FAILURE, "port in use");
    let err = stderr(&o);
    assert_eq!(
        err,
        format!("error: comet: binding {addr}: Address already in use (os error 98)\n")
    );
    std::fs::remove_file(file).unwrap();
}

/// A WSS certificate that is not there is a configuration error, found by `config check`.
#[test]
fn a_missing_certificate_is_a_config_error() {
    let file = temp_file(
        "comet-tls",
        "[comet.websocket]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n",
    );
    for args in [
        vec!["config", "check", file.to_str().unwrap()],
        vec!["--config", file.to_str().unwrap()],
    ] {
        let o = run(BIN, &args);
        assert_exit(&o, exit::CONFIG, &format!("{args:?}"));
        assert_eq!(
            stderr(&o),
            format!(
                "error: {}: comet.websocket.cert_file: reading certificate \
                 /nonexistent/cert.pem: I/O error: No such file or directory (os error 2)\n",
                file.display()
            )
        );
    }
    std::fs::remove_file(file).unwrap();
}

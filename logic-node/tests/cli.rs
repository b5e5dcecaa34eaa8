//! The `logic` binary's command line (`boot::cli`): config errors, `config check`/`print`,
//! `--version`, exit codes.

use starling_cluster::clikit;
use std::path::PathBuf;

#[test]
fn config_tools_and_exit_codes() {
    let conf = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/logic.toml"));
    clikit::check_config_tools(env!("CARGO_BIN_EXE_logic"), "logic", &[conf]);
}

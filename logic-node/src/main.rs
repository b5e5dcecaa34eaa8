//! `logic`: goim's logic tier on its own (HTTP push API 3111, gRPC 3119), with sessions in
//! Redis and pushes to Kafka, and the IM layer when `[im] enabled`. See conf/logic.toml; the
//! command line and exit codes are `boot::cli`'s.

use clap::Parser;
use starling_cluster::boot::{self, cli};
use starling_logic_node::Config;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "logic",
    version = starling_buildinfo::version(),
    after_help = cli::EXIT_CODES,
    about = "Starling logic: auth, sessions, HTTP push API, gRPC for comets, IM"
)]
struct Args {
    /// TOML configuration (see conf/logic.toml); defaults apply to every missing key.
    #[arg(long, short, env = "STARLING_LOGIC_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<cli::Command>,
}

fn main() -> ExitCode {
    let args: Args = cli::parse_args();
    cli::main(args.config.as_deref(), args.command, |config: Config| {
        boot::init_logging(&config.log.filter);
        boot::block_on("logic", starling_logic_node::run(config, boot::signal()))
            .map_err(anyhow::Error::from)?
            .map_err(anyhow::Error::from)
    })
}

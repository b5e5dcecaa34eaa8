//! `comet`: goim's comet tier on its own (TCP 3101, WebSocket 3102, gRPC 3109), calling
//! logic over gRPC and listed in the Redis registry. See conf/comet.toml; the command line
//! and exit codes are `boot::cli`'s.

use clap::Parser;
use starling_cluster::boot::{self, cli};
use starling_comet::node::{self, NodeConfig};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "comet",
    version = starling_buildinfo::version(),
    after_help = cli::EXIT_CODES,
    about = "Starling comet: the goim-compatible edge gateway"
)]
struct Args {
    /// TOML configuration (see conf/comet.toml); defaults apply to every missing key.
    #[arg(long, short, env = "STARLING_COMET_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<cli::Command>,
}

fn main() -> ExitCode {
    let args: Args = cli::parse_args();
    cli::main(
        args.config.as_deref(),
        args.command,
        |config: NodeConfig| {
            boot::init_logging(&config.log.filter);
            node::run(config)
        },
    )
}

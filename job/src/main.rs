//! `job`: goim's job tier on its own: Kafka in, gRPC to every comet out. See conf/job.toml;
//! the command line and exit codes are `boot::cli`'s.

use clap::Parser;
use starling_cluster::boot::{self, cli};
use starling_job::node::{self, NodeConfig};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "job",
    version = starling_buildinfo::version(),
    after_help = cli::EXIT_CODES,
    about = "Starling job: routes pushes from Kafka to comets"
)]
struct Args {
    /// TOML configuration (see conf/job.toml); defaults apply to every missing key.
    #[arg(long, short, env = "STARLING_JOB_CONFIG")]
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
            boot::block_on("job", node::run(config, boot::signal()))
                .map_err(anyhow::Error::from)?
                .map_err(anyhow::Error::from)
        },
    )
}

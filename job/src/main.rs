//! `job`: goim's job tier on its own: Kafka in, gRPC to every comet out. See conf/job.toml.

use clap::Parser;
use starling_cluster::boot;
use starling_job::node::{self, NodeConfig};

#[derive(Parser)]
#[command(version, about = "Starling job: routes pushes from Kafka to comets")]
struct Args {
    /// TOML configuration (see conf/job.toml); defaults apply to every missing key.
    #[arg(long, short, env = "STARLING_JOB_CONFIG")]
    config: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: NodeConfig = boot::load(args.config.as_deref())?;
    boot::init_logging(&config.log.filter);
    boot::block_on("job", node::run(config, boot::signal()))??;
    Ok(())
}

//! `comet`: goim's comet tier on its own (TCP 3101, WebSocket 3102, gRPC 3109), calling
//! logic over gRPC and listed in the Redis registry. See conf/comet.toml.

use clap::Parser;
use starling_cluster::boot;
use starling_comet::node::{self, NodeConfig};

#[derive(Parser)]
#[command(version, about = "Starling comet: the goim-compatible edge gateway")]
struct Args {
    /// TOML configuration (see conf/comet.toml); defaults apply to every missing key.
    #[arg(long, short, env = "STARLING_COMET_CONFIG")]
    config: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: NodeConfig = boot::load(args.config.as_deref())?;
    boot::init_logging(&config.log.filter);
    node::run(config)?;
    Ok(())
}

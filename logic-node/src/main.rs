//! `logic`: goim's logic tier on its own (HTTP push API 3111, gRPC 3119), with sessions in
//! Redis and pushes to Kafka, and the IM layer when `[im] enabled`. See conf/logic.toml.

use clap::Parser;
use starling_cluster::boot;
use starling_logic_node::Config;

#[derive(Parser)]
#[command(
    version,
    about = "Starling logic: auth, sessions, HTTP push API, gRPC for comets, IM"
)]
struct Args {
    /// TOML configuration (see conf/logic.toml); defaults apply to every missing key.
    #[arg(long, short, env = "STARLING_LOGIC_CONFIG")]
    config: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: Config = boot::load(args.config.as_deref())?;
    boot::init_logging(&config.log.filter);
    boot::block_on("logic", starling_logic_node::run(config, boot::signal()))??;
    Ok(())
}

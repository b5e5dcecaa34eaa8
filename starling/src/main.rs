//! `starling`: comet, logic and job in one process. With no arguments it serves goim's
//! default ports (TCP 3101, WebSocket 3102, HTTP 3111) on the embedded default.

use anyhow::Context;
use clap::Parser;
use starling::Config;
use starling_cluster::boot;

#[derive(Parser)]
#[command(
    version,
    about = "Starling all-in-one: goim-compatible comet, logic and job"
)]
struct Args {
    /// TOML configuration (see conf/starling.toml); defaults apply to every missing key.
    #[arg(long, short, env = "STARLING_CONFIG")]
    config: Option<std::path::PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config: Config = boot::load(args.config.as_deref())?;
    boot::init_logging(&config.log.filter);
    let lame_duck = config.comet.lame_duck;
    let running = starling::start(config).context("starting")?;
    running.wait_for_signal();
    tracing::info!(?lame_duck, "draining; a second signal stops at once");
    running.drain(lame_duck, starling::signal());
    Ok(())
}

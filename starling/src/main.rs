//! `starling`: comet, logic and job in one process. With no arguments it serves goim's
//! default ports (TCP 3101, WebSocket 3102, HTTP 3111) on the embedded default. The command
//! line and exit codes are `boot::cli`'s.

use clap::Parser;
use starling::Config;
use starling_cluster::boot::{self, cli};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "starling",
    version = starling_buildinfo::version(),
    after_help = cli::EXIT_CODES,
    about = "Starling all-in-one: goim-compatible comet, logic and job"
)]
struct Args {
    /// TOML configuration (see conf/starling.toml); defaults apply to every missing key.
    #[arg(long, short, env = "STARLING_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<cli::Command>,
}

fn main() -> ExitCode {
    let args: Args = cli::parse_args();
    cli::main(args.config.as_deref(), args.command, |config: Config| {
        boot::init_logging(&config.log.filter);
        let lame_duck = config.comet.lame_duck;
        let running = starling::start(config)?;
        running.wait_for_signal();
        tracing::info!(?lame_duck, "draining; a second signal stops at once");
        running.drain(lame_duck, starling::signal());
        Ok::<_, starling::StartError>(())
    })
}

//! `starling-bench`: the load tool. Connection load (`conns`), fan-out (`fanout`) against
//! Starling or, with the same client, redis-server, nats-server and Mosquitto, and the
//! kernel's own cost of a small loopback write (`floor`). Results end as one JSON line on
//! stdout; progress goes to stderr.
//!
//! # Layout
//! - `wire`: what the client says to each peer, and the resumable decoders of what it hears.
//! - `sub`: a subscriber process (its share of the connections, one source address).
//! - `fleet`: starting subscriber processes and reading their reports.
//! - `publish`: the publisher, as fast as accepted or at a fixed rate.
//! - `track`: per-subscriber accounting (loss, duplicates, order) and the HDR histogram.
//! - `conns`, `fanout`, `floor`: the three measurements; `plot`: PNG output; `sys`: /proc.
//! - `soak`: the long run of issue 15 (leaks, churn, Redis blips, no acknowledged loss).
//! - `im`: the IM scenarios (P2P, group, offline sync), one process each; idle IM
//!   connections are `conns --im-secret`.
//! - `xmpp`: the same IM scenarios against ejabberd (issue 16), a minimal XMPP client.

mod conns;
mod epoll;
mod fanout;
mod fleet;
mod floor;
mod im;
mod plot;
mod publish;
mod soak;
mod sub;
mod sys;
mod track;
mod wire;
mod xmpp;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "starling-bench",
    version = starling_buildinfo::version(),
    about = "Starling's load tool: connections, fan-out, and peers side by side"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open N connections, hold them, report connect rate, failures and server memory.
    Conns(conns::ConnsArgs),
    /// Publish M messages to N subscribers; report rate, latency, loss and server CPU.
    Fanout(fanout::FanoutArgs),
    /// The kernel's cost of one small write to a sleeping loopback reader.
    Floor(floor::FloorArgs),
    /// IM scenarios (issue 12): P2P throughput and latency, a group, offline sync.
    Im {
        #[command(subcommand)]
        cmd: im::ImCmd,
    },
    /// Soak (issue 15): IM connections with 1:1, group and room traffic and churn for a long
    /// time; server memory, fds and threads sampled; every acknowledged message checked.
    Soak(soak::SoakArgs),
    /// The IM scenarios against an XMPP server (issue 16: ejabberd side by side).
    Xmpp {
        #[command(subcommand)]
        cmd: xmpp::XmppCmd,
    },
    /// (internal) one subscriber process of a run.
    #[command(hide = true)]
    Sub(sub::SubArgs),
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

fn coordinator<F: std::future::Future<Output = anyhow::Result<R>>, R: serde::Serialize>(
    f: F,
) -> anyhow::Result<()> {
    crate::sys::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = tokio::task::LocalSet::new().block_on(&rt, f)?;
    print_json(&result)
}

fn main() -> anyhow::Result<()> {
    match starling_cluster::boot::cli::parse_args::<Cli>().cmd {
        Cmd::Conns(a) => coordinator(conns::run(a)),
        Cmd::Fanout(a) => coordinator(fanout::run(a)),
        Cmd::Floor(a) => print_json(&floor::run(a)?),
        Cmd::Im { cmd } => coordinator(im::run(cmd)),
        Cmd::Xmpp { cmd } => coordinator(xmpp::run(cmd)),
        Cmd::Soak(a) => coordinator(soak::run(a)),
        Cmd::Sub(a) => sub::run(a),
    }
}

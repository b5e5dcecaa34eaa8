//! A terminal chat on `starling-client`. Start the all-in-one in development mode, then two
//! of these:
//!
//! ```text
//! cargo run --release -p starling -- --config conf/im-try.toml
//! cargo run -p starling-client --example chat -- 1 2     # user 1 talks to user 2
//! cargo run -p starling-client --example chat -- 2 1     # user 2 talks to user 1
//! ```
//!
//! Each line typed is sent to the peer; every message of the conversation (both sides, seq
//! order, each once) is printed, and the peer's messages are marked read. `conf/im-try.toml`
//! sets `im.insecure_trust_mid`, so no `im_token` is needed; against a server with a
//! `token_secret` (`conf/app-try.toml`, production) pass the token your backend minted (`POST
//! /im/v1/tokens`) in the environment: `STARLING_IM_TOKEN=<jwt> cargo run ... -- 1 2` (it
//! becomes `Identity::im_token`). Optional third argument: the comet's TCP address (default
//! `127.0.0.1:3101`).

use starling_client::im::{ConvKind, ConvRef};
use starling_client::{Client, Codec, Config, ConnState, Event, Identity, Servers, Transport};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let me: i64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(1);
    let peer: i64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(2);
    let addr = args
        .get(3)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:3101".into());
    let conv = ConvRef {
        kind: ConvKind::P2p as i32,
        id: peer,
    };
    let identity = Identity {
        mid: me,
        key: format!("chat-example-{me}"),
        platform: "cli".into(),
        im: Some(Codec::Protobuf),
        im_token: std::env::var("STARLING_IM_TOKEN").unwrap_or_default(),
        ..Default::default()
    };
    let (client, mut events) = Client::start(Config::new(
        identity,
        Transport::Tcp,
        Servers::Addrs(vec![addr]),
    ));
    let sender = client.clone();
    tokio::spawn(async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Err(e) = sender.send(conv, 1, &line).await {
                eprintln!("not sent: {e}");
            }
        }
        sender.close();
    });
    println!("user {me} chatting with {peer}; type a line and press enter (ctrl-d quits)");
    while let Some(event) = events.recv().await {
        match event {
            Event::Message(m) if m.conv == Some(conv) => {
                let who = if m.sender == me {
                    "me".to_string()
                } else {
                    m.sender.to_string()
                };
                println!("[{}] {who}: {}", m.seq, m.content);
                if m.sender != me {
                    client.mark_read(conv, m.seq);
                }
            }
            Event::Recall(m) => println!("[{}] (message {} recalled)", m.seq, m.ref_seq),
            Event::Receipt(e) => println!("(user {} read up to {})", e.uid, e.seq),
            Event::Kick(k) => println!("kicked: {} {}", k.code, k.reason),
            Event::State(ConnState::Disconnected { reason, retry_in }) => {
                println!("(disconnected: {reason}; retrying in {retry_in:?})")
            }
            Event::State(ConnState::Stopped { reason }) => {
                println!("(stopped: {reason})");
                break;
            }
            Event::State(s) => println!("({s:?})"),
            _ => {}
        }
    }
}

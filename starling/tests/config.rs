//! The shipped conf/starling.toml shows every key with its default, and unknown keys fail;
//! the all-in-one binary loads its file as the tier binaries do (`boot::load`).

use starling::Config;
use starling_cluster::boot;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn shipped() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conf/starling.toml"
    ))
    .unwrap()
}

/// Uncomments every `#key = value` line (prose comments start with `##`).
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if !rest.starts_with('#') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shipped_file_parses_to_the_defaults_with_every_key_uncommented() {
    let text = shipped();
    assert_eq!(boot::parse::<Config>(&text).unwrap(), Config::default());
    let all = uncommented(&text);
    assert!(all.lines().filter(|l| l.contains(" = ")).count() > 40);
    assert_eq!(boot::parse::<Config>(&all).unwrap(), Config::default());
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let err = boot::parse::<Config>("[comet.tcp]\nbindd = []\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bindd"), "{err}");
    let err = boot::parse::<Config>("[comet.protocol]\nout_ring = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("out_ring"), "{err}");
    let any_count = boot::parse::<Config>("[comet.protocol]\nout_ring = 100\n").unwrap();
    assert_eq!(any_count.comet.protocol.out_ring, 100);
    for (text, key) in [
        ("[job]\ncomet_queue = 0\n", "comet_queue"),
        ("[job]\nroom_batch_max = 0\n", "room_batch_max"),
        (
            "[comet.protocol]\nanswer_timeout = \"0s\"\n",
            "answer_timeout",
        ),
    ] {
        let err = boot::parse::<Config>(text).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
        // The tier binaries check the same tables the same way.
        if key != "answer_timeout" {
            let err = boot::parse::<starling_job::node::NodeConfig>(text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{err}");
        }
    }
    let err = boot::parse::<Config>("[logic.node]\nheartbeat = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("heartbeat"), "{err}");
}

fn conf(name: &str) -> String {
    std::fs::read_to_string(format!("{}/../conf/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// The text of every table whose name starts with `[prefix`.
fn tables(text: &str, prefix: &str) -> String {
    let mut out = Vec::new();
    let mut keep = false;
    for line in text.lines() {
        if line.starts_with('[') {
            keep = line.starts_with(&format!("[{prefix}"));
        }
        if keep {
            out.push(line);
        }
    }
    out.join("\n").trim_end().to_string()
}

/// A tier's file shows its defaults (commented and uncommented), shares its tier's tables
/// with starling.toml word for word, and names unknown keys.
fn check_tier_file<T>(file: &str, shared: &str, min_keys: usize)
where
    T: boot::ConfigFile + PartialEq + std::fmt::Debug,
{
    let text = conf(file);
    assert_eq!(boot::parse::<T>(&text).unwrap(), T::default(), "{file}");
    let all = uncommented(&text);
    assert!(
        all.lines().filter(|l| l.contains(" = ")).count() >= min_keys,
        "{file}"
    );
    assert_eq!(
        boot::parse::<T>(&all).unwrap(),
        T::default(),
        "{file} uncommented"
    );
    assert_eq!(
        tables(&text, shared),
        tables(&shipped(), shared),
        "{file}: [{shared}...]"
    );
    let err = boot::parse::<T>("[log]\nfilterr = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("filterr"), "{file}: {err}");
}

#[test]
fn tier_files_show_their_defaults_and_match_the_all_in_one() {
    check_tier_file::<starling_comet::node::NodeConfig>("comet.toml", "comet", 37);
    check_tier_file::<starling_logic_node::Config>("logic.toml", "logic", 28);
    assert_eq!(
        tables(&conf("logic.toml"), "im"),
        tables(&shipped(), "im"),
        "logic.toml: [im]"
    );
    check_tier_file::<starling_job::node::NodeConfig>("job.toml", "job", 15);
}

/// A file in the temporary directory, named for this test process.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("starling-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the all-in-one binary until it logs that it is running (then stops it: `Ok`) or exits
/// (`Err` with what it wrote on stderr).
fn run_starling(args: &[&str], env: Option<&Path>) -> Result<(), String> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_starling"));
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("STARLING_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(path) = env {
        cmd.env("STARLING_CONFIG", path);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, running) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("starling running") {
                let _ = tx.send(());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if running.recv_timeout(Duration::from_millis(50)).is_ok() {
            child.kill().unwrap();
            child.wait().unwrap();
            return Ok(());
        }
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        assert!(Instant::now() < deadline, "neither running nor exited");
    }
}

#[test]
fn the_all_in_one_loads_its_file_as_the_tier_binaries_do() {
    let good = temp_file(
        "good",
        "[comet]\nworkers = 1\n[comet.tcp]\nbind = [\"127.0.0.1:0\"]\n\
         [comet.websocket]\nbind = [\"127.0.0.1:0\"]\ntls_bind = [\"127.0.0.1:0\"]\n\
         [logic.http]\nbind = \"127.0.0.1:0\"\n[log]\nfilter = \"info\"\n",
    );
    let good_arg = good.to_str().unwrap();
    assert_eq!(run_starling(&["--config", good_arg], None), Ok(()));
    assert_eq!(run_starling(&["-c", good_arg], None), Ok(()));
    assert_eq!(run_starling(&[], Some(&good)), Ok(()));

    // Every failure reads as boot::load words it for comet, logic and job.
    let missing = std::env::temp_dir().join("starling-no-such-file.toml");
    let invalid = temp_file("invalid", "[comet.protocol]\nout_ring = 0\n");
    let unknown = temp_file("unknown", "[comet.tcp]\nbindd = []\n");
    for path in [&missing, &invalid, &unknown] {
        let expected = boot::load::<Config>(Some(path)).unwrap_err().to_string();
        let first_line = expected.lines().next().unwrap();
        let stderr = run_starling(&[], Some(path)).unwrap_err();
        assert!(
            stderr.starts_with(&format!("error: {first_line}")),
            "{path:?}: {stderr}"
        );
    }
    let stderr = run_starling(&[], Some(&invalid)).unwrap_err();
    assert!(
        stderr.contains(&format!(
            "{}: comet.protocol.out_ring must be from 1 to 65536, not 0",
            invalid.display()
        )),
        "{stderr}"
    );
    for path in [good, invalid, unknown] {
        std::fs::remove_file(path).unwrap();
    }
}

#[test]
fn no_file_means_every_default() {
    assert_eq!(boot::load::<Config>(None).unwrap(), Config::default());
}

/// conf/im-try.toml, the README's way to try IM, loads and turns IM on in development mode.
#[test]
fn the_im_try_file_turns_im_on() {
    let c = boot::load::<Config>(Some(&PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../conf/im-try.toml"
    ))))
    .unwrap();
    assert!(c.im.enabled && c.im.insecure_trust_mid);
    assert_eq!(c.im.admin_token, "try-admin");
    // IM on without a secret or the development switch is refused, naming the key.
    let err = boot::parse::<Config>("[im]\nenabled = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("token_secret"), "{err}");
    let err = boot::parse::<Config>("[im]\nenabled = true\ntoken_secret = \"short\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("token_secret"), "{err}");
}

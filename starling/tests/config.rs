//! The shipped conf/starling.toml shows every key with its default, and unknown keys fail.

use starling::Config;

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
    assert_eq!(Config::from_toml(&text).unwrap(), Config::default());
    let all = uncommented(&text);
    assert!(all.lines().filter(|l| l.contains(" = ")).count() > 40);
    assert_eq!(Config::from_toml(&all).unwrap(), Config::default());
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let err = Config::from_toml("[comet.tcp]\nbindd = []\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("bindd"), "{err}");
    let err = Config::from_toml("[comet.protocol]\nout_ring = 100\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("out_ring"), "{err}");
    let err = Config::from_toml("[logic.node]\nheartbeat = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("heartbeat"), "{err}");
}

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
    let err = Config::from_toml("[comet.protocol]\nout_ring = 0\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("out_ring"), "{err}");
    let any_count = Config::from_toml("[comet.protocol]\nout_ring = 100\n").unwrap();
    assert_eq!(any_count.comet.protocol.out_ring, 100);
    let err = Config::from_toml("[logic.node]\nheartbeat = \"soon\"\n")
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
    T: serde::de::DeserializeOwned + Default + PartialEq + std::fmt::Debug,
{
    let text = conf(file);
    assert_eq!(toml::from_str::<T>(&text).unwrap(), T::default(), "{file}");
    let all = uncommented(&text);
    assert!(
        all.lines().filter(|l| l.contains(" = ")).count() >= min_keys,
        "{file}"
    );
    assert_eq!(
        toml::from_str::<T>(&all).unwrap(),
        T::default(),
        "{file} uncommented"
    );
    assert_eq!(
        tables(&text, shared),
        tables(&shipped(), shared),
        "{file}: [{shared}...]"
    );
    let err = toml::from_str::<T>("[log]\nfilterr = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("filterr"), "{file}: {err}");
}

#[test]
fn tier_files_show_their_defaults_and_match_the_all_in_one() {
    check_tier_file::<starling_comet::node::NodeConfig>("comet.toml", "comet", 37);
    check_tier_file::<starling_logic::node::NodeConfig>("logic.toml", "logic", 28);
    check_tier_file::<starling_job::node::NodeConfig>("job.toml", "job", 15);
}

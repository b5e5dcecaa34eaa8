//! What every Starling binary reports with `--version`: the package version and the git
//! commit it was built from, `0.1.0 (1a2b3c4)`, `0.1.0 (1a2b3c4-dirty)` when the work tree had
//! uncommitted changes, `0.1.0 (unknown)` when built outside git (from a tarball, say).
//!
//! `build.rs` fills it in with vergen-gitcl, which runs the `git` command. It reruns when
//! HEAD or the branch moves, not when a file is edited: the `-dirty` flag is as of the last
//! time the build script ran.

/// vergen's value for what it could not find (no git, not a checkout).
const PLACEHOLDER: &str = "VERGEN_IDEMPOTENT_OUTPUT";

/// The short commit hash, with `-dirty` when the tree had changes, or `unknown`.
pub fn commit() -> String {
    commit_from(env!("VERGEN_GIT_SHA"), env!("VERGEN_GIT_DIRTY"))
}

fn commit_from(sha: &str, dirty: &str) -> String {
    if sha.is_empty() || sha == PLACEHOLDER {
        return "unknown".into();
    }
    match dirty {
        "true" => format!("{sha}-dirty"),
        _ => sha.into(),
    }
}

/// `VERSION (COMMIT)`, for clap's `#[command(version = starling_buildinfo::version())]`.
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| format!("{} ({})", env!("CARGO_PKG_VERSION"), commit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_outside_git_says_unknown() {
        assert_eq!(commit_from(PLACEHOLDER, PLACEHOLDER), "unknown");
        assert_eq!(commit_from("", "false"), "unknown");
        assert_eq!(commit_from("1a2b3c4", "true"), "1a2b3c4-dirty");
        assert_eq!(commit_from("1a2b3c4", "false"), "1a2b3c4");
    }
}

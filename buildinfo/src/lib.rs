//! What every Starling binary reports with `--version`: the package version and the git
//! commit it was built from, `0.1.0 (1a2b3c4)`, `0.1.0 (1a2b3c4-dirty)` when the work tree had
//! uncommitted changes, `0.1.0 (unknown)` when built outside git (from a tarball, say).
//!
//! `build.rs` fills it in with vergen-gitcl, which runs the `git` command. It reruns when
//! HEAD or the branch moves, not when a file is edited: the `-dirty` flag is as of the last
//! time the build script ran.

/// vergen's value under `VERGEN_IDEMPOTENT` (reproducible builds); outside a git checkout
/// it sets nothing at all.
const PLACEHOLDER: &str = "VERGEN_IDEMPOTENT_OUTPUT";

/// The short commit hash, with `-dirty` when the tree had changes, or `unknown`.
pub fn commit() -> String {
    commit_from(
        option_env!("VERGEN_GIT_SHA"),
        option_env!("VERGEN_GIT_DIRTY"),
    )
}

fn commit_from(sha: Option<&str>, dirty: Option<&str>) -> String {
    match (sha, dirty) {
        (None | Some("" | PLACEHOLDER), _) => "unknown".into(),
        (Some(sha), Some("true")) => format!("{sha}-dirty"),
        (Some(sha), _) => sha.into(),
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
        assert_eq!(commit_from(None, None), "unknown");
        assert_eq!(commit_from(Some(PLACEHOLDER), Some(PLACEHOLDER)), "unknown");
        assert_eq!(commit_from(Some(""), Some("false")), "unknown");
        assert_eq!(commit_from(Some("1a2b3c4"), Some("true")), "1a2b3c4-dirty");
        assert_eq!(commit_from(Some("1a2b3c4"), Some("false")), "1a2b3c4");
    }
}

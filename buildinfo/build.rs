//! Asks git for the commit being built (short hash) and whether the work tree has changes;
//! vergen-gitcl reruns this when HEAD moves. Without git (a tarball) it sets nothing and
//! warns; `src/lib.rs` then reports `unknown` (checked by building a copy outside git).

use vergen_gitcl::{Emitter, Gitcl};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let git = Gitcl::builder().sha(true).dirty(false).build();
    Emitter::default().add_instructions(&git)?.emit()?;
    Ok(())
}

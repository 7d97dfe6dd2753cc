//! The generated code is warning-free under strict crate-level lints, for
//! public and private, documented and undocumented functions, used in a flow
//! or only registered.
#![deny(warnings)]
#![deny(missing_docs, missing_debug_implementations, unused_qualifications)]
#![deny(unused_results, trivial_casts, unused_lifetimes, unreachable_pub)]
#![deny(rust_2018_idioms, unsafe_code, single_use_lifetimes, variant_size_differences)]

use syncflow::prelude::*;

/// A public, documented function, never used in a flow.
#[sync_function]
pub fn public_documented(line: String) -> usize {
    line.len()
}

#[sync_function]
fn private_undocumented(n: usize) -> Option<usize> {
    n.checked_sub(1)
}

/// A private, documented function.
#[sync_function(name = "documented")]
async fn private_documented(n: usize, meta: &Meta) -> Result<Vec<usize>, std::fmt::Error> {
    Ok(vec![n, meta.position as usize])
}

/// Functions of a private module.
mod inner {
    use syncflow::prelude::*;

    /// Public within the crate.
    #[sync_function]
    pub(crate) fn crate_visible(n: usize) -> usize {
        n
    }
}

fn main() {
    let flow = flow!(name = "strict", private_undocumented -> private_documented -> inner::crate_visible);
    drop(flow);
}

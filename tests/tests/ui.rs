//! Compile-time behaviour of `#[sync_function]` and `flow!`, checked with trybuild.
//!
//! `ui/pass/*.rs` must build; `ui/fail/*.rs` must fail with exactly the
//! diagnostics recorded next to them in `.stderr` files. Regenerate those
//! with `TRYBUILD=overwrite cargo test -p syncflow-tests --test ui`, then read
//! every changed file: each one is an error message a user will see.

use std::path::Path;

/// trybuild silently passes a glob that matches nothing, so every run first
/// checks that its directory holds at least `min` fixtures.
fn fixtures(dir: &str, min: usize) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let count = std::fs::read_dir(&full)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", full.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "rs"))
        .count();
    assert!(
        count >= min,
        "{} holds {count} fixtures, expected at least {min}",
        full.display()
    );
    format!("{dir}/*.rs")
}

#[test]
fn ui_pass() {
    let t = trybuild::TestCases::new();
    t.pass(fixtures("ui/pass", 6));
}

#[test]
fn ui_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail(fixtures("ui/fail", 12));
}

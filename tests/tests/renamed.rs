//! A crate that depends on syncflow under another name: its functions are
//! registered and its flow runs (see `tests/renamed`, compiled with only
//! `sf = { package = "syncflow" }` in its Cargo.toml).

use syncflow_renamed_dep as renamed;

#[tokio::test]
async fn a_renamed_dependency_builds_registers_and_runs() {
    let flow = renamed::flow();
    assert_eq!(flow.name(), "renamed");
    let done = flow
        .run_collect(["3", "-1", "x", "4"].map(String::from))
        .await
        .unwrap();
    assert_eq!(done.outputs, [(3, 1), (4, 4)]);
    assert_eq!(done.failures.len(), 1);
    assert_eq!(done.failures[0].step, "parse");

    let f = syncflow::registry::find("renamed_positive").unwrap();
    assert_eq!(f.module, "syncflow_renamed_dep");
    assert!(f.is_async);
    // The function is unchanged.
    assert_eq!(renamed::parse(" 7 ".into()), Ok(7));
}

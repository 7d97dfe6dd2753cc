use syncflow::prelude::*;

#[derive(Debug, PartialEq)]
pub struct Parsed(i64);
#[derive(Debug, PartialEq)]
pub struct Checked(i64);

/// Parse it.
#[sync_function]
fn parse(line: String) -> Result<Parsed, std::num::ParseIntError> {
    Ok(Parsed(line.trim().parse()?))
}

#[sync_function]
fn check(p: Parsed) -> Option<Checked> {
    (p.0 > 0).then_some(Checked(p.0))
}

#[sync_function]
async fn dup(c: Checked, meta: &Meta) -> Vec<i64> {
    vec![c.0, meta.position as i64]
}

#[tokio::test]
async fn scratch() {
    let f = flow!(parse -> check -> dup);
    let r = f
        .run_collect(["1", "-2", "x", "5"].map(String::from))
        .await
        .unwrap();
    assert_eq!(r.outputs, vec![1, 1, 5, 4]);
    assert_eq!(r.failures.len(), 1);
    println!("{:?}", f.stats().unwrap().snapshot());
    println!("{:?}", syncflow::registry::functions());
}

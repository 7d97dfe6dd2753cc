//! Every outcome shape, sync and async, with context parameters, in one flow.
use syncflow::prelude::*;

#[derive(Debug)]
pub struct Bad;

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad")
    }
}

pub struct Factor(i64);

#[sync_function]
fn map(n: i64) -> i64 {
    n
}
#[sync_function]
fn filter(n: i64) -> Option<i64> {
    Some(n)
}
#[sync_function]
fn fallible(n: i64) -> Result<i64, Bad> {
    Ok(n)
}
#[sync_function]
fn fallible_filter(n: i64, meta: &Meta) -> Result<Option<i64>, Bad> {
    Ok(Some(n + meta.position as i64))
}
#[sync_function]
fn fan_out(n: i64, factor: Res<Factor>) -> Vec<i64> {
    vec![n * factor.0]
}
#[sync_function]
fn fallible_fan_out(n: i64, cx: &Context) -> Result<Vec<i64>, Bad> {
    Ok(vec![n + cx.meta().position as i64])
}
#[sync_function]
async fn async_map(n: i64) -> i64 {
    n
}
#[sync_function]
async fn async_fallible_fan_out(n: i64, meta: &Meta, factor: Res<'_, Factor>) -> Result<Vec<i64>, Bad> {
    Ok(vec![n * factor.0 + meta.position as i64])
}

fn main() {
    let _ = flow!(
        map -> filter -> fallible -> fallible_filter -> fan_out -> fallible_fan_out
            -> async_map -> async_fallible_fan_out
    )
    .resource(Factor(2));
}

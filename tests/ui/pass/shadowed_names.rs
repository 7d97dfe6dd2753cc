//! The generated code names nothing through the user's scope: shadowing
//! std's prelude names, and items named like the macros' local variables,
//! change nothing.
#![allow(dead_code, non_camel_case_types, clippy::all)]

use syncflow::prelude::*;

pub struct Result;
pub struct Option;
pub struct Vec;
pub struct String;
pub struct Box;
pub struct Ok;
pub struct Err;
pub struct Some;
pub struct None;
pub trait Send {}
pub trait Sync {}
pub trait Future {}
pub trait Iterator {}
pub trait IntoIterator {}
pub trait Display {}
pub mod core {}
pub mod std {}
// Names of locals in the generated code, as unit structs (which a pattern
// would match instead of binding, if hygiene leaked).
pub struct v;
pub struct e;
pub struct items;
pub struct input;
pub struct cx;
pub struct M;
pub struct E;

#[sync_function]
fn parse(line: ::std::string::String) -> ::std::result::Result<i64, ::std::num::ParseIntError> {
    line.parse()
}

#[sync_function]
fn keep(n: i64, _meta: &Meta) -> ::std::option::Option<i64> {
    ::std::option::Option::Some(n)
}

#[sync_function]
async fn spread(n: i64) -> ::std::vec::Vec<i64> {
    ::std::vec![n, n]
}

#[sync_function]
fn checked(n: i64) -> ::std::result::Result<::std::option::Option<i64>, ::std::fmt::Error> {
    ::std::result::Result::Ok(::std::option::Option::Some(n))
}

fn main() {
    let _ = flow!(parse -> keep -> spread -> checked);
}

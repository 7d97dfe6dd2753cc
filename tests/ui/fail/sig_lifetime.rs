use syncflow::prelude::*;

#[sync_function]
fn first_word<'a>(line: &'a String) -> String {
    line.split(' ').next().unwrap_or_default().to_string()
}

fn main() {}

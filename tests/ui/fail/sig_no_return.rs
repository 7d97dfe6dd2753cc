use syncflow::prelude::*;

#[sync_function]
fn log(line: String) {
    println!("{line}");
}

fn main() {}

use syncflow::prelude::*;

#[sync_function]
fn words(line: String) -> impl Iterator<Item = String> {
    line.split(' ').map(String::from).collect::<Vec<_>>().into_iter()
}

fn main() {}

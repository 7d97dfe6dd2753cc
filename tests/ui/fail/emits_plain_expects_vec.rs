use syncflow::prelude::*;

#[sync_function]
fn words(line: String) -> Vec<String> {
    line.split(' ').map(String::from).collect()
}

#[sync_function]
fn count(words: Vec<String>) -> usize {
    words.len()
}

fn main() {
    let _ = flow!(words -> count);
}

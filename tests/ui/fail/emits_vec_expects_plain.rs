use syncflow::prelude::*;

/// Each item of the fan-out is itself a `Vec<String>`.
#[sync_function]
fn chunks(text: String) -> Vec<Vec<String>> {
    text.lines().map(|l| l.split(' ').map(String::from).collect()).collect()
}

#[sync_function]
fn shout(word: String) -> String {
    word.to_uppercase()
}

fn main() {
    let _ = flow!(chunks -> shout);
}

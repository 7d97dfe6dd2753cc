use syncflow::prelude::*;

#[sync_function]
fn parse(line: String) -> usize {
    line.len()
}

fn main() {
    let _ = flow!(title = "orders", parse);
}

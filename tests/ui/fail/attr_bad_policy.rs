use syncflow::prelude::*;

#[sync_function(retry = 0, timeout = "soon", on_error = "ignore", rate_limit = 100)]
fn parse(line: String) -> String {
    line
}

fn main() {}

use std::rc::Rc;

use syncflow::prelude::*;

#[sync_function]
async fn count(line: String) -> usize {
    let shared = Rc::new(line);
    tokio::task::yield_now().await;
    shared.len()
}

fn main() {}

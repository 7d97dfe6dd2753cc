use syncflow::prelude::*;

pub struct User(u64);

/// A fan-out of `Option<User>`: each item is an `Option<User>`.
#[sync_function]
fn lookup_all(ids: Vec<u64>) -> Vec<Option<User>> {
    ids.into_iter().map(|id| (id != 0).then_some(User(id))).collect()
}

#[sync_function]
fn greet(user: User) -> String {
    user.0.to_string()
}

fn main() {
    let _ = flow!(lookup_all -> greet);
}

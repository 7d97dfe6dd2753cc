use syncflow::prelude::*;

pub struct User(u64);

/// Keeps known users: emits `User`, not `Option<User>`.
#[sync_function]
fn lookup(id: u64) -> Option<User> {
    (id != 0).then_some(User(id))
}

#[sync_function]
fn greet(user: Option<User>) -> String {
    user.map(|u| u.0.to_string()).unwrap_or_default()
}

fn main() {
    let _ = flow!(lookup -> greet);
}

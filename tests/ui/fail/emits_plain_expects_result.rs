use syncflow::prelude::*;

pub struct Order(i64);

#[sync_function]
fn parse(line: String) -> Result<Order, std::num::ParseIntError> {
    Ok(Order(line.parse()?))
}

#[sync_function]
fn price(order: Result<Order, std::num::ParseIntError>) -> i64 {
    order.map(|o| o.0).unwrap_or(0)
}

fn main() {
    let _ = flow!(parse -> price);
}

//! Steps named by paths into other modules, a named flow, renamed
//! registrations, raw identifiers and a function local to a block.
use syncflow::prelude::*;

mod ops {
    use syncflow::prelude::*;

    #[sync_function(name = "ops.parse")]
    pub fn parse(line: String) -> Result<i64, std::num::ParseIntError> {
        line.parse()
    }

    pub mod checks {
        use syncflow::prelude::*;

        #[sync_function]
        pub fn check(n: i64) -> Option<i64> {
            (n > 0).then_some(n)
        }
    }
}

#[sync_function]
fn r#type(n: i64) -> i64 {
    n
}

fn main() {
    let _ = flow!(ops::parse -> ops::checks::check);
    let _ = flow!(name = "orders", crate::ops::parse -> self::ops::checks::check -> r#type);

    #[sync_function]
    fn local(n: i64) -> i64 {
        n + 1
    }
    let _ = flow!(r#type -> local);
}

//! The orders example as a flow file with Save/Load branching
//! (`examples/flows/orders.yaml`), on the embedded channel store.
//!
//! ```text
//! cargo run -p syncflow-examples --bin orders_branching            # run the file
//! cargo run -p syncflow-examples --bin orders_branching -- check examples/flows/orders.yaml
//! cargo run -p syncflow-examples --bin orders_branching -- channels target/orders-channels.redb
//! ```
//!
//! With no arguments it runs every flow of the file: `orders` parses and
//! validates the sample events and saves the valid orders into the
//! `valid_orders` channel; `rows` and `audit` each load that channel from
//! their own cursor, in parallel. Outputs go to `target/`; each flow's
//! summary to standard error.

use std::path::Path;
use std::process::ExitCode;

use syncflow_examples::orders::Catalog;

fn main() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = root.parent().unwrap_or(root).join("target");
    if let Err(e) = std::fs::create_dir_all(&out) {
        eprintln!("cannot create {}: {e}", out.display());
        return ExitCode::from(2);
    }
    // SAFETY: set before any thread is started.
    unsafe {
        if std::env::var_os("EXAMPLES_DIR").is_none() {
            std::env::set_var("EXAMPLES_DIR", root);
        }
        if std::env::var_os("OUT_DIR").is_none() {
            std::env::set_var("OUT_DIR", &out);
        }
    }
    let cli = syncflow::cli::Cli::new().resource(Catalog::sample());
    if std::env::args_os().len() > 1 {
        return cli.main();
    }
    // The dead-letter file is appended to: start the demo with a fresh one.
    let _ = std::fs::remove_file(out.join("orders-branching-dead-letters.jsonl"));
    let file = root.join("flows/orders.yaml");
    eprintln!("running every flow of {}", file.display());
    cli.main_with_args([
        "orders_branching".as_ref(),
        "run".as_ref(),
        file.as_os_str(),
    ])
}

//! The orders example: order change events → one warehouse row per order line.
//!
//! ```text
//! cargo run -p syncflow-examples --bin orders                 # the sample data, rows to stdout
//! cargo run -p syncflow-examples --bin orders -- functions    # every registered function
//! cargo run -p syncflow-examples --bin orders -- run orders --input events.jsonl --output rows.jsonl \
//!     --dead-letter dead.jsonl --workers 2 --state-dir .syncflow
//! ```
//!
//! With no arguments it runs the `orders` flow over `examples/data/orders.jsonl`:
//! rows go to standard output, the summary to standard error, and the events
//! that could not be processed (one cut-off line, five invalid orders) to
//! `target/orders-dead-letters.jsonl`, each with the reason and the line.

use std::path::Path;
use std::process::ExitCode;

use syncflow::prelude::*;
use syncflow_examples::orders::{Catalog, ChangeEvent, enrich, parse, to_row, validate};

/// Events of one order keep their order across workers: key by order id.
fn order_id(event: &ChangeEvent) -> Option<u64> {
    let image = event.after.as_ref().or(event.before.as_ref())?;
    image.get("id")?.as_u64()
}

fn main() -> ExitCode {
    let cli = syncflow::cli::Cli::new().keyed_flow(
        "orders",
        || {
            flow!(name = "orders", parse -> validate -> enrich -> to_row)
                .resource(Catalog::sample())
        },
        order_id,
    );
    if std::env::args_os().len() > 1 {
        return cli.main();
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let input = root.join("data/orders.jsonl");
    let dead = root
        .parent()
        .unwrap_or(root)
        .join("target/orders-dead-letters.jsonl");
    // The dead-letter file is appended to: start the demo with a fresh one.
    let _ = std::fs::remove_file(&dead);
    if let Some(dir) = dead.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        eprintln!("cannot create {} for the dead letters: {e}", dir.display());
        return ExitCode::from(2);
    }
    eprintln!("running the `orders` flow over {}", input.display());
    let code = cli.main_with_args([
        "orders".as_ref(),
        "run".as_ref(),
        "orders".as_ref(),
        "--input".as_ref(),
        input.as_os_str(),
        "--dead-letter".as_ref(),
        dead.as_os_str(),
        "--workers".as_ref(),
        "2".as_ref(),
    ]);
    eprintln!("dead letters (with reasons): {}", dead.display());
    code
}

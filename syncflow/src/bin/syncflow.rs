//! The stock `syncflow` binary: lists the functions linked into it.
//!
//! To run flows of your own, embed the command line in your binary:
//! `syncflow::cli::Cli::new().flow("orders", || flow!(...)).main()`.

fn main() -> std::process::ExitCode {
    syncflow::cli::main()
}

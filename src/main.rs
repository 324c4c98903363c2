//! The `paybridge` binary: everything lives in the library.

fn main() {
    if let Err(e) = paybridge::cli::main() {
        // The whole chain, in plain words, without a backtrace.
        eprintln!("paybridge: error: {}", paybridge::cli::error_message(&e));
        std::process::exit(1);
    }
}

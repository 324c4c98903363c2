//! The `paybridge` binary: everything lives in the library.

fn main() -> anyhow::Result<()> {
    paybridge::cli::main()
}

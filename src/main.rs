//! The `xblade` binary: everything lives in the library; errors are printed
//! for the operator and exit non-zero.

fn main() {
    if let Err(e) = xblade::cli::main() {
        eprintln!("xblade: error: {e:#}");
        std::process::exit(1);
    }
}

//! The `xblade` binary: everything lives in the library; errors are printed
//! for the operator and exit non-zero (1, or the code a command documents).

fn main() {
    if let Err(e) = xblade::cli::main() {
        let code = match e.downcast_ref::<xblade::cli::Exit>() {
            Some(x) => x.code,
            None => 1,
        };
        let msg = format!("{e:#}");
        if !msg.is_empty() {
            eprintln!("xblade: error: {msg}");
        }
        std::process::exit(code);
    }
}

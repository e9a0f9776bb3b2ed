//! `xblade-man [DIR]`: write the manual pages of xblade (and of its
//! `bench` subcommand, which xblade-bench serves) into DIR (default
//! target/man). Packaging only: scripts/build-deb.sh runs it.

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map_or_else(|| "target/man".into(), std::path::PathBuf::from);
    if let Err(e) = xblade_tools::man::write_man(&dir) {
        eprintln!("xblade-man: error: {e:#}");
        std::process::exit(1);
    }
}

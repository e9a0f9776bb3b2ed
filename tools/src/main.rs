//! `xblade-bench`: `xblade bench ...` and (hidden) `xblade conformance ...`,
//! which the daemon runs with its own arguments. Errors are printed for the
//! operator and exit 1.

use clap::Parser;

/// Benchmark an AoE target from this host (`compare`: side-by-side
/// comparison with vblade).
#[derive(Debug, Parser)]
#[command(name = "xblade-bench", version)]
struct Cli {
    #[command(flatten)]
    bench: xblade_tools::bench::BenchCli,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = xblade_tools::bench::main(cli.bench) {
        eprintln!("xblade: error: {e:#}");
        std::process::exit(1);
    }
}

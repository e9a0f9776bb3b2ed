//! The command line: vblade's positional form for drop-in use in scripts,
//! plus subcommands. Errors here are `anyhow`, for the operator.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::bdev::{DiskSpec, Source};
use crate::config::{
    self, Config, DatapathKind, ExportSpec, DEFAULT_BUFCNT, DEFAULT_SIZE_CHECK_SECS,
};
use crate::net::xdp::bpf::XdpMode;
use crate::net::xdp::socket::ZeroCopy;
use crate::net::xdp::steer::Steer;
use crate::net::xdp::XdpOptions;
use crate::wire::MacAddr;

mod ask;
mod cores;

use self::ask::{send_command, status};
use self::cores::check_cores;

/// xblade: an ATA-over-Ethernet target.
#[derive(Debug, Parser)]
#[command(
    name = "xblade",
    version,
    about = "ATA-over-Ethernet (AoE r11) target: AF_XDP + io_uring, AF_PACKET fallback",
    long_about = "Serves a file or block device as an AoE disk.\n\n\
        vblade-compatible form: xblade [-b BUFCNT] [-o OFFSET] [-l LENGTH] [-d] [-s] [-r] [-m MAC,...] SHELF SLOT NETIF FILE\n\
        Many exports and interfaces: xblade serve --config FILE.toml",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    vblade: VbladeArgs,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve every export of a TOML configuration file.
    Serve {
        /// Configuration file (TOML; the package installs a commented one as
        /// /etc/xblade/xblade.toml).
        #[arg(long, short = 'c')]
        config: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Check a configuration file as `serve` would, without serving.
    ///
    /// Parses and validates it, opens every backing store read-only (and a
    /// writable export's regular file for writing, writing nothing), checks
    /// offset and length against the store's size, looks up every
    /// interface, and looks for one store exported twice. Prints what would
    /// be served.
    #[command(after_help = "Exit status:\n  \
        0  serve would serve every export (warnings may be printed)\n  \
        1  the file is refused as a whole (unreadable, syntax, a bad value)\n  \
        2  bad command line\n  \
        3  the file is valid, but an export cannot be served now (store missing\n     \
        or too small; an interface missing, with --strict-interfaces)")]
    CheckConfig {
        /// Configuration file.
        config: PathBuf,
        /// A missing interface is an error (default: a warning, as a VLAN or
        /// bond may be created after xblade starts).
        #[arg(long)]
        strict_interfaces: bool,
        /// Exports that cannot be served now are warnings (exit 0): for a
        /// serve that starts the exports it can and retries the others.
        #[arg(long)]
        partial_ok: bool,
        /// Print only warnings and errors.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Print the xblade TOML equivalent of vblade's persistence files.
    #[command(after_help = "Exit status:\n  \
        0  every persistence file was imported\n  \
        1  nothing written (unreadable directory, existing output without --force)\n  \
        3  the TOML was written, but files were skipped (listed on standard error)")]
    ImportVblade {
        /// Directory of vblade persistence files.
        #[arg(long, default_value = "/etc/vblade.conf.d")]
        dir: PathBuf,
        /// Write the TOML here instead of standard output (refused if FILE
        /// exists, unless --force).
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// Overwrite the output file.
        #[arg(long)]
        force: bool,
    },
    /// Show running xblade processes: exports, interfaces, workers (queue,
    /// core, datapath, XDP mode), counters, disk I/O in flight.
    Status {
        /// Control socket (default: every socket in /run/xblade).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Refresh every SECS seconds until interrupted.
        #[arg(long, value_name = "SECS")]
        watch: Option<f64>,
    },
    /// Show per-worker counters of running xblade processes (with --watch,
    /// also per-second rates).
    Stats {
        /// Control socket (default: every socket in /run/xblade).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Refresh every SECS seconds until interrupted.
        #[arg(long, value_name = "SECS")]
        watch: Option<f64>,
    },
    /// Re-read the size of an export's backing store: grow the export if the
    /// store grew (and announce it so initiators re-read the capacity).
    /// Shrinking is refused.
    Resize {
        /// The export: SHELF.SLOT (or eSHELF.SLOT).
        #[arg(value_name = "SHELF.SLOT", value_parser = parse_target)]
        target: (u16, u8),
        /// Control socket (default: every socket in /run/xblade).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Re-read the configuration file of `xblade serve` and apply it live.
    ///
    /// Added exports start, removed ones stop, changed ones take read_only,
    /// mac_mask and config_string; a bad file changes nothing. Exits
    /// non-zero when the file was refused, or applied only in part (changes
    /// that need a restart are listed, and shown by `xblade status`).
    Reload {
        /// Control socket (default: every socket in /run/xblade).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Run the AoE r11 conformance check list against SHELF.SLOT through
    /// IFACE (`xblade conformance IFACE SHELF.SLOT [--expect-scnt N]`: a
    /// target this host cannot start itself, tests/scripts/75-xdp-zerocopy.sh).
    /// Served by xblade-bench.
    #[command(hide = true, disable_help_flag = true)]
    Conformance {
        /// Arguments of `xblade-bench conformance`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Benchmark an AoE target from this host (`xblade bench compare`:
    /// side-by-side comparison with vblade).
    #[command(disable_help_flag = true)]
    Bench {
        /// Arguments of xblade-bench (`xblade bench --help` lists them).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

/// Options shared by both forms.
#[derive(Debug, Args, Clone)]
struct RunArgs {
    /// Datapath: auto (XDP when it attaches, else AF_PACKET), afpacket, xdp.
    #[arg(long, value_enum)]
    datapath: Option<DatapathKind>,
    /// Pin worker i to core LIST[i] (comma-separated core ids).
    // The text is clap's help, not markdown.
    #[allow(rustdoc::broken_intra_doc_links)]
    #[arg(long, value_delimiter = ',')]
    cores: Vec<usize>,
    /// Control socket for `xblade stats` (default /run/xblade/xblade-PID.sock;
    /// "none" disables it).
    #[arg(long, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    /// Serve Prometheus metrics at ADDR (e.g. 127.0.0.1:9750); off by default.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// XDP: queues served per interface, one worker each (default: the
    /// interface's rx queue count).
    #[arg(long, value_name = "N")]
    queues: Option<u32>,
    /// XDP attach mode: auto (native, else generic), native, skb.
    #[arg(long, value_enum, value_name = "MODE")]
    xdp_mode: Option<XdpMode>,
    /// AF_XDP zero-copy: auto (try it, else copy mode), on, off.
    #[arg(long, value_enum, value_name = "MODE")]
    zero_copy: Option<ZeroCopy>,
    /// XDP with several queues: how frames reach the queue of their
    /// destination MAC (each queue answers from its own MAC, so initiators
    /// spread requests over the queues). auto: NIC ntuple rules by
    /// destination MAC if it has them, else queue 0 only; ntuple: those
    /// rules or fail; external: per-queue MACs, steered by the network;
    /// none: every queue answers from the port MAC.
    #[arg(long, value_enum, value_name = "MODE")]
    steer: Option<Steer>,
    /// XDP: busy-poll the NIC from the workers (SO_PREFER_BUSY_POLL,
    /// SO_BUSY_POLL) instead of relying on need_wakeup.
    #[arg(long)]
    busy_poll: bool,
    /// XDP: drop AoE requests for shelf.slots not served here in the XDP
    /// program (default: pass them to the kernel stack).
    #[arg(long)]
    xdp_drop_foreign: bool,
    /// XDP: microseconds a worker keeps polling its rings after its last
    /// work before sleeping (default 50; 0 sleeps at once). Spinning saves
    /// the wakeup per burst (window-1 latency) and costs CPU only while
    /// requests keep arriving.
    #[arg(long, value_name = "US")]
    spin_us: Option<u32>,
    /// Measurement only: answer READ/WRITE on the XDP datapath with no
    /// engine and no disk (reads return whatever the frame holds): the
    /// no-disk ceiling of `xblade bench compare`. Never for real use.
    #[arg(long, hide = true)]
    xdp_reflect: bool,
    /// Check the backing stores' sizes every SECS seconds and grow exports
    /// whose store grew (0: only on `xblade resize` or SIGHUP; default 5,
    /// or `size_check_interval` in the configuration).
    #[arg(long, value_name = "SECS")]
    size_check: Option<u64>,
    /// Refuse to start unless every export opens and serves on every
    /// interface (`all_or_nothing = true` in the configuration). Without
    /// it, an export or interface that cannot open is reported, retried
    /// and shown by `status` while the others serve.
    #[arg(long)]
    all_or_nothing: bool,
    /// rbd: exports: Ceph client id (client.ID in the keyring; default
    /// admin, or `rbd_id` in the configuration).
    #[arg(long, value_name = "ID")]
    rbd_id: Option<String>,
    /// rbd: exports: seconds a Ceph operation (and connecting) may take
    /// before the request fails with an ATA error (default 10, or
    /// `rbd_timeout` in the configuration).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    rbd_timeout: Option<u64>,
}

impl RunArgs {
    /// Let the command line override the configuration's XDP options.
    fn apply_xdp(&self, x: &mut XdpOptions) {
        if self.queues.is_some() {
            x.queues = self.queues;
        }
        if let Some(m) = self.xdp_mode {
            x.mode = m;
        }
        if let Some(z) = self.zero_copy {
            x.zero_copy = z;
        }
        if let Some(st) = self.steer {
            x.steer = st;
        }
        x.busy_poll |= self.busy_poll;
        if self.spin_us.is_some() {
            x.spin_us = self.spin_us;
        }
        x.drop_foreign |= self.xdp_drop_foreign;
        x.reflect |= self.xdp_reflect;
    }

    /// Let the command line override how `rbd:` exports reach Ceph.
    fn apply_rbd(&self, cfg: &mut Config) {
        for e in &mut cfg.exports {
            if let Some(id) = &self.rbd_id {
                e.disk.rbd.id = Some(id.clone());
            }
            if let Some(t) = self.rbd_timeout {
                e.disk.rbd.timeout = Duration::from_secs(t);
            }
        }
    }
}

/// vblade's options and positional arguments.
#[derive(Debug, Args)]
struct VbladeArgs {
    /// Buffer count advertised to initiators.
    #[arg(short = 'b', value_name = "BUFCNT")]
    bufcnt: Option<u16>,
    /// Offset into FILE, in 512-byte sectors.
    #[arg(short = 'o', value_name = "OFFSET", default_value_t = 0)]
    offset: u64,
    /// Exported length, in 512-byte sectors (default: to the end).
    #[arg(short = 'l', value_name = "LENGTH")]
    length: Option<u64>,
    /// Open FILE with O_DIRECT.
    #[arg(short = 'd')]
    direct: bool,
    /// Open FILE with O_SYNC (writes are durable by default anyway).
    #[arg(short = 's')]
    sync: bool,
    /// Export read-only.
    #[arg(short = 'r')]
    read_only: bool,
    /// Initial Mac Mask list: only these MACs may issue ATA commands.
    #[arg(short = 'm', value_name = "MAC[,MAC...]", value_delimiter = ',')]
    mac: Vec<MacAddr>,
    /// Acknowledge writes before they are on stable storage (faster, loses
    /// acknowledged writes on a crash).
    #[arg(long)]
    writeback: bool,
    /// Shelf (major address), 0-65534 (65535 is the broadcast shelf).
    #[arg(value_name = "SHELF", required = true, value_parser = clap::value_parser!(u16).range(0..=65534))]
    shelf: Option<u16>,
    /// Slot (minor address), 0-254 (255 is the broadcast slot).
    #[arg(value_name = "SLOT", required = true, value_parser = clap::value_parser!(u8).range(0..=254))]
    slot: Option<u8>,
    /// Network interface to serve on.
    #[arg(value_name = "NETIF", required = true)]
    netif: Option<String>,
    /// Backing file, block device, null:SIZE, or a Ceph RBD image
    /// rbd:POOL/IMAGE (rbd:POOL/NAMESPACE/IMAGE).
    #[arg(value_name = "FILE", required = true)]
    file: Option<String>,
}

/// Parse a vblade-style argument vector (`xblade [options] SHELF SLOT NETIF
/// FILE`) into an export, exactly as the command line would.
pub(crate) fn parse_vblade_args(argv: &[String]) -> Result<ExportSpec> {
    #[derive(Debug, Parser)]
    #[command(name = "vblade")]
    struct Only {
        #[command(flatten)]
        vblade: VbladeArgs,
    }
    let only = Only::try_parse_from(argv).map_err(|e| {
        let msg = e.to_string();
        anyhow::anyhow!(
            "{}",
            msg.lines()
                .next()
                .unwrap_or("bad arguments")
                .trim_start_matches("error: ")
        )
    })?;
    let mut cfg = only.vblade.to_config()?;
    Ok(cfg.exports.remove(0))
}

/// An error that ends the process with a code of its own (each command's
/// codes are in its `--help`); other errors exit 1.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    /// Process exit status.
    pub code: i32,
    /// For the operator (empty: everything was said already).
    pub message: String,
}

fn import_vblade(
    dir: &std::path::Path,
    output: Option<&std::path::Path>,
    force: bool,
) -> Result<()> {
    if let Some(p) = output.filter(|p| !force && p.exists()) {
        bail!(
            "{} exists: not overwritten (--force overwrites it)",
            p.display()
        );
    }
    let r = crate::import_vblade::import_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?;
    for s in &r.skipped {
        eprintln!("xblade: skipped {}: {}", s.path.display(), s.reason);
    }
    match output {
        Some(p) => {
            // A whole file or none: written aside, then renamed over.
            let tmp = p.with_extension("xblade-tmp");
            std::fs::write(&tmp, &r.toml)
                .and_then(|()| std::fs::rename(&tmp, p))
                .with_context(|| format!("writing {}", p.display()))?;
            eprintln!("xblade: wrote {} export(s) to {}", r.exports, p.display());
        }
        None => print!("{}", r.toml),
    }
    if !r.skipped.is_empty() {
        return Err(Exit {
            code: 3,
            message: format!(
                "{} persistence file(s) skipped (see above); {} export(s) imported",
                r.skipped.len(),
                r.exports
            ),
        }
        .into());
    }
    Ok(())
}

impl VbladeArgs {
    fn to_config(&self) -> Result<Config> {
        let (Some(shelf), Some(slot), Some(netif), Some(file)) =
            (self.shelf, self.slot, self.netif.clone(), self.file.clone())
        else {
            bail!("usage: xblade [options] SHELF SLOT NETIF FILE (see --help)");
        };
        let source = Source::parse(&file)?;
        let cfg = Config {
            exports: vec![ExportSpec {
                shelf,
                slot,
                disk: DiskSpec {
                    source,
                    offset_sectors: self.offset,
                    length_sectors: self.length,
                    read_only: self.read_only,
                    direct: self.direct,
                    sync: self.sync,
                    writeback: self.writeback,
                    rbd: Default::default(),
                },
                interfaces: vec![netif],
                bufcnt: self.bufcnt.unwrap_or(DEFAULT_BUFCNT),
                mac_mask: self.mac.clone(),
                config_string: Vec::new(),
            }],
            datapath: DatapathKind::Auto,
            xdp: XdpOptions::default(),
            size_check_secs: DEFAULT_SIZE_CHECK_SECS,
            // One export: serving it or nothing, as vblade does.
            all_or_nothing: true,
        };
        config::validate(&cfg)?;
        Ok(cfg)
    }
}

/// The log filter from `XBLADE_LOG` (default `info`). A value that would
/// silence the log by mistake is refused: a bare word that is no level
/// (`debgu`) is taken by tracing as a target name and turns every other
/// line off, the `--writeback` data-loss warning included.
fn log_filter() -> Result<tracing_subscriber::EnvFilter> {
    let Ok(v) = std::env::var("XBLADE_LOG") else {
        return Ok(tracing_subscriber::EnvFilter::new("info"));
    };
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for d in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let level = d.rsplit_once('=').map_or(d, |(_, l)| l);
        let bare_target = !d.contains('=') && (d.contains("::") || d.starts_with("xblade"));
        if !bare_target && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            bail!(
                "XBLADE_LOG={v:?}: {level:?} is not a log level (use {}, or TARGET=LEVEL)",
                LEVELS.join(", ")
            );
        }
    }
    tracing_subscriber::EnvFilter::try_new(&v).map_err(|e| anyhow::anyhow!("XBLADE_LOG={v:?}: {e}"))
}

fn init_logging() -> Result<()> {
    let filter = log_filter()?;
    crate::logging::init(filter);
    Ok(())
}

/// The visible subcommands' names.
fn subcommand_names() -> Vec<String> {
    Cli::command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_string())
        .collect()
}

/// Edit distance with adjacent transpositions (optimal string alignment:
/// `stauts` is one edit from `status`), for subcommand suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, v) in d[0].iter_mut().enumerate() {
        *v = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Bare `xblade` shows the help (subcommands included); a first word that
/// is neither a subcommand nor a shelf number is answered with the nearest
/// subcommand, rather than clap's "invalid value for SHELF".
fn precheck_args(args: &[std::ffi::OsString]) -> Result<()> {
    if args.len() <= 1 {
        let mut cmd = Cli::command();
        let _ = cmd.print_help();
        return Err(Exit {
            code: 2,
            message: String::new(),
        }
        .into());
    }
    let Some(first) = args[1].to_str().filter(|a| !a.starts_with('-')) else {
        return Ok(());
    };
    let names = subcommand_names();
    let all: Vec<String> = Cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    if first.parse::<u64>().is_ok() || first == "help" || all.iter().any(|n| n == first) {
        return Ok(());
    }
    let dist: Vec<(usize, &String)> = names
        .iter()
        .map(|n| (edit_distance(first, n), n))
        .filter(|(d, n)| *d <= 2 || n.starts_with(first))
        .collect();
    let best = dist.iter().map(|(d, _)| *d).min();
    let near: Vec<String> = dist
        .iter()
        .filter(|(d, _)| Some(*d) == best)
        .map(|(_, n)| format!("'{n}'"))
        .collect();
    let hint = match near.len() {
        0 => String::new(),
        _ => format!("did you mean {}? ", near.join(" or ")),
    };
    Err(Exit {
        code: 2,
        message: format!(
            "'{first}' is neither a subcommand nor a SHELF number: {hint}(subcommands: {}; vblade form: xblade [OPTIONS] SHELF SLOT NETIF FILE; see xblade --help)",
            names.join(", ")
        ),
    }
    .into())
}

/// Entry point of the binary.
pub fn main() -> Result<()> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    precheck_args(&args)?;
    let cli = Cli::parse_from(args);
    init_logging()?;
    match cli.command {
        Some(Command::Serve { config, mut run }) => {
            let top = cli.run.datapath;
            let (cfg, svc) = load_serve_config(&config, &run, top)?;
            // The command line wins over [service].
            if run.cores.is_empty() {
                run.cores = svc.cores;
            }
            if run.control_socket.is_none() {
                run.control_socket = svc.control_socket;
            }
            if run.metrics.is_none() {
                run.metrics = svc.metrics;
            }
            let loader: crate::service::Loader = {
                let (config, run) = (config.clone(), run.clone());
                Box::new(move || load_serve_config(&config, &run, top).map(|(c, _)| c))
            };
            serve(cfg, &run, Some((config, loader)))
        }
        Some(Command::Status {
            socket,
            json,
            watch,
        }) => status(socket, json, watch, true),
        Some(Command::Stats {
            socket,
            json,
            watch,
        }) => status(socket, json, watch, false),
        Some(Command::Resize { target, socket }) => {
            send_command(socket, crate::control::Command::Resize(target.0, target.1))
        }
        Some(Command::Reload { socket }) => send_command(socket, crate::control::Command::Reload),
        Some(Command::Conformance { args }) => run_tool(Some("conformance"), args),
        Some(Command::Bench { args }) => run_tool(None, args),
        Some(Command::ImportVblade { dir, output, force }) => {
            import_vblade(&dir, output.as_deref(), force)
        }
        Some(Command::CheckConfig {
            config,
            strict_interfaces,
            partial_ok,
            quiet,
        }) => check_config(
            &config,
            crate::check_config::CheckOptions {
                strict_interfaces,
                partial_ok,
            },
            quiet,
        ),
        None => {
            let mut cfg = cli.vblade.to_config()?;
            if let Some(d) = cli.run.datapath {
                cfg.datapath = d;
            }
            cli.run.apply_xdp(&mut cfg.xdp);
            cli.run.apply_rbd(&mut cfg);
            if let Some(s) = cli.run.size_check {
                cfg.size_check_secs = s;
            }
            config::validate(&cfg)?;
            serve(cfg, &cli.run, None)
        }
    }
}

/// `xblade check-config`: the report, then the exit code it deserves.
fn check_config(path: &Path, opts: crate::check_config::CheckOptions, quiet: bool) -> Result<()> {
    let refused = |e: String| Exit {
        code: crate::check_config::EXIT_INVALID,
        message: format!("{e}: refused, serve would not start"),
    };
    let r = crate::check_config::check_file(path, opts).map_err(|e| refused(e.to_string()))?;
    // [service], as serve would take it.
    let (_, svc) = config::load_with_service(path).map_err(|e| refused(e.to_string()))?;
    check_cores(&svc.cores)
        .and_then(|()| control_socket_path(svc.control_socket.as_deref()).map(drop))
        .map_err(|e| refused(format!("{}: [service] {e:#}", path.display())))?;
    if !quiet {
        for e in &r.exports {
            println!("{e}");
        }
    }
    for w in &r.warnings {
        eprintln!("xblade: warning: {w}");
    }
    for e in &r.errors {
        eprintln!("xblade: error: {e}");
    }
    let n = r.exports.len();
    if r.errors.is_empty() {
        if !quiet {
            println!("{}: ok, {n} export(s)", path.display());
            if n == 0 {
                println!("(no export: xblade serve would start idle and serve what a reload adds)");
            }
        }
        return Ok(());
    }
    Err(Exit {
        code: r.exit_code(),
        message: format!(
            "{}: {} problem(s): not every export can be served now",
            path.display(),
            r.errors.len()
        ),
    }
    .into())
}

/// One export's address (never the broadcast shelf or slot).
fn parse_target(s: &str) -> Result<(u16, u8), crate::wire::target::TargetError> {
    crate::wire::target::parse_target(s, crate::wire::target::Broadcast::Refuse)
}

/// The configuration of `xblade serve`: the file, then the command line's
/// overrides; validated. Also what a reload re-reads.
fn load_serve_config(
    path: &Path,
    run: &RunArgs,
    top: Option<DatapathKind>,
) -> Result<(Config, config::ServiceSettings)> {
    let (mut cfg, svc) = config::load_with_service(path)?;
    if let Some(d) = run.datapath.or(top) {
        cfg.datapath = d;
    }
    run.apply_xdp(&mut cfg.xdp);
    run.apply_rbd(&mut cfg);
    if let Some(s) = run.size_check {
        cfg.size_check_secs = s;
    }
    cfg.all_or_nothing |= run.all_or_nothing;
    config::validate(&cfg)?;
    Ok((cfg, svc))
}

/// The tools binary: `xblade bench` and `xblade conformance` run it.
pub(crate) const TOOLS_BIN: &str = "xblade-bench";

/// `xblade bench ARGS` and `xblade conformance ARGS`: exec xblade-bench
/// (package xblade-tools) with them, found beside this binary first
/// (`target/release/`, `/usr/sbin/`), then in PATH. The daemon links none
/// of the benchmark's crates; the operator's command stays the same. Its
/// `argv[0]` is what the operator typed, so that its usage lines say so.
fn run_tool(subcommand: Option<&str>, args: Vec<OsString>) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().ok();
    let beside = me
        .as_deref()
        .map(|e| e.with_file_name(TOOLS_BIN))
        .filter(|p| p.is_file());
    let prog = beside.clone().unwrap_or_else(|| PathBuf::from(TOOLS_BIN));
    let arg0 = match subcommand {
        Some(_) => "xblade",
        None => "xblade bench",
    };
    let err = std::process::Command::new(&prog)
        .arg0(arg0)
        .args(subcommand)
        .args(&args)
        .exec();
    if err.kind() == std::io::ErrorKind::NotFound && beside.is_none() {
        let dir = me.as_deref().and_then(Path::parent).map_or_else(
            || "this binary's directory".into(),
            |d| d.display().to_string(),
        );
        bail!(
            "xblade {}: {TOOLS_BIN} not found (neither in {dir} nor in PATH): it is the binary of the xblade-tools package (the xblade .deb installs it beside xblade; from source: cargo build --release -p xblade-tools)",
            subcommand.unwrap_or("bench")
        );
    }
    Err(err).with_context(|| format!("running {}", prog.display()))
}

fn serve(
    cfg: Config,
    run: &RunArgs,
    config: Option<(PathBuf, crate::service::Loader)>,
) -> Result<()> {
    let control_socket = control_socket_path(run.control_socket.as_deref())?;
    check_cores(&run.cores)?;
    crate::service::run(
        cfg,
        crate::service::Options {
            cores: run.cores.clone(),
            control_socket,
            metrics: run.metrics,
            config,
        },
    )
}

/// The control socket to open: `--control-socket` (or `[service]`), "none"
/// for none, else the default. Only the default directory is created: a
/// typo must not leave directories behind.
fn control_socket_path(asked: Option<&Path>) -> Result<Option<PathBuf>> {
    match asked {
        Some(p) if p.as_os_str() == "none" => Ok(None),
        Some(p) => {
            let dir = p.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(d) = dir.filter(|d| !d.is_dir()) {
                bail!(
                    "--control-socket {}: directory {} does not exist (it is not created)",
                    p.display(),
                    d.display()
                );
            }
            Ok(Some(p.to_path_buf()))
        }
        None => Ok(Some(crate::control::default_socket())),
    }
}

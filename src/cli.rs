//! The command line: vblade's positional form for drop-in use in scripts,
//! plus subcommands. Errors here are `anyhow`, for the operator.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tracing::info;

use crate::config::{self, Config, DatapathKind, ExportSpec, DEFAULT_BUFCNT};
use crate::datapath::xdp::bpf::XdpMode;
use crate::datapath::xdp::socket::ZeroCopy;
use crate::datapath::xdp::XdpOptions;
use crate::disk::{DiskSpec, Source};
use crate::server::Server;
use crate::wire::MacAddr;

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
        /// Configuration file (see xblade.example.toml).
        #[arg(long, short = 'c')]
        config: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Check a configuration file and print what it would serve.
    CheckConfig {
        /// Configuration file.
        config: PathBuf,
    },
    /// Print the xblade TOML equivalent of vblade's persistence files.
    ImportVblade {
        /// Directory of vblade persistence files.
        #[arg(long, default_value = "/etc/vblade.conf.d")]
        dir: PathBuf,
        /// Write the TOML here instead of standard output.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
    },
    /// Show exports and per-queue counters of running xblade processes.
    #[command(alias = "status")]
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
}

/// Options shared by both forms.
#[derive(Debug, Args, Clone)]
struct RunArgs {
    /// Datapath: auto (XDP when it attaches, else AF_PACKET), afpacket, xdp.
    #[arg(long, value_enum)]
    datapath: Option<DatapathKind>,
    /// Pin worker i to core LIST[i] (comma-separated core ids).
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
    /// XDP: busy-poll the NIC from the workers (SO_PREFER_BUSY_POLL,
    /// SO_BUSY_POLL) instead of relying on need_wakeup.
    #[arg(long)]
    busy_poll: bool,
    /// XDP: drop AoE requests for shelf.slots not served here in the XDP
    /// program (default: pass them to the kernel stack).
    #[arg(long)]
    xdp_drop_foreign: bool,
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
        x.busy_poll |= self.busy_poll;
        x.drop_foreign |= self.xdp_drop_foreign;
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
    /// Shelf (major address), 0-65534.
    #[arg(value_name = "SHELF", required = true)]
    shelf: Option<u16>,
    /// Slot (minor address), 0-254.
    #[arg(value_name = "SLOT", required = true)]
    slot: Option<u8>,
    /// Network interface to serve on.
    #[arg(value_name = "NETIF", required = true)]
    netif: Option<String>,
    /// Backing file, block device, or null:SIZE.
    #[arg(value_name = "FILE", required = true)]
    file: Option<String>,
}

/// Parse a vblade-style argument vector (`xblade [options] SHELF SLOT NETIF
/// FILE`) into an export, exactly as the command line would.
pub fn parse_vblade_args(argv: &[String]) -> Result<ExportSpec> {
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

fn import_vblade(dir: &std::path::Path, output: Option<&std::path::Path>) -> Result<()> {
    let r = crate::import_vblade::import_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?;
    for s in &r.skipped {
        eprintln!("xblade: skipped {}: {}", s.path.display(), s.reason);
    }
    match output {
        Some(p) => {
            std::fs::write(p, &r.toml).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("xblade: wrote {} export(s) to {}", r.exports, p.display());
        }
        None => print!("{}", r.toml),
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
                },
                interfaces: vec![netif],
                bufcnt: self.bufcnt.unwrap_or(DEFAULT_BUFCNT),
                mac_mask: self.mac.clone(),
                config_string: Vec::new(),
            }],
            datapath: DatapathKind::Auto,
            xdp: XdpOptions::default(),
        };
        config::validate(&cfg)?;
        Ok(cfg)
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("XBLADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Entry point of the binary.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Some(Command::Serve { config, run }) => {
            let mut cfg = config::load(&config)?;
            if let Some(d) = run.datapath.or(cli.run.datapath) {
                cfg.datapath = d;
            }
            run.apply_xdp(&mut cfg.xdp);
            config::validate(&cfg)?;
            serve(cfg, &run)
        }
        Some(Command::Stats {
            socket,
            json,
            watch,
        }) => stats(socket, json, watch),
        Some(Command::ImportVblade { dir, output }) => import_vblade(&dir, output.as_deref()),
        Some(Command::CheckConfig { config }) => {
            let cfg = config::load(&config)?;
            for e in &cfg.exports {
                println!(
                    "{}.{} {:?} on {} (read_only={}, direct={}, writeback={})",
                    e.shelf,
                    e.slot,
                    e.disk.source,
                    e.interfaces.join(","),
                    e.disk.read_only,
                    e.disk.direct,
                    e.disk.writeback
                );
            }
            println!("{}: ok, {} export(s)", config.display(), cfg.exports.len());
            Ok(())
        }
        None => {
            let mut cfg = cli.vblade.to_config()?;
            if let Some(d) = cli.run.datapath {
                cfg.datapath = d;
            }
            cli.run.apply_xdp(&mut cfg.xdp);
            config::validate(&cfg)?;
            serve(cfg, &cli.run)
        }
    }
}

fn stats(socket: Option<PathBuf>, json: bool, watch: Option<f64>) -> Result<()> {
    loop {
        let sockets = match &socket {
            Some(s) => vec![s.clone()],
            None => crate::control::discover_sockets(),
        };
        if sockets.is_empty() {
            bail!(
                "no running xblade found (no control socket in {})",
                crate::control::SOCKET_DIR
            );
        }
        let mut found = 0;
        for s in &sockets {
            match crate::control::query(s) {
                Ok(st) => {
                    found += 1;
                    if json {
                        println!("{}", serde_json::to_string(&st)?);
                    } else {
                        print!("{}", crate::control::render(&st));
                    }
                }
                Err(e) if socket.is_some() => {
                    return Err(e).with_context(|| format!("querying {}", s.display()))
                }
                // A socket left by a killed process: skip it.
                Err(_) => {}
            }
        }
        if found == 0 {
            bail!("no running xblade answered on {:?}", sockets);
        }
        match watch {
            Some(secs) if secs > 0.0 => std::thread::sleep(Duration::from_secs_f64(secs)),
            _ => return Ok(()),
        }
    }
}

fn serve(cfg: Config, run: &RunArgs) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .context("installing signal handlers")?;
    let server = Server::start(&cfg, &run.cores)?;
    let socket = match &run.control_socket {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None => Some(crate::control::default_socket()),
    };
    let _control = crate::control::start(
        crate::control::Sources {
            datapath: server.datapath.clone(),
            exports: server.exports.clone(),
            stats: server.stats.clone(),
        },
        socket.as_deref(),
        run.metrics,
    )
    .context("starting the control plane")?;
    info!(
        exports = cfg.exports.len(),
        "xblade serving; SIGINT or SIGTERM to stop"
    );
    let handle = signals.handle();
    let mut stop_reason = None;
    while stop_reason.is_none() {
        for sig in signals.pending() {
            match sig {
                SIGHUP => {
                    info!("SIGHUP: announcing exports again");
                    server.announce();
                }
                s => stop_reason = Some(s),
            }
        }
        if !server.healthy() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    handle.close();
    info!(signal = ?stop_reason, "stopping: finishing in-flight requests");
    server.stop().context("a worker failed")?;
    info!("stopped");
    Ok(())
}

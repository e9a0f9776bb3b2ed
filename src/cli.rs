//! The command line: vblade's positional form for drop-in use in scripts,
//! plus subcommands. Errors here are `anyhow`, for the operator.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// Re-read the configuration file of `xblade serve` and apply it live:
    /// added exports start, removed ones stop, changed ones take read_only,
    /// mac_mask and config_string; a bad file changes nothing.
    Reload {
        /// Control socket (default: every socket in /run/xblade).
        #[arg(long)]
        socket: Option<PathBuf>,
    },
    /// Write the manual pages (xblade.8 and one per subcommand) into DIR.
    #[command(hide = true)]
    Man {
        /// Output directory.
        #[arg(long, default_value = "target/man")]
        dir: PathBuf,
    },
    /// Run the AoE r11 conformance check list against SHELF.SLOT through
    /// IFACE (a target this host cannot start itself: tests/scripts/75).
    /// Writes to the export's first 64 and last sectors.
    #[command(hide = true)]
    Conformance {
        /// Interface facing the target.
        iface: String,
        /// The export: SHELF.SLOT (or eSHELF.SLOT).
        #[arg(value_name = "SHELF.SLOT", value_parser = parse_target)]
        target: (u16, u8),
        /// Sectors per request the target must advertise.
        #[arg(long)]
        expect_scnt: Option<u8>,
    },
    // ---- xblade bench (src/bench/) ----
    /// Benchmark an AoE target from this host (`xblade bench compare`:
    /// side-by-side comparison with vblade).
    Bench(Box<crate::bench::BenchCli>),
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
    /// Shelf (major address), 0-65534.
    #[arg(value_name = "SHELF", required = true)]
    shelf: Option<u16>,
    /// Slot (minor address), 0-254.
    #[arg(value_name = "SLOT", required = true)]
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
            let top = cli.run.datapath;
            let cfg = load_serve_config(&config, &run, top)?;
            let loader: crate::service::Loader = {
                let (config, run) = (config.clone(), run.clone());
                Box::new(move || load_serve_config(&config, &run, top))
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
        Some(Command::Man { dir }) => write_man(&dir),
        Some(Command::Conformance {
            iface,
            target: (shelf, slot),
            expect_scnt,
        }) => {
            let (report, failed) =
                crate::initiator::conformance::run(&iface, shelf, slot, expect_scnt);
            print!("{report}");
            if failed > 0 {
                anyhow::bail!(
                    "{failed} conformance check(s) failed against {shelf}.{slot} on {iface}"
                );
            }
            println!("conformance: all checks passed against {shelf}.{slot} on {iface}");
            Ok(())
        }
        Some(Command::Bench(b)) => crate::bench::main(*b),
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
            if cfg.exports.is_empty() {
                println!("(no export: xblade serve would start idle and serve what a reload adds)");
            }
            Ok(())
        }
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

fn parse_target(s: &str) -> Result<(u16, u8), String> {
    crate::control::parse_target(s)
        .ok_or_else(|| format!("{s:?}: expected SHELF.SLOT, e.g. 1.2 (shelf 0-65534, slot 0-254)"))
}

/// The configuration of `xblade serve`: the file, then the command line's
/// overrides; validated. Also what a reload re-reads.
fn load_serve_config(path: &Path, run: &RunArgs, top: Option<DatapathKind>) -> Result<Config> {
    let mut cfg = config::load(path)?;
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
    Ok(cfg)
}

/// Write xblade.8 and xblade-SUBCOMMAND.8 (visible subcommands) into `dir`.
fn write_man(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let cmd = Cli::command().name("xblade");
    let mut pages = vec![("xblade".to_string(), cmd.clone())];
    for sub in cmd.get_subcommands().filter(|c| !c.is_hide_set()) {
        let name = format!("xblade-{}", sub.get_name());
        let c = sub
            .clone()
            .display_name(name.clone())
            .bin_name(format!("xblade {}", sub.get_name()));
        pages.push((name, c));
    }
    for (name, c) in pages {
        let mut out = Vec::new();
        clap_mangen::Man::new(c)
            .section("8")
            .manual("System Administration")
            .source(format!("xblade {}", env!("CARGO_PKG_VERSION")))
            .render(&mut out)?;
        let path = dir.join(format!("{name}.8"));
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xblade: wrote {}", path.display());
    }
    Ok(())
}

/// The control sockets to talk to: the one given, or every one found.
fn sockets(socket: &Option<PathBuf>) -> Result<Vec<PathBuf>> {
    let v = match socket {
        Some(s) => vec![s.clone()],
        None => crate::control::discover_sockets(),
    };
    if v.is_empty() {
        bail!(
            "no running xblade found (no control socket in {}; --socket PATH names one)",
            crate::control::SOCKET_DIR
        );
    }
    Ok(v)
}

/// `xblade resize` / `xblade reload`: ask every running xblade (or the one
/// at `socket`); succeed if one did it.
fn send_command(socket: Option<PathBuf>, cmd: crate::control::Command) -> Result<()> {
    let mut done = 0;
    let mut refusals = Vec::new();
    for s in sockets(&socket)? {
        match crate::control::command(&s, &cmd) {
            Ok(Ok(m)) => {
                println!("{m}");
                done += 1;
            }
            Ok(Err(e)) => refusals.push(format!("{}: {e}", s.display())),
            Err(e) if socket.is_some() => {
                return Err(e).with_context(|| format!("asking {}", s.display()))
            }
            // A socket left by a killed process.
            Err(e) if stale(&e) => {}
            Err(e) => refusals.push(format!("{}: {e}", s.display())),
        }
    }
    if done == 0 {
        match refusals.len() {
            0 => bail!("no running xblade answered"),
            1 if socket.is_some() => bail!(
                "{}",
                refusals[0]
                    .split_once(": ")
                    .map_or(refusals[0].as_str(), |x| x.1)
            ),
            _ => bail!("{}", refusals.join("\n")),
        }
    }
    Ok(())
}

/// `xblade status` (`full`) and `xblade stats`.
fn status(socket: Option<PathBuf>, json: bool, watch: Option<f64>, full: bool) -> Result<()> {
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut prev: Vec<(PathBuf, crate::control::Status, Instant)> = Vec::new();
    loop {
        let list = sockets(&socket)?;
        let mut found = 0;
        let mut out = String::new();
        let mut now = Vec::new();
        for s in &list {
            match crate::control::query(s) {
                Ok(st) => {
                    found += 1;
                    if json {
                        out.push_str(&serde_json::to_string(&st)?);
                        out.push('\n');
                    } else if full {
                        out.push_str(&crate::control::render_status(&st));
                    } else {
                        let p = prev
                            .iter()
                            .find(|(q, _, _)| q == s)
                            .map(|(_, st, t)| (st, t.elapsed().as_secs_f64()));
                        out.push_str(&crate::control::render_counters(&st, p));
                    }
                    now.push((s.clone(), st, Instant::now()));
                }
                Err(e) if socket.is_some() => {
                    return Err(e).with_context(|| format!("querying {}", s.display()))
                }
                // A socket left by a killed process: skip it.
                Err(e) if stale(&e) => {}
                // A live process that does not answer: say so, go on.
                Err(e) => {
                    eprintln!("xblade: querying {}: {e}", s.display());
                }
            }
        }
        if found == 0 {
            bail!("no running xblade answered on {:?}", list);
        }
        match watch {
            Some(secs) if secs > 0.0 => {
                if tty && !json {
                    // Clear the screen: a live view.
                    print!("\x1b[H\x1b[2J");
                }
                print!("{out}");
                if !tty || json {
                    println!();
                }
                prev = now;
                std::thread::sleep(Duration::from_secs_f64(secs));
            }
            _ => {
                print!("{out}");
                return Ok(());
            }
        }
    }
}

fn serve(
    cfg: Config,
    run: &RunArgs,
    config: Option<(PathBuf, crate::service::Loader)>,
) -> Result<()> {
    let control_socket = match &run.control_socket {
        Some(p) if p.as_os_str() == "none" => None,
        Some(p) => Some(p.clone()),
        None => Some(crate::control::default_socket()),
    };
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

/// A control socket left by a process that is gone (refused, or removed
/// since it was listed): skipped when sockets are discovered.
fn stale(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
    )
}

#!/usr/bin/env python3
"""AoE against iSCSI and NBD on one veth link: the driver behind benches/protocols.sh.

Why a separate program: every cell needs exact bookkeeping around one
initiator run (the target's CPU from /proc before and after, the initiator's
own CPU from wait4's rusage, the link's frame and byte counters, TCP
counters) and the results are aggregated into medians, ranges, a table, JSON
and an SVG. That is awkward in bash; the shell wrapper keeps the traps that
must run whatever happens to this process.

Each cell runs one initiator process from start to exit. CPU per request is
(CPU over the initiator's whole life) / (requests over its whole life) on
both sides, so connection setup is inside the figure (a few ms against
about a second of load; it is why cells are not shorter). Requests/s and
MB/s are the initiator's own figure over its timed window.

Standard library only (python3 is in scripts/setup.sh already).
"""

import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

NS_T, NS_I = "xp-t", "xp-i"
IF_T, IF_I = "xpt", "xpi"
ADDR_T, ADDR_I = "169.254.213.1", "169.254.213.2"
IQN = "iqn.2026-12.org.xblade:xp-protocols"
NBDKIT_PORT, QEMU_NBD_PORT, ISCSI_PORT = 10809, 10810, 3260
# Bytes of Ethernet + IPv4 + TCP (with timestamps) headers per packet the
# link counts (a GSO/GRO packet on veth carries one set of them).
L234 = 14 + 20 + 32
# Protocol header bytes per request in the data direction (lowest, highest):
# iSCSI: one 48-byte BHS (Data-In with status, or SCSI Command with
# immediate data), two when the status travels apart; NBD: a 16-byte simple
# reply, a 28-byte write request.
PROTO_HDR = {"iSCSI": (48, 96), "NBD": (16, 32)}
# Handshake/login/ACK-only bytes a cell may add in the data direction.
TCP_SLACK = 64 * 1024

CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg):
    print(f"protocols: {msg}", file=sys.stderr, flush=True)


class Fatal(Exception):
    """An error that ends the run with a clear message."""


# --------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class Workload:
    mtu: int
    size: int
    op: str  # read | write
    depth: int
    backing: str  # page | direct

    def label(self):
        b = "page cache" if self.backing == "page" else "O_DIRECT"
        return f"{self.size // 1024} KiB {self.op}, depth {self.depth}, MTU {self.mtu}, {b}"

    def key(self):
        return f"{self.size // 1024}k-{self.op}-d{self.depth}-mtu{self.mtu}-{self.backing}"


@dataclass(frozen=True)
class Target:
    name: str
    proto: str  # AoE | iSCSI | NBD
    backings: tuple
    mtus: tuple = (1500, 9000)


TARGETS = [
    Target("xblade XDP", "AoE", ("page", "direct")),
    # The fallback datapath for NICs without XDP: its point is made at
    # 1 KiB (`bench compare` has it at MTU 9000 too); the run stays short.
    Target("xblade AF_PACKET", "AoE", ("page",), (1500,)),
    Target("vblade", "AoE", ("page", "direct")),
    Target("tgtd", "iSCSI", ("page", "direct")),
    Target("nbdkit", "NBD", ("page",)),
    # nbdkit 1.32's file plugin has no O_DIRECT (cache=none only evicts
    # pages after the fact): qemu-nbd --cache=none is the NBD O_DIRECT row.
    Target("qemu-nbd", "NBD", ("direct",), (9000,)),
]


def workloads(smoke):
    if smoke:
        return [
            Workload(1500, 1024, "read", 64, "page"),
            Workload(1500, 1024, "write", 1, "page"),
            Workload(9000, 4096, "read", 64, "direct"),
            Workload(9000, 4096, "write", 64, "direct"),
        ]
    w = []
    for mtu, sizes in ((1500, (1024,)), (9000, (4096, 8192))):
        for size in sizes:
            for depth in (64, 1):
                for op in ("read", "write"):
                    w.append(Workload(mtu, size, op, depth, "page"))
    for depth in (64, 1):
        for op in ("read", "write"):
            w.append(Workload(9000, 4096, op, depth, "direct"))
    return w


def initiator_name(t, wl):
    if t.proto == "AoE":
        return "xblade bench"
    if t.proto == "NBD":
        return "fio --ioengine=nbd"
    return "iscsi-perf" if wl.op == "read" else "qemu-img bench"


# --------------------------------------------------------------------------
# Processes


def sh(*argv, check=True, capture=True):
    r = subprocess.run(list(argv), capture_output=capture, text=True)
    if check and r.returncode != 0:
        raise Fatal(f"{' '.join(argv)}: exit {r.returncode}: {(r.stderr or '').strip()[-400:]}")
    return r


def start_time(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            s = f.read()
        return int(s[s.rfind(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def proc_cpu(pid):
    """utime + stime of every thread of `pid` (live and exited), seconds.

    /proc/PID/stat rather than summing /proc/PID/task/*/stat: the latter
    loses the time of threads that exited during the cell (nbdkit's
    per-connection threads end with the connection).
    """
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    fields = s[s.rfind(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_threads(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def in_netns(pid, ns):
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return False


def net_dev(pid, iface):
    """(rx_bytes, rx_packets, tx_bytes, tx_packets, rx_drop, tx_drop) of
    `iface` in the netns of `pid`."""
    with open(f"/proc/{pid}/net/dev") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name.strip() == iface:
                v = [int(x) for x in rest.split()]
                return v[0], v[1], v[8], v[9], v[3], v[11]
    raise Fatal(f"{iface} not in /proc/{pid}/net/dev")


def tcp_counters(pid):
    """Tcp: counters (the ones nstat shows as TcpOutSegs, ...) of the netns of `pid`."""
    with open(f"/proc/{pid}/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}


class Procs:
    """Every process this run starts, so that each one is stopped by pid.

    The pid file (pid and start time per line) lets protocols.sh stop
    whatever is left if this program itself dies.
    """

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.live = {}

    def spawn(self, ns, core, argv, logpath, stdin=subprocess.DEVNULL):
        logf = open(logpath, "ab")

        def pre():
            # A session (an autogroup) of its own, ahead of other sessions:
            # on a machine shared with other jobs the scheduler otherwise
            # gives the whole run one session's share of each core (the
            # same as `xblade bench compare` does).
            os.setsid()
            try:
                with open("/proc/self/autogroup", "w") as f:
                    f.write("-19")
            except OSError:
                pass

        cmd = ["ip", "netns", "exec", ns, "taskset", "-c", str(core)] + argv
        p = subprocess.Popen(cmd, stdin=stdin, stdout=logf, stderr=subprocess.STDOUT, preexec_fn=pre)
        logf.close()
        self.live[p.pid] = p
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid} {start_time(p.pid) or 0}\n")
        return p

    def wait_rusage(self, p, timeout, tick=None):
        """Wait for `p` (killed after `timeout` s), calling `tick` about every
        50 ms meanwhile; returns (exit status, CPU seconds of all its threads)."""
        deadline = time.monotonic() + timeout
        next_tick = 0.0
        try:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid == p.pid:
                    break
                if tick and time.monotonic() >= next_tick:
                    tick()
                    next_tick = time.monotonic() + 0.05
                if time.monotonic() > deadline:
                    os.kill(p.pid, signal.SIGKILL)
                    pid, status, ru = os.wait4(p.pid, 0)
                    status = -1
                    break
                time.sleep(0.005)
        except BaseException:
            # Stopped (SIGTERM): the initiator goes first, so that the target
            # has no session left when it is asked to stop.
            os.kill(p.pid, signal.SIGKILL)
            os.wait4(p.pid, 0)
            p.returncode = -9
            self.live.pop(p.pid, None)
            raise
        p.returncode = os.waitstatus_to_exitcode(status) if status != -1 else -9
        self.live.pop(p.pid, None)
        return p.returncode, ru.ru_utime + ru.ru_stime

    def stop(self, p, grace=3.0):
        if p.pid not in self.live:
            return
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.live.pop(p.pid, None)

    def stop_all(self):
        for p in list(self.live.values()):
            self.stop(p, grace=1.0)


# --------------------------------------------------------------------------
# The run


@dataclass
class Rep:
    ok: bool
    error: str = ""
    requests: int = 0  # over the initiator's whole life
    rps: float = 0.0
    mbps: float = 0.0
    p50_us: float = None
    p99_us: float = None
    target_cpu_s: float = 0.0
    init_cpu_s: float = 0.0
    wall_s: float = 0.0
    target_threads: int = None
    tcp_retrans: int = None
    tcp_segs_out_t: int = None
    tcp_segs_out_i: int = None
    link: dict = field(default_factory=dict)
    check: dict = field(default_factory=dict)

    def target_ns(self):
        return self.target_cpu_s * 1e9 / self.requests if self.requests else None

    def init_ns(self):
        return self.init_cpu_s * 1e9 / self.requests if self.requests else None


class Run:
    def __init__(self, cfg):
        self.cfg = cfg
        self.out = cfg["out"]
        self.cells_dir = os.path.join(self.out, "cells")
        # This run's cells only (names repeat between runs; a stale file
        # would pass for this run's).
        shutil.rmtree(self.cells_dir, ignore_errors=True)
        os.makedirs(self.cells_dir, exist_ok=True)
        self.procs = Procs(cfg["pidfile"])
        self.file = cfg["file"]
        self.tcore, self.icore = cfg["cores"]
        self.helper = None  # a process in NS_I, to read its /proc/PID/net
        self.qemu_counts = {}
        self.cached = False  # the whole file is in the page cache
        self.results = {}  # (target name, workload key) -> [Rep]
        self.cell_no = 0

    # --- link ---------------------------------------------------------------
    def setup_link(self):
        for ns in (NS_T, NS_I):
            if os.path.exists(f"/run/netns/{ns}"):
                raise Fatal(f"network namespace {ns} exists: another protocols run? (ip netns del {ns})")
        sh("ip", "netns", "add", NS_T)
        sh("ip", "netns", "add", NS_I)
        sh("ip", "link", "add", IF_T, "netns", NS_T, "type", "veth", "peer", "name", IF_I, "netns", NS_I)
        for ns, iface, addr in ((NS_T, IF_T, ADDR_T), (NS_I, IF_I, ADDR_I)):
            # No IPv6 (its autoconfiguration frames would count on the link)
            # and no route out: the addresses exist only on this veth.
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{iface}.disable_ipv6=1")
            sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1")
            sh("ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", iface)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "link", "set", iface, "up")
        self.helper = self.procs.spawn(NS_I, self.icore, ["sleep", "infinity"], os.devnull)
        deadline = time.monotonic() + 5
        while not in_netns(self.helper.pid, NS_I):
            if time.monotonic() > deadline or self.helper.poll() is not None:
                raise Fatal(f"helper process never entered {NS_I}")
            time.sleep(0.01)

    def set_mtu(self, mtu):
        for ns, iface in ((NS_T, IF_T), (NS_I, IF_I)):
            sh("ip", "-n", ns, "link", "set", iface, "mtu", str(mtu))

    # --- backing file -------------------------------------------------------
    def make_file(self):
        """Write the whole file in 4 KiB writes, then sync it.

        Why 4 KiB: ext4 caches a file written in 1 MiB writes in large
        folios, and a small write into one then walks all its buffer heads
        (README "Benchmarks": 16 us per 1 KiB write against 2.3 us on the AMD
        VM), the same for every target: it would bury the protocols'
        difference under the filesystem's. Written this way the page cache
        holds it in 4 KiB folios. Synced so that no cell meets writeback.
        """
        size = self.cfg["file_mb"] << 20
        block = bytes((i * 131 + 7) & 0xFF or 1 for i in range(4096))
        fd = os.open(self.file, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for off in range(0, size, 4096):
                os.pwrite(fd, block, off)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.cached = True

    def settle(self, backing):
        """Between targets: written pages to disk (so no target meets another's
        writeback); for O_DIRECT the file out of the page cache, for the page
        cache rows the file in it (written again after an O_DIRECT phase: its
        direct writes dropped pages, and reading them back would bring large
        folios)."""
        fd = os.open(self.file, os.O_RDWR)
        try:
            os.fdatasync(fd)
            if backing == "direct":
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                self.cached = False
        finally:
            os.close(fd)
        if backing == "page" and not self.cached:
            self.make_file()

    # --- targets ------------------------------------------------------------
    def wait_for(self, p, what, pred, timeout=10.0):
        """Until `pred()` holds for target `p`, which must also have entered
        NS_T (its /proc/PID/net is what the counters are read from)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if p.poll() is not None:
                raise Fatal(f"{what} exited at start (exit {p.returncode}): {tail(p.logpath)}")
            if in_netns(p.pid, NS_T) and pred():
                return
            time.sleep(0.02)
        raise Fatal(f"{what} not ready within {timeout:.0f} s: {tail(p.logpath)}")

    def port_open(self, port):
        # From the initiator's netns: the helper's /proc/PID/net/tcp would
        # do too, but a connect is the real test. setns needs a thread of
        # its own; a short-lived `ip netns exec` is simpler.
        r = subprocess.run(
            ["ip", "netns", "exec", NS_I, sys.executable, "-c",
             f"import socket; socket.create_connection(('{ADDR_T}', {port}), 0.5).close()"],
            capture_output=True,
        )
        return r.returncode == 0

    def start_target(self, t, backing, mtu, rep):
        """Start `t` and wait until it serves; a target that fails to get
        there is stopped again (the next one may need its port or socket)."""
        # One log per start: a readiness line from an earlier start must not count.
        logpath = os.path.join(self.cells_dir, f"{slug(t.name)}-mtu{mtu}-{backing}-r{rep}.log")
        if os.path.exists(logpath):
            os.unlink(logpath)
        started = []
        try:
            return self._start_target(t, backing, logpath, started)
        except BaseException:
            for p in started:
                self.stop_target(t, p)
            raise

    def _start_target(self, t, backing, logpath, started):
        direct = backing == "direct"
        if t.name.startswith("xblade"):
            dp = ["--datapath", "xdp", "--xdp-mode", "native"] if "XDP" in t.name else ["--datapath", "afpacket"]
            # --writeback: acknowledge from the page cache (or, with -d,
            # once O_DIRECT returned), as vblade, tgtd, nbdkit and qemu-nbd
            # do; xblade's default durable mode is measured in README
            # "Benchmarks".
            argv = [self.cfg["xblade"]] + dp + [
                "--cores", str(self.tcore), "--control-socket", os.path.join(self.out, "xp-xblade.sock"),
                "-b", "64", "--writeback"] + (["-d"] if direct else []) + ["1", "1", IF_T, self.file]
            p = self.procs.spawn(NS_T, self.tcore, argv, logpath)
            p.logpath = logpath
            started.append(p)
            self.wait_for(p, t.name, lambda: "xblade serving" in readf(logpath), 20)
        elif t.name == "vblade":
            argv = ["vblade", "-b", "64"] + (["-d"] if direct else []) + ["1", "1", IF_T, self.file]
            p = self.procs.spawn(NS_T, self.tcore, argv, logpath)
            p.logpath = logpath
            started.append(p)
            # vblade prints nothing useful at start; xblade bench's discovery
            # retries for two seconds anyway.
            time.sleep(0.2)
            self.wait_for(p, t.name, lambda: True)
        elif t.name == "tgtd":
            port = self.cfg["tgt_control_port"]
            sock = f"/var/run/tgtd/socket.{port}"
            if os.path.exists(sock):
                raise Fatal(f"{sock} exists: a tgtd already uses control port {port} (PROTOCOLS_TGT_PORT)")
            argv = ["tgtd", "-f", "-C", str(port), "--iscsi", f"portal={ADDR_T}:{ISCSI_PORT}"]
            p = self.procs.spawn(NS_T, self.tcore, argv, logpath)
            p.logpath = logpath
            started.append(p)
            self.wait_for(p, t.name, lambda: os.path.exists(sock))
            adm = ["tgtadm", "-C", str(port), "--lld", "iscsi"]
            try_sh(adm + ["--mode", "target", "--op", "new", "--tid", "1", "-T", IQN], 5)
            lu = adm + ["--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1", "-b", self.file]
            if direct:
                lu += ["--bsoflags", "direct"]
            sh(*lu)
            sh(*(adm + ["--mode", "target", "--op", "bind", "--tid", "1", "-I", "ALL"]))
            self.wait_for(p, t.name, lambda: self.port_open(ISCSI_PORT))
        elif t.name == "nbdkit":
            argv = ["nbdkit", "-f", "--exit-with-parent", "-i", ADDR_T, "-p", str(NBDKIT_PORT), "file", self.file]
            p = self.procs.spawn(NS_T, self.tcore, argv, logpath)
            p.logpath = logpath
            started.append(p)
            self.wait_for(p, t.name, lambda: self.port_open(NBDKIT_PORT))
        elif t.name == "qemu-nbd":
            cache = ["--cache=none", "--aio=native"] if direct else ["--cache=writeback"]
            argv = ["qemu-nbd", "-f", "raw", "-t", "-b", ADDR_T, "-p", str(QEMU_NBD_PORT)] + cache + [self.file]
            p = self.procs.spawn(NS_T, self.tcore, argv, logpath)
            p.logpath = logpath
            started.append(p)
            self.wait_for(p, t.name, lambda: self.port_open(QEMU_NBD_PORT))
        else:
            raise Fatal(f"unknown target {t.name}")
        return p

    def stop_target(self, t, p):
        if t.name == "tgtd" and p.poll() is None:
            port = self.cfg["tgt_control_port"]
            adm = ["tgtadm", "-C", str(port), "--lld", "iscsi"]
            subprocess.run(adm + ["--mode", "target", "--op", "delete", "--force", "--tid", "1"], capture_output=True)
            # tgtd ignores SIGTERM while it has targets; this asks it to exit.
            subprocess.run(adm + ["--mode", "system", "--op", "delete"], capture_output=True)
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self.procs.stop(p, grace=2.0)
        if t.name == "tgtd":
            for suffix in ("", ".lock"):
                try:
                    os.unlink(f"/var/run/tgtd/socket.{self.cfg['tgt_control_port']}{suffix}")
                except OSError:
                    pass

    # --- initiators ---------------------------------------------------------
    def initiator_argv(self, t, wl, json_path, tpid):
        cell = self.cfg["cell"]
        if t.proto == "AoE":
            return [self.cfg["xblade"], "bench", "--iface", IF_I, "--target", "1.1", "--op", wl.op,
                    "--bytes", str(wl.size), "--window", str(wl.depth), "--duration", f"{cell}s",
                    "--warmup", "100ms", "--cores", str(self.icore), "--target-pid", str(tpid),
                    "--quiet", "--json", json_path]
        if t.proto == "NBD":
            port = NBDKIT_PORT if t.name == "nbdkit" else QEMU_NBD_PORT
            return ["fio", "--name=xp", "--ioengine=nbd", f"--uri=nbd://{ADDR_T}:{port}",
                    f"--rw=rand{wl.op}", f"--bs={wl.size}", f"--iodepth={wl.depth}", "--time_based",
                    f"--runtime={int(cell * 1000)}ms", "--thread", "--norandommap", "--lat_percentiles=1",
                    "--output-format=json", f"--output={json_path}"]
        url = f"iscsi://{ADDR_T}/{IQN}/1"
        if wl.op == "read":
            # iscsi-perf takes whole seconds and reads only.
            return ["iscsi-perf", "-r", "-m", str(wl.depth), "-b", str(wl.size // 512),
                    "-t", str(max(1, round(cell))), url]
        count = self.qemu_counts.get((t.name, wl.key()), 2000 if wl.depth == 1 else 20000)
        # A stride of 1 MiB + one request: qemu-img bench is sequential, this
        # spreads it over the file (it wraps at the end).
        return ["qemu-img", "bench", "-f", "raw", "-t", "none", "-w", "-c", str(count), "-d", str(wl.depth),
                "-s", str(wl.size), "-S", str((1 << 20) + wl.size), url]

    def parse_initiator(self, t, wl, rep, json_path, logpath):
        """Fill `rep` from the initiator's output; Fatal when it is not what
        that initiator writes."""
        try:
            self._parse_initiator(t, wl, rep, json_path, logpath)
        except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
            raise Fatal(f"cannot read {initiator_name(t, wl)}'s result ({type(e).__name__}: {e}): "
                        f"{tail(logpath)}") from e

    def _parse_initiator(self, t, wl, rep, json_path, logpath):
        text = readf(logpath)
        if t.proto == "AoE":
            j = json.load(open(json_path))
            timed = j["phases"]["timed"]
            rep.requests = timed["completed"]
            rep.rps, rep.mbps = j["requests_per_s"], j["mb_per_s"]
            rep.p50_us, rep.p99_us = j["latency_us"]["p50"], j["latency_us"]["p99"]
            rep.link["retransmits"] = j["retransmits"]
            if j["errors"]:
                raise Fatal(f"{j['errors']} error replies")
        elif t.proto == "NBD":
            raw = readf(json_path)
            j = json.loads(raw[raw.index("{"):])  # fio may print a line before the JSON
            job = j["jobs"][0]
            if job["error"]:
                raise Fatal(f"fio error {job['error']}")
            d = job[wl.op]
            rep.requests = d["total_ios"]
            rep.rps, rep.mbps = d["iops"], d["bw_bytes"] / 1e6
            pct = d["lat_ns"].get("percentile", {})
            rep.p50_us = pct.get("50.000000", 0) / 1000 or None
            rep.p99_us = pct.get("99.000000", 0) / 1000 or None
        elif wl.op == "read":
            m = re.findall(r"iops average (\d+)", text)
            if not m:
                raise Fatal(f"no 'iops average' in iscsi-perf output: {tail(logpath)}")
            rep.rps = float(m[-1])
            secs = max(1, round(self.cfg["cell"]))
            # iscsi-perf stops counting once `secs` have passed (the requests
            # still in flight then complete uncounted: at most the depth).
            rep.requests = int(rep.rps * secs)
            rep.mbps = rep.rps * wl.size / 1e6
        else:
            m = re.search(r"Run completed in ([0-9.]+) seconds", text)
            c = re.search(r"Sending (\d+) write requests", text)
            if not (m and c):
                raise Fatal(f"no result in qemu-img bench output: {tail(logpath)}")
            rep.requests = int(c.group(1))
            secs = float(m.group(1))
            rep.rps = rep.requests / secs
            rep.mbps = rep.rps * wl.size / 1e6
            # Next time, about one cell's worth.
            self.qemu_counts[(t.name, wl.key())] = max(500, int(rep.rps * self.cfg["cell"]))

    def run_cell(self, t, wl, tp, rep_no):
        self.cell_no += 1
        name = f"{slug(t.name)}-{wl.key()}-r{rep_no}"
        logpath = os.path.join(self.cells_dir, name + ".log")
        json_path = os.path.join(self.cells_dir, name + ".json")
        for pth in (logpath, json_path):
            if os.path.exists(pth):
                os.unlink(pth)
        tpid, hpid = tp.pid, self.helper.pid
        argv = self.initiator_argv(t, wl, json_path, tpid)
        if t.proto == "iSCSI" and wl.op == "write" and (t.name, wl.key()) not in self.qemu_counts:
            # Calibrate qemu-img bench's request count (it runs a count, not
            # a time); not recorded.
            cal = self.procs.spawn(NS_I, self.icore, argv, logpath + ".calibrate")
            self.procs.wait_rusage(cal, 60)
            rep_tmp = Rep(ok=True)
            try:
                self.parse_initiator(t, wl, rep_tmp, json_path, logpath + ".calibrate")
            except Fatal:
                pass
            argv = self.initiator_argv(t, wl, json_path, tpid)
        rep = Rep(ok=True)
        try:
            c0, n0t, s0t, s0i = proc_cpu(tpid), net_dev(tpid, IF_T), tcp_counters(tpid), tcp_counters(hpid)
            w0 = time.monotonic()
            ip = self.procs.spawn(NS_I, self.icore, argv, logpath)

            def threads():
                # The most threads the target had during the cell (nbdkit's
                # come and go with the connection).
                n = proc_threads(tpid)
                if n is not None and (rep.target_threads is None or n > rep.target_threads):
                    rep.target_threads = n

            rc, rep.init_cpu_s = self.procs.wait_rusage(ip, self.cfg["cell"] * 3 + 30, threads)
            rep.wall_s = time.monotonic() - w0
            if tp.poll() is not None:
                raise Fatal(f"target exited (exit {tp.returncode}): {tail(tp.logpath)}")
            c1, n1t, s1t, s1i = proc_cpu(tpid), net_dev(tpid, IF_T), tcp_counters(tpid), tcp_counters(hpid)
            if rc != 0:
                raise Fatal(f"{initiator_name(t, wl)} exit {rc}: {tail(logpath)}")
            rep.target_cpu_s = c1 - c0
            self.parse_initiator(t, wl, rep, json_path, logpath)
            # On the target's end of the veth: rx is what the initiator sent.
            rx_b, rx_p, tx_b, tx_p, rx_d, tx_d = (a - b for a, b in zip(n1t, n0t))
            rep.link.update(to_target_bytes=rx_b, to_target_packets=rx_p,
                            to_initiator_bytes=tx_b, to_initiator_packets=tx_p,
                            target_end_rx_dropped=rx_d, target_end_tx_dropped=tx_d)
            if t.proto != "AoE":
                rep.tcp_retrans = (s1t["RetransSegs"] - s0t["RetransSegs"]) + (s1i["RetransSegs"] - s0i["RetransSegs"])
                rep.tcp_segs_out_t = s1t["OutSegs"] - s0t["OutSegs"]
                rep.tcp_segs_out_i = s1i["OutSegs"] - s0i["OutSegs"]
            rep.check = count_check(t, wl, rep)
        except Fatal as e:
            rep.ok, rep.error = False, str(e)
        self.results.setdefault((t.name, wl.key()), []).append(rep)
        status = "ok" if rep.ok and rep.check.get("ok") else ("CHECK FAILED" if rep.ok else "FAILED")
        log(f"[{self.cell_no:>3}/{self.cfg['total_cells']} {time.monotonic() - self.cfg['t0']:5.0f} s] "
            f"{t.name:<17} {wl.label():<44} "
            + (f"{rep.rps:>10,.0f} req/s  target {fmt_ns(rep.target_ns())}/req  {status}"
               if rep.ok else f"FAILED: {rep.error}"))
        return rep

    # --- plan ---------------------------------------------------------------
    def plan(self):
        """[(rep, mtu, backing, target, [workloads])] in run order: repetitions
        outermost, so a slow spell of the machine spreads over every target
        rather than landing on one."""
        wls = workloads(self.cfg["smoke"])
        names = self.cfg["targets"]
        out = []
        for rep in range(1, self.cfg["reps"] + 1):
            for mtu in (1500, 9000):
                for backing in ("page", "direct"):
                    for t in TARGETS:
                        if names and t.name not in names:
                            continue
                        if backing not in t.backings or mtu not in t.mtus:
                            continue
                        mine = [w for w in wls if w.mtu == mtu and w.backing == backing]
                        if self.cfg["smoke"]:
                            # Every target and initiator once, not every cell.
                            mine = [w for w in mine if smoke_pick(t, w)]
                        if mine:
                            out.append((rep, mtu, backing, t, mine))
        return out

    def run(self):
        plan = self.plan()
        self.cfg["total_cells"] = sum(len(p[4]) for p in plan)
        log(f"{self.cfg['total_cells']} cells ({plural(self.cfg['reps'], 'repetition')}, {self.cfg['cell']} s each), "
            f"target on core {self.tcore}, initiators on core {self.icore}")
        self.setup_link()
        self.make_file()
        mtu_now = None
        for rep, mtu, backing, t, wls in plan:
            if mtu != mtu_now:
                self.set_mtu(mtu)
                mtu_now = mtu
            self.settle(backing)
            try:
                tp = self.start_target(t, backing, mtu, rep)
            except Fatal as e:
                for wl in wls:
                    self.results.setdefault((t.name, wl.key()), []).append(Rep(ok=False, error=str(e)))
                    log(f"{t.name}: {wl.label()}: FAILED: {e}")
                continue
            try:
                for wl in wls:
                    self.run_cell(t, wl, tp, rep)
            finally:
                self.stop_target(t, tp)


def smoke_pick(t, w):
    if t.name == "xblade XDP":
        return w.backing == "direct" and w.op == "read" or (w.mtu == 1500 and w.op == "read")
    if t.name == "xblade AF_PACKET":
        return w.mtu == 1500 and w.op == "write"
    if t.name == "vblade":
        return w.mtu == 1500 and w.op == "read"
    if t.name == "tgtd":
        return (w.mtu == 1500 and w.op == "read") or (w.backing == "direct" and w.op == "write")
    if t.name == "nbdkit":
        return w.mtu == 1500 and w.op == "write"
    if t.name == "qemu-nbd":
        return w.op == "read"
    return False


def count_check(t, wl, rep):
    """The initiator's request count against the link's own counters.

    AoE: one frame per request each way (replies counted on the target's end
    of the veth: its tx), give or take discovery frames and retransmissions.
    TCP: bytes in the data direction, less the L2-L4 headers of each packet
    the link counted, must hold between `requests` requests of `size` plus the
    protocol's per-request header, both bounds loosened by the requests that
    may have been in flight when the initiator stopped counting (the depth),
    a little handshake, and an MSS per retransmitted segment (veth drops
    when the receiving core's backlog overflows, and TCP sends again).
    """
    r, d, s = rep.requests, wl.depth, wl.size
    L = rep.link
    if t.proto == "AoE":
        frames = L["to_initiator_packets"]
        slack = d + 16 + L.get("retransmits", 0) + r // 1000
        ok = abs(frames - r) <= slack and r > 0
        return {"ok": ok, "kind": "frames", "link": frames, "initiator": r, "link_per_request": frames / r if r else None,
                "rule": f"|replies on the link - requests| <= {slack}"}
    if wl.op == "read":
        byts, pkts = L["to_initiator_bytes"], L["to_initiator_packets"]
    else:
        byts, pkts = L["to_target_bytes"], L["to_target_packets"]
    payload = byts - pkts * L234
    hlo, hhi = PROTO_HDR[t.proto]
    # Retransmitted segments cross the link twice: at most an MSS each.
    slack = TCP_SLACK + (rep.tcp_retrans or 0) * (wl.mtu - 52)
    implied_hi = payload / (s + hlo)
    implied_lo = (payload - slack) / (s + hhi)
    ok = r > 0 and implied_lo - d <= r <= implied_hi + d
    return {"ok": ok, "kind": "bytes", "link": payload, "initiator": r,
            "link_per_request": payload / r if r else None,
            "implied_requests": [round(implied_lo), round(implied_hi)],
            "rule": f"payload bytes / ({s}+{hhi}..{s}+{hlo}) within the depth of the count"}


# --------------------------------------------------------------------------
# Report


def med_range(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def aggregate(run):
    rows = []
    for wl in workloads(run.cfg["smoke"]):
        for t in TARGETS:
            reps = run.results.get((t.name, wl.key()))
            if not reps:
                continue
            good = [r for r in reps if r.ok]
            cpu = med_range([r.target_ns() for r in good])
            rows.append({
                "workload": wl.label(), "key": wl.key(), "mtu": wl.mtu, "size": wl.size, "op": wl.op,
                "depth": wl.depth, "backing": wl.backing, "target": t.name, "protocol": t.proto,
                "initiator": initiator_name(t, wl),
                "reps": len(reps), "failed": [r.error for r in reps if not r.ok],
                "requests_per_s": med_range([r.rps for r in good]),
                "mb_per_s": med_range([r.mbps for r in good]),
                "p50_us": med_range([r.p50_us for r in good]),
                "p99_us": med_range([r.p99_us for r in good]),
                "target_cpu_ns_per_request": cpu,
                # Target cores a 25GbE port at line rate would keep busy at
                # this CPU per request (veth's copies included; see NOTES).
                "target_cores_25g": cpu and cpu["median"] * line_rate(t.proto, wl.size, wl.op, wl.mtu) / 1e9,
                "initiator_cpu_ns_per_request": med_range([r.init_ns() for r in good]),
                "target_cores": med_range([r.target_cpu_s / r.wall_s for r in good if r.wall_s]),
                "target_threads": med_range([r.target_threads for r in good]),
                "line_rate_25g_requests_per_s": line_rate(t.proto, wl.size, wl.op, wl.mtu),
                "tcp_retransmits": sum(r.tcp_retrans or 0 for r in good) if t.proto != "AoE" else None,
                "tcp_segments_per_request": med_range(
                    [(r.tcp_segs_out_t + r.tcp_segs_out_i) / r.requests for r in good
                     if r.tcp_segs_out_t is not None and r.requests]),
                "count_check": {"ok": bool(good) and all(r.check.get("ok") for r in good),
                                "per_rep": [r.check for r in good]},
                "raw": [rep_json(r) for r in reps],
            })
    return rows


def line_rate(proto, size, op, mtu, gbps=25):
    """Requests/s a port of `gbps` carries in the data direction.

    Wire bytes per request: AoE one frame (36 bytes of Ethernet, AoE and
    ATA header, 4 FCS, 20 preamble and gap: 1084 for 1 KiB); TCP the PDU
    (data plus the protocol header) in MSS-sized segments of 90 bytes of
    overhead each (Ethernet, IPv4, TCP with timestamps, FCS, preamble and
    gap), each request in segments of its own: the depth-1 case, a little
    pessimistic at depth 64 where PDUs share segments.
    """
    if proto == "AoE":
        wire = size + 36 + 4 + 20
    else:
        hdr = 48 if proto == "iSCSI" else (16 if op == "read" else 28)
        pdu = size + hdr
        mss = mtu - 52
        wire = pdu + math.ceil(pdu / mss) * 90
    return gbps * 1e9 / 8 / wire


def rep_json(r):
    return {"ok": r.ok, "error": r.error or None, "requests": r.requests, "requests_per_s": r.rps,
            "mb_per_s": r.mbps, "p50_us": r.p50_us, "p99_us": r.p99_us, "target_cpu_s": r.target_cpu_s,
            "initiator_cpu_s": r.init_cpu_s, "wall_s": r.wall_s, "target_threads": r.target_threads,
            "tcp_retransmits": r.tcp_retrans, "tcp_out_segments_target": r.tcp_segs_out_t,
            "tcp_out_segments_initiator": r.tcp_segs_out_i, "link": r.link, "count_check": r.check}


def fmt_ns(v):
    if v is None:
        return "-"
    return f"{v / 1000:.1f} us" if v >= 1000 else f"{v:.0f} ns"


def fmt_mr(m, f, rng=True):
    if not m:
        return "-"
    if not rng or m["n"] < 2:
        return f(m["median"])
    return f"{f(m['median'])} ({f(m['min'])}-{f(m['max'])})"


def k(v):
    return f"{v / 1000:.0f}k" if v >= 10000 else f"{v / 1000:.1f}k"


def us(v):
    return f"{v / 1000:.1f}" if v >= 100 else f"{v / 1000:.2f}"


def lat(v):
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


NOTES = """\
What is comparable here and what is not:
- Same file, same veth, same request size and depth; each protocol's own user-space initiator
  (AoE: xblade bench; iSCSI: libiscsi's iscsi-perf for reads, qemu-img bench over libiscsi for
  writes, since iscsi-perf only reads; NBD: fio's nbd engine over libnbd). Random offsets, except
  qemu-img bench: strided (1 MiB + one request apart, wrapping).
- Every target acknowledges writes from the page cache (O_DIRECT rows: once the write reached the
  device); xblade runs with --writeback for that. Its default durable mode costs an fdatasync per
  batch and is measured in README "Benchmarks".
- CPU per request = CPU time over the initiator's whole run / requests over that run, from
  /proc/PID/stat (all threads, exited ones too) for the target and wait4's rusage for the
  initiator: connection setup is included (a few ms against about a second of load).
- veth bills receive work to the sender: a frame's receive path (XDP program, TCP receive, the
  wakeup of the reader) runs in softirq on the core that sent it. Target CPU thus includes the
  initiator's receive of the replies and leaves out the target's receive of the requests (billed
  to the initiator). On a real NIC each side pays its own receive. The same holds for every row.
- Data copies: xblade bench receives only the headers of read replies (no copy of the data);
  libiscsi, libnbd and qemu copy every byte into user buffers. Initiator CPU is therefore not
  comparable between AoE and the TCP rows on reads; target CPU is.
- Threads: xblade is pinned to one core with one worker; vblade is one thread; tgtd runs a main
  thread plus 16 I/O threads for the LUN (rdwr backing store), nbdkit 16 worker threads per
  connection, qemu-nbd a main loop (+ AIO); all confined to the same target core, so their
  threads take turns there (column "thr").
- TCP rows use veth's offloads (TSO/GSO, GRO): segments are counted as the TCP stack counts them.
  TCP does retransmit at depth 64 on veth (column "retr"); the byte check allows for it.
- The backing file is written in 4 KiB writes (page cache in 4 KiB folios): small writes into the
  1 MiB folios of a file written in 1 MiB blocks cost ext4 far more, for every target alike.
- "25G cores": the target's CPU per request times the requests/s a 25GbE port carries at line rate
  in the data direction for that size and protocol (AoE: one frame per request; TCP: the PDU in
  MSS segments); a projection from veth figures, not a measurement on a NIC.
- Not here: LIO (kernel iSCSI) and nvmet-tcp (kernel NVMe/TCP) need kernel modules these machines
  do not load; SPDK is not packaged in Debian 12. A kernel target saves the user/kernel crossings
  and copies of tgtd (expect well below tgtd's CPU per request); SPDK polls a dedicated core.
"""


def render(run, rows, meta):
    hdr = (f"{'workload':<42} {'target':<17} {'proto':<5} {'initiator':<18} {'req/s':>20} {'MB/s':>8} "
           f"{'p50 us':>7} {'p99 us':>7} {'target us/req':>18} {'init us/req':>12} {'25G cores':>9} {'thr':>4} {'retr':>5} "
           f"{'check':>6}")
    out = [f"AoE, iSCSI and NBD on one veth ({meta['date']}, {meta['machine']}, load {meta['load_start']}"
           f" -> {meta['load_end']}); medians of {plural(run.cfg['reps'], 'cell')} of {run.cfg['cell']} s (min-max)", "", hdr,
           "-" * len(hdr)]
    last = None
    for r in rows:
        wl = r["workload"] if r["workload"] != last else ""
        last = r["workload"]
        if r["failed"] and not r["requests_per_s"]:
            out.append(f"{wl:<42} {r['target']:<17} {r['protocol']:<5} FAILED: {r['failed'][0][:160]}")
            continue
        out.append(
            f"{wl:<42} {r['target']:<17} {r['protocol']:<5} {r['initiator']:<18} "
            f"{fmt_mr(r['requests_per_s'], lambda v: f'{v:,.0f}'):>20} "
            f"{fmt_mr(r['mb_per_s'], lambda v: f'{v:.1f}', False):>8} "
            f"{fmt_mr(r['p50_us'], lat, False):>7} {fmt_mr(r['p99_us'], lat, False):>7} "
            f"{fmt_mr(r['target_cpu_ns_per_request'], us):>18} "
            f"{fmt_mr(r['initiator_cpu_ns_per_request'], us, False):>12} "
            f"{r['target_cores_25g'] or 0:>9.1f} "
            f"{fmt_mr(r['target_threads'], lambda v: f'{v:.0f}', False):>4} "
            f"{'-' if r['tcp_retransmits'] is None else r['tcp_retransmits']:>5} "
            f"{'ok' if r['count_check']['ok'] else 'FAIL':>6}"
            + (f"  ({len(r['failed'])} failed: {r['failed'][0][:80]})" if r["failed"] else ""))
    out += ["", NOTES]
    return "\n".join(out) + "\n"


def readme_row(r):
    """The README's table: depth 64 everywhere, plus 1 KiB reads at depth 1
    (latency); every row is in protocols.md."""
    return r["depth"] == 64 or (r["size"] == 1024 and r["op"] == "read")


def render_md(run, rows, meta, readme=False):
    if readme:
        rows = [r for r in rows if readme_row(r)]
    out = [f"Measured {meta['date']} on {meta['machine']}, kernel {meta['kernel']}, load average "
           f"{meta['load_start']} at the start, by `sudo bash benches/protocols.sh` ({plural(run.cfg['reps'], 'cell')} of "
           f"{run.cfg['cell']} s per row; median, range in parentheses; target on core {run.tcore}, initiator on core "
           f"{run.icore})" + ("; depth 64, and 1 KiB reads at depth 1 (all rows: `protocols.md`)." if readme else "."),
           "",
           "| workload | target (initiator) | req/s | MB/s | p50 / p99 us | target CPU us/req | initiator CPU us/req "
           "| target cores for 25GbE | TCP retr. |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    last = None
    for r in rows:
        wl = r["workload"] if r["workload"] != last else ""
        last = r["workload"]
        who = f"{r['target']} ({r['initiator']})"
        if not r["requests_per_s"]:
            out.append(f"| {wl} | {who} | failed | | | | | | |")
            continue
        p = "-" if not r["p50_us"] else f"{lat(r['p50_us']['median'])} / {lat(r['p99_us']['median'])}"
        out.append(
            f"| {wl} | {who} | {fmt_mr(r['requests_per_s'], k)} | {r['mb_per_s']['median']:.1f} | {p} | "
            f"{fmt_mr(r['target_cpu_ns_per_request'], us)} | {fmt_mr(r['initiator_cpu_ns_per_request'], us, False)} | "
            f"{r['target_cores_25g']:.1f} | {'' if r['tcp_retransmits'] is None else r['tcp_retransmits']} |")
    return "\n".join(out) + "\n"


COLORS = {"xblade XDP": "#1f77b4", "xblade AF_PACKET": "#6baed6", "vblade": "#2ca02c", "tgtd": "#d62728",
          "nbdkit": "#ff7f0e", "qemu-nbd": "#9467bd"}


def svg_chart(rows, meta):
    """Two panels, one bar per (workload, target): requests/s and target CPU
    per request, with the min-max range as a whisker."""
    groups = []
    for r in rows:
        if not r["requests_per_s"]:
            continue
        if not groups or groups[-1][0] != r["workload"]:
            groups.append((r["workload"], []))
        groups[-1][1].append(r)
    bar_h, gap, label_w, panel_w = 9, 10, 300, 330
    height = 60 + sum(len(g[1]) * bar_h + gap for g in groups) + 40
    width = label_w + 2 * panel_w + 60
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'font-family="sans-serif" font-size="10">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="10" y="18" font-size="13">AoE vs iSCSI vs NBD on one veth ({esc(meta["date"])}, '
         f'{esc(meta["machine"])}): median, whisker min-max</text>']
    panels = [("requests/s", "requests_per_s", lambda v: f"{v / 1000:.0f}k"),
              ("target CPU us / request", "target_cpu_ns_per_request", lambda v: f"{v / 1000:.1f}")]
    for pi, (title, key, fmt) in enumerate(panels):
        x0 = label_w + pi * (panel_w + 30)
        vmax = max((r[key]["max"] for g in groups for r in g[1] if r[key]), default=1) or 1
        s.append(f'<text x="{x0}" y="40" font-size="12">{title}</text>')
        y = 52
        for _, rs in groups:
            for r in rs:
                m = r[key]
                if m:
                    w = m["median"] / vmax * (panel_w - 40)
                    s.append(f'<rect x="{x0}" y="{y}" width="{w:.1f}" height="{bar_h - 2}" '
                             f'fill="{COLORS.get(r["target"], "#777")}"/>')
                    a, b = m["min"] / vmax * (panel_w - 40), m["max"] / vmax * (panel_w - 40)
                    s.append(f'<line x1="{x0 + a:.1f}" x2="{x0 + b:.1f}" y1="{y + 3.5}" y2="{y + 3.5}" stroke="black"/>')
                    s.append(f'<text x="{x0 + max(w, b) + 3:.1f}" y="{y + 7}" font-size="8">{fmt(m["median"])}</text>')
                y += bar_h
            y += gap
    y = 52
    for wl, rs in groups:
        s.append(f'<text x="{label_w - 8}" y="{y + len(rs) * bar_h / 2 + 3}" text-anchor="end">{esc(wl)}</text>')
        y += len(rs) * bar_h + gap
    lx = 10
    proto = {t.name: t.proto for t in TARGETS}
    for name, c in COLORS.items():
        label = f"{name} ({proto.get(name, '?')})"
        s.append(f'<rect x="{lx}" y="{height - 22}" width="10" height="10" fill="{c}"/>')
        s.append(f'<text x="{lx + 14}" y="{height - 13}">{esc(label)}</text>')
        lx += 24 + 6 * len(label)
    s.append("</svg>")
    return "\n".join(s) + "\n"


def esc(t):
    return str(t).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# --------------------------------------------------------------------------
# Helpers


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def slug(s):
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def readf(p):
    try:
        with open(p, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def tail(p, n=3):
    lines = [line.strip() for line in readf(p).replace("\r", "\n").splitlines() if line.strip()]
    return " | ".join(lines[-n:]) or "(no output)"


def try_sh(argv, timeout):
    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(argv, capture_output=True, text=True)
        if r.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise Fatal(f"{' '.join(argv)}: {r.stderr.strip()}")
        time.sleep(0.05)


def machine():
    model = "unknown CPU"
    for line in readf("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{os.cpu_count()}-vCPU {model}"


def loadavg():
    return readf("/proc/loadavg").split()[0] if readf("/proc/loadavg") else "?"


def rerender(path):
    """`protocols.py --render DIR/protocols.json`: write the tables and the
    chart again from a run's JSON (after a change to the rendering or the
    line-rate model), without measuring anything."""
    doc = json.load(open(path))
    cfg, rows, meta = doc["config"], doc["rows"], doc["meta"]
    for r in rows:
        cpu = r["target_cpu_ns_per_request"]
        lr = line_rate(r["protocol"], r["size"], r["op"], r["mtu"])
        r["line_rate_25g_requests_per_s"] = lr
        r["target_cores_25g"] = cpu and cpu["median"] * lr / 1e9

    class Saved:
        pass

    run = Saved()
    run.cfg, (run.tcore, run.icore) = cfg, cfg["cores"]
    out = os.path.dirname(os.path.abspath(path))
    doc["rows"] = rows
    write_outputs(run, rows, meta, doc, out)
    return 0


def write_outputs(run, rows, meta, doc, out):
    text = render(run, rows, meta)
    files = {"protocols.txt": text, "protocols.md": render_md(run, rows, meta),
             "protocols-readme.md": render_md(run, rows, meta, readme=True),
             "protocols.json": json.dumps(doc, indent=1) + "\n", "protocols.svg": svg_chart(rows, meta)}
    for name, body in files.items():
        with open(os.path.join(out, name), "w") as f:
            f.write(body)
    print(text)
    print("Ready to paste (README \"AoE or iSCSI?\"):\n")
    print(files["protocols-readme.md"])


RANGE_COLUMNS = [("1k-read-d64-mtu1500-page", "1 KiB read"), ("1k-write-d64-mtu1500-page", "1 KiB write"),
                 ("4k-read-d64-mtu9000-page", "4 KiB read"), ("8k-read-d64-mtu9000-page", "8 KiB read"),
                 ("8k-write-d64-mtu9000-page", "8 KiB write"), ("4k-read-d64-mtu9000-direct", "4 KiB read, O_DIRECT")]


def ranges(paths):
    """`protocols.py --ranges A/protocols.json B/protocols.json ...`: the
    README's table of target CPU per request at depth 64, lowest-highest
    median over the runs given."""
    runs = [json.load(open(p))["rows"] for p in paths]
    dates = sorted({json.load(open(p))["meta"]["date"][:10] for p in paths})
    print(f"Target CPU per request at depth 64 (us), lowest-highest of the medians of {len(runs)} runs "
          f"({', '.join(dates)}):\n")
    print("| | " + " | ".join(c[1] for c in RANGE_COLUMNS) + " |")
    print("|---|" + "---:|" * len(RANGE_COLUMNS))
    for t in TARGETS:
        cells = []
        for key, _ in RANGE_COLUMNS:
            v = [r["target_cpu_ns_per_request"]["median"] / 1000 for rows in runs for r in rows
                 if r["target"] == t.name and r["key"] == key and r["target_cpu_ns_per_request"]]
            cells.append(f"{min(v):.1f}-{max(v):.1f}" if v else "")
        if any(cells):
            print(f"| {t.name} ({t.proto}) | " + " | ".join(cells) + " |")
    return 0


def main():
    if sys.argv[1:2] == ["--render"] and len(sys.argv) == 3:
        return rerender(sys.argv[2])
    if sys.argv[1:2] == ["--ranges"] and len(sys.argv) > 2:
        return ranges(sys.argv[2:])
    env = os.environ
    smoke = env.get("PROTOCOLS_SMOKE", "") not in ("", "0")
    cores = [int(c) for c in env.get("PROTOCOLS_CORES", "1,0").split(",")]
    if len(cores) != 2:
        raise Fatal(f"PROTOCOLS_CORES={env['PROTOCOLS_CORES']!r}: expected TARGET,INITIATOR, e.g. 1,0")
    cell = float(env.get("PROTOCOLS_CELL", "0.3" if smoke else "0.7"))
    reps = int(env.get("PROTOCOLS_REPS", "1" if smoke else "3"))
    if not (cell > 0 and reps > 0):
        raise Fatal(f"PROTOCOLS_CELL={cell} PROTOCOLS_REPS={reps}: both must be positive")
    targets = [t.strip() for t in env.get("PROTOCOLS_TARGETS", "").split(",") if t.strip()]
    unknown = [t for t in targets if t not in {x.name for x in TARGETS}]
    if unknown:
        raise Fatal(f"PROTOCOLS_TARGETS: unknown {unknown}; known: {', '.join(t.name for t in TARGETS)}")
    cfg = {
        "smoke": smoke, "cores": cores, "cell": cell, "reps": reps, "targets": targets,
        "out": env["PROTOCOLS_OUT"], "xblade": env["XBLADE_BIN"], "pidfile": env["PROTOCOLS_PIDFILE"],
        "file": env["PROTOCOLS_FILE"], "file_mb": int(env.get("PROTOCOLS_FILE_MB", "32" if smoke else "256")),
        "tgt_control_port": int(env.get("PROTOCOLS_TGT_PORT", "7213")), "t0": time.monotonic(),
    }
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
            "kernel": os.uname().release, "load_start": loadavg(), "git": env.get("PROTOCOLS_GIT", "")}
    run = Run(cfg)

    def on_term(signum, _frame):
        raise SystemExit(f"protocols: stopped by signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    try:
        run.run()
    finally:
        run.procs.stop_all()
    meta["load_end"] = loadavg()
    meta["elapsed_s"] = round(time.monotonic() - cfg["t0"], 1)
    rows = aggregate(run)
    doc = {"meta": meta, "config": {k2: v for k2, v in cfg.items() if k2 not in ("t0",)},
           "header_bytes_per_packet": L234, "rows": rows, "notes": NOTES}
    os.makedirs(cfg["out"], exist_ok=True)
    write_outputs(run, rows, meta, doc, cfg["out"])
    bad = [f"{r['target']} / {r['workload']}" for r in rows if r["failed"] or not r["count_check"]["ok"]]
    log(f"done in {meta['elapsed_s']:.0f} s; wrote {cfg['out']}/protocols.{{txt,md,json,svg}}")
    if bad:
        log(f"{len(bad)} rows failed or disagree with the link's counters: " + "; ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fatal as e:
        log(f"ERROR: {e}")
        sys.exit(1)

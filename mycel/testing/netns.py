"""A network-namespace lab for tests: namespaces, bridges, veth pairs and addresses, torn down for sure.

Needs root and iproute2 (``ip``). Everything lives in namespaces the lab creates; nothing is added to the
namespace the tests run in, and no lab namespace gets a route out. Use private ranges (10/8, 172.16/12,
192.168/16) or 198.18.0.0/15 only; :meth:`NetLab.addr` refuses anything else.

Typical use (a LAN of three hosts on one bridge)::

    with NetLab() as lab:
        lan = lab.lan("10.77.0.0/24", 3)          # bridge namespace + 3 host namespaces
        proc = lan.hosts[0].popen(["ping", "-c1", str(lan.ips[1])])
        ...

and the building blocks for other shapes (a NAT lab: routers with two links and nft rules)::

    with NetLab() as lab:
        router = lab.namespace("rt")
        peer = lab.namespace("peer")
        lab.veth(router, peer, "10.0.1.1/24", "10.0.1.2/24")
        router.sysctl("net.ipv4.ip_forward", "1")
        peer.run(["ip", "route", "add", "default", "via", "10.0.1.1"])

Names: every namespace is called ``<prefix><pid>-<serial>-<label>`` (the pid of the process that made
it), so a lab never touches another live run's namespaces, and :func:`cleanup_stale` (called when a lab
opens) removes those whose creating process is gone (a crashed earlier run), killing what still runs in
them. Interface names are chosen per namespace (veth pairs are created directly in their namespaces), so
they only have to be unique within one namespace and fit Linux's 15 characters.

Teardown (leaving the ``with``, also on an exception): processes started through the lab get SIGTERM,
then SIGKILL after a grace period; any other process left in a lab namespace is killed; then the
namespaces are deleted (which destroys their interfaces and bridges).
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

log = logging.getLogger("mycel.testing.netns")

DEFAULT_PREFIX = "mycel-"
"""Namespace name prefix of labs made by this module (with the creator's pid after it)."""

_ALLOWED_NETS = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "198.18.0.0/15", "fd00::/8", "fe80::/10")
)

_IFNAME_MAX = 15


class NetnsError(RuntimeError):
    """A lab command failed (the message holds the command and its stderr)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip args...`` in the caller's namespace."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def available() -> bool:
    """Whether this process can make namespaces (root with a working ``ip netns``)."""
    if os.geteuid() != 0:
        return False
    try:
        return _ip("netns", "list", check=False).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def check_address(cidr: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """Parse ``cidr`` (``10.1.0.2/24``), refusing addresses outside the private / benchmarking ranges."""
    iface = ipaddress.ip_interface(cidr)
    if not any(iface.ip in net for net in _ALLOWED_NETS):
        raise ValueError(f"{cidr}: lab addresses must be private (10/8, 172.16/12, 192.168/16, fd00::/8) or 198.18/15")
    return iface


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _ns_pids(name: str) -> list[int]:
    proc = _ip("netns", "pids", name, check=False)
    return [int(x) for x in proc.stdout.split() if x.isdigit()]


def _kill_ns_processes(name: str, grace: float = 2.0) -> None:
    """SIGTERM every process in namespace ``name``, then SIGKILL what is left after ``grace`` seconds."""
    pids = _ns_pids(name)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while pids and time.monotonic() < deadline:
            pids = [p for p in _ns_pids(name) if _pid_alive(p)]
            if pids:
                time.sleep(0.05)
        if not pids:
            return
    if pids:
        log.warning("netns %s: processes %s survived SIGKILL", name, pids)


def _delete_ns(name: str) -> None:
    _kill_ns_processes(name)
    proc = _ip("netns", "delete", name, check=False)
    if proc.returncode != 0 and name in _list_ns():
        log.warning("netns %s: delete failed: %s", name, proc.stderr.strip())


def _list_ns() -> list[str]:
    proc = _ip("netns", "list", check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete namespaces named ``<prefix><pid>-...`` whose creating process no longer runs.

    Returns the names removed. Namespaces of live processes (another test run going on now) are left alone.
    """
    removed = []
    for name in _list_ns():
        if not name.startswith(prefix):
            continue
        pid_part = name[len(prefix) :].split("-", 1)[0]
        if not pid_part.isdigit() or _pid_alive(int(pid_part)):
            continue
        log.info("netns: removing %s left by a run that is gone", name)
        _delete_ns(name)
        removed.append(name)
    return removed


@dataclass
class Namespace:
    """One network namespace of a lab (its loopback is up)."""

    name: str
    """The full namespace name (as ``ip netns`` knows it)."""
    label: str
    """The short name the test gave it."""
    lab: NetLab = field(repr=False)
    _ifnames: itertools.count[int] = field(default_factory=lambda: itertools.count(0), repr=False)

    def prefix(self) -> list[str]:
        """The argv prefix that runs a command in this namespace (``ip netns exec <name>``)."""
        return ["ip", "netns", "exec", self.name]

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` wrapped so that it runs inside this namespace (for ``trio.run_process`` and friends)."""
        return [*self.prefix(), *argv]

    def python_command(self, argv: Sequence[str]) -> list[str]:
        """A Python run (this interpreter, unbuffered) of ``argv`` (``-m mod ...`` or ``script.py ...``) in here."""
        return self.command([sys.executable, "-u", *argv])

    def run(self, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace to completion; raise :class:`NetnsError` on failure when ``check``."""
        proc = subprocess.run(self.command(argv), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise NetnsError(f"[{self.label}] {' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the namespace; the lab stops it at teardown if it still runs."""
        proc: subprocess.Popen[Any] = subprocess.Popen(self.command(argv), **kwargs)
        self.lab._procs.append(proc)
        return proc

    def python(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start this Python interpreter with ``argv`` inside the namespace (see :meth:`popen`)."""
        return self.popen([sys.executable, "-u", *argv], **kwargs)

    def ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``ip -n <ns> args...``."""
        return _ip("-n", self.name, *args)

    def sysctl(self, key: str, value: str) -> None:
        """Set a sysctl inside the namespace (``net.*`` keys are per namespace)."""
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def ifname(self, base: str) -> str:
        """A fresh interface name in this namespace starting with ``base`` (at most 15 characters)."""
        suffix = str(next(self._ifnames))
        return base[: _IFNAME_MAX - len(suffix)] + suffix

    def add_addr(self, ifname: str, cidr: str) -> None:
        """Put ``cidr`` on ``ifname`` (checked by :func:`check_address`); IPv6 addresses skip DAD."""
        iface = check_address(cidr)
        extra = ["nodad"] if iface.version == 6 else []
        self.ip("addr", "add", str(iface), "dev", ifname, *extra)

    def up(self, ifname: str) -> None:
        """Bring ``ifname`` up."""
        self.ip("link", "set", ifname, "up")

    def add_route(self, dest: str, *, via: str | None = None, dev: str | None = None) -> None:
        """Add a route (``dest`` may be ``default``); a default route only ever points into the lab."""
        args = ["route", "add", dest]
        if via is not None:
            check_address(via)
            args += ["via", via]
        if dev is not None:
            args += ["dev", dev]
        self.ip(*args)

    def bridge(self, base: str = "br") -> str:
        """Create a bridge in this namespace, up, and return its name."""
        name = self.ifname(base)
        self.ip("link", "add", name, "type", "bridge")
        # forward at once: no STP listening/learning delay before frames cross
        self.ip("link", "set", name, "type", "bridge", "forward_delay", "0", "stp_state", "0")
        self.up(name)
        return name

    def links(self) -> list[str]:
        """Names of this namespace's interfaces."""
        out = self.ip("-o", "link", "show").stdout
        return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


@dataclass
class Veth:
    """A veth pair: ``a_if`` in ``a``, ``b_if`` in ``b``."""

    a: Namespace
    a_if: str
    b: Namespace
    b_if: str


@dataclass
class Lan:
    """Hosts on one bridge (see :meth:`NetLab.lan`): the host namespaces are ``hosts``."""

    switch: Namespace
    """The namespace holding the bridge (no address of its own)."""
    bridge: str
    hosts: list[Namespace]
    ips: list[ipaddress.IPv4Address | ipaddress.IPv6Address]
    """The address of each host (same order as ``hosts``)."""
    ifnames: list[str]
    """Each host's interface on the LAN."""


class NetLab:
    """A set of namespaces made for one test; a context manager that removes all of them on exit.

    ``prefix`` names the lab's namespaces (default ``mycel-``); stale ones with that prefix are removed
    when the lab opens. ``term_grace`` is how long started processes get between SIGTERM and SIGKILL.
    """

    _serial = itertools.count(0)

    def __init__(self, prefix: str = DEFAULT_PREFIX, *, term_grace: float = 3.0) -> None:
        if not prefix or "/" in prefix or " " in prefix:
            raise ValueError(f"bad namespace prefix {prefix!r}")
        self.prefix = prefix
        self.term_grace = term_grace
        self.namespaces: list[Namespace] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._open = False

    def __enter__(self) -> NetLab:
        if not available():
            raise NetnsError("network namespaces need root and iproute2 (ip netns)")
        cleanup_stale(self.prefix)
        self._open = True
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def namespace(self, label: str) -> Namespace:
        """Create a namespace (loopback up) labelled ``label``."""
        if not self._open:
            raise NetnsError("the lab is not open (use it as a context manager)")
        name = f"{self.prefix}{os.getpid()}-{next(NetLab._serial)}-{label}"
        _ip("netns", "add", name)
        ns = Namespace(name=name, label=label, lab=self)
        self.namespaces.append(ns)
        ns.up("lo")
        return ns

    def veth(
        self,
        a: Namespace,
        b: Namespace,
        a_addr: str | None = None,
        b_addr: str | None = None,
        *,
        a_base: str = "eth",
        b_base: str = "eth",
        b_bridge: str | None = None,
    ) -> Veth:
        """A veth pair between ``a`` and ``b``, both ends up, with optional addresses; when ``b_bridge``
        is given, ``b``'s end is enslaved to that bridge (and gets no address)."""
        a_if = a.ifname(a_base)
        b_if = b.ifname(b_base)
        a.ip("link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
        if b_bridge is not None:
            b.ip("link", "set", b_if, "master", b_bridge)
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            if addr is not None:
                ns.add_addr(ifname, addr)
            ns.up(ifname)
        return Veth(a, a_if, b, b_if)

    def lan(self, subnet: str, n_hosts: int, *, label: str = "lan", host_label: str = "h") -> Lan:
        """``n_hosts`` namespaces joined by one bridge (in a namespace of its own), addressed from ``subnet``
        (``.1``, ``.2``, ... in host order), each with a multicast route on its LAN interface (IPv4) or
        without duplicate address detection (IPv6: its link-local address works at once)."""
        net = ipaddress.ip_network(subnet)
        check_address(f"{net.network_address}/{net.prefixlen}")
        if n_hosts < 1 or n_hosts > net.num_addresses - 2:
            raise ValueError(f"{n_hosts} hosts do not fit in {subnet}")
        switch = self.namespace(label)
        bridge = switch.bridge()
        hosts, ips, ifnames = [], [], []
        for i in range(n_hosts):
            ns = self.namespace(f"{host_label}{i}")
            if net.version == 6:  # no duplicate address detection: link-local addresses usable at once
                ns.sysctl("net.ipv6.conf.default.accept_dad", "0")
                ns.sysctl("net.ipv6.conf.all.accept_dad", "0")
            ip = net.network_address + 1 + i
            v = self.veth(ns, switch, f"{ip}/{net.prefixlen}", b_base="p", b_bridge=bridge)
            if net.version == 4:
                ns.add_route("224.0.0.0/4", dev=v.a_if)
            hosts.append(ns)
            ips.append(ip)
            ifnames.append(v.a_if)
        return Lan(switch=switch, bridge=bridge, hosts=hosts, ips=ips, ifnames=ifnames)

    def close(self) -> None:
        """Stop the lab's processes and delete its namespaces (idempotent; errors are logged, not raised)."""
        self._open = False
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    proc.terminate()
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + self.term_grace
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    log.warning("netns: process %s did not die", proc.pid)
        self._procs.clear()
        for ns in reversed(self.namespaces):
            try:
                _delete_ns(ns.name)
            except Exception:  # teardown goes on with the next namespace
                log.exception("netns: deleting %s failed", ns.name)
        self.namespaces.clear()


__all__ = [
    "DEFAULT_PREFIX",
    "Lan",
    "Namespace",
    "NetLab",
    "NetnsError",
    "Veth",
    "available",
    "check_address",
    "cleanup_stale",
]

"""Process figures from /proc (stdlib only: imported by peers running in other virtualenvs too).

``cpu_seconds(pid)`` is user+system CPU time of a process (utime+stime from /proc/<pid>/stat);
``rss_bytes(pid)`` its resident set (VmRSS from /proc/<pid>/status); ``system_busy_seconds()`` the
CPU time all processes used (from /proc/stat), so a benchmark can tell how much others took meanwhile.
"""

from __future__ import annotations

import os
import resource

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | None = None) -> float:
    """utime+stime of ``pid`` (default: this process) in seconds."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # the command name (field 2) may contain spaces: split after its closing parenthesis
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # fields 14 and 15 of proc(5)


def system_busy_seconds() -> float:
    """Non-idle CPU time of the whole machine since boot (user+nice+system+irq+softirq+steal)."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def user_processes_cpu() -> dict[int, float]:
    """utime+stime of every user-space process (kernel threads, which have no command line, are left
    out: they mostly do our own loopback traffic's work). Processes that vanish meanwhile are skipped."""
    out: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        pid = int(name)
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if not f.read(1):
                    continue
            out[pid] = cpu_seconds(pid)
        except (OSError, ValueError, IndexError):
            continue
    return out


def steal_seconds() -> float:
    """CPU time the hypervisor gave to other guests (from /proc/stat)."""
    with open("/proc/stat", "rb") as f:
        fields = f.readline().split()
    return int(fields[8]) / _TICKS


def rss_bytes(pid: int) -> int:
    """VmRSS of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit towards ``want`` (capped at the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft if soft != resource.RLIM_INFINITY else want
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target

"""Reports of simulation runs: JSON, a markdown summary and PNG plots (matplotlib, from the ``bench``
extra; without it the plots are skipped and the markdown says so)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mycel.sim.runner import RunResult


def _plt() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the bench extra is not installed
        return None
    return plt


def _finish(plt: Any, fig: Any, ax: Any, path: Path, *, title: str, xlabel: str, ylabel: str, legend: bool = True) -> bool:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_latency_cdf(series: Mapping[str, Sequence[float]], path: Path, *, title: str) -> bool:
    """One CDF line per series of delivery latencies (seconds); False when matplotlib is missing."""
    plt = _plt()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in series.items():
        xs = sorted(values)
        if xs:
            ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))], label=label)
    return _finish(plt, fig, ax, path, title=title, xlabel="delivery latency from publish (virtual s)", ylabel="fraction of deliveries")


def plot_mesh_degree(result: RunResult, path: Path, *, title: str) -> bool:
    """Min / median / max mesh degree over time, with the [D_lo, D_hi] band."""
    plt = _plt()
    if plt is None:
        return False
    ts, lo, med, hi = [], [], [], []
    for t, row in zip(result.mesh_times, result.mesh_degrees):
        vals = sorted(d for d in row if d >= 0)
        if not vals:
            continue
        ts.append(t)
        lo.append(vals[0])
        med.append(vals[len(vals) // 2])
        hi.append(vals[-1])
    cfg = result.options.config
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.axhspan(cfg.d_lo, cfg.d_hi, color="green", alpha=0.1, label=f"[D_lo, D_hi] = [{cfg.d_lo}, {cfg.d_hi}]")
    ax.plot(ts, hi, label="max")
    ax.plot(ts, med, label="median")
    ax.plot(ts, lo, label="min")
    if result.partition_window is not None:
        ax.axvspan(*result.partition_window, color="red", alpha=0.1, label="partition")
    return _finish(plt, fig, ax, path, title=title, xlabel="virtual time (s)", ylabel="mesh degree")


def plot_reach(result: RunResult, path: Path, *, title: str) -> bool:
    """Reach per message (fraction of non-publishers)."""
    plt = _plt()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(range(len(result.messages)), [m.reach * 100 for m in result.messages])
    ax.set_xticks(range(len(result.messages)), [m.id for m in result.messages], rotation=45)
    ax.set_ylim(0, 105)
    return _finish(plt, fig, ax, path, title=title, xlabel="message id", ylabel="reach (%)", legend=False)


def plot_histograms(series: Mapping[str, Sequence[float]], path: Path, *, title: str, xlabel: str) -> bool:
    """Overlaid histograms (e.g. scores of honest vs attacker peers)."""
    plt = _plt()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, values in series.items():
        if values:
            ax.hist(values, bins=40, alpha=0.6, label=f"{label} (n={len(values)})")
    return _finish(plt, fig, ax, path, title=title, xlabel=xlabel, ylabel="count")


def _fmt(x: Any, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, float):
        return f"{x:.3f}{unit}"
    return f"{x}{unit}"


def run_markdown(summary: Mapping[str, Any], plots: Sequence[str]) -> str:
    """The markdown summary of one run (from :func:`~mycel.sim.runner.summarize`)."""
    mesh = summary["mesh"]
    lines = [
        f"# {summary['scenario']}: {summary['nodes']} nodes, seed {summary['seed']}",
        "",
        f"IDONTWANT {'on' if summary['idontwant'] else 'off'}; wall clock {summary['wall_seconds']} s, CPU {summary['cpu_seconds']} s, "
        f"peak RSS {summary['max_rss_mib']} MiB.",
        "",
        f"* reach (messages {summary['checked_from_message']}+): min {_fmt(summary['min_reach'] * 100 if summary['min_reach'] == summary['min_reach'] else None, ' %')}",
        f"* delivery latency from publish: p50 {_fmt(summary['latency_p50'], ' s')}, p99 {_fmt(summary['latency_p99'], ' s')}; "
        f"longest time to reach all {_fmt(summary['max_time_to_all'], ' s')}",
        f"* duplicates per node per message: {_fmt(summary['avg_duplicates_per_node_per_message'])}; "
        f"duplicate payload bytes received: {summary['duplicate_payload_bytes']:,}",
        f"* mesh degree from t={mesh['from']} s: min {mesh['min']}, max {mesh['max']} "
        f"(bounds [{mesh['d_lo']}, {mesh['d_hi']}]); samples out of bounds {mesh['out_of_range']} of {mesh['samples']}, "
        f"out of bounds longer than 3 heartbeats {mesh['persistent']}, empty {mesh['empty']}",
        "",
        "| message | publisher | reach | time to disseminate | p50 | latency p99 | time to all | avg dups |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in summary["messages"]:
        lines.append(
            f"| {m['id']} | {m['publisher']} | {m['reach'] * 100:.1f} % | {_fmt(m['time_to_disseminate'], ' s')} | "
            f"{_fmt(m['p50'], ' s')} | {_fmt(m['latency_p99'], ' s')} | {_fmt(m['time_to_all'], ' s')} | {_fmt(m['avg_duplicates'])} |"
        )
    lines.append("")
    if plots:
        lines += [f"![{p}]({p})" for p in plots]
    else:
        lines.append("(plots skipped: matplotlib is not installed — `pip install mycel[bench]`)")
    return "\n".join(lines) + "\n"


def write_run(result: RunResult, summary: Mapping[str, Any], out: str | Path, *, logs: bool = True) -> Path:
    """Write a run's logs (``hosts/``, ``events.log``), ``params.json``, ``summary.json``,
    ``summary.md`` and plots into ``out``; returns the markdown's path."""
    base = Path(out)
    base.mkdir(parents=True, exist_ok=True)
    if logs:
        result.log.write(base)
    (base / "params.json").write_text(json.dumps(result.script.to_json()))
    (base / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    name = f"{summary['scenario']}, {summary['nodes']} nodes"
    plots: list[str] = []
    lat = [x for m in result.messages[summary["checked_from_message"] - 1 :] for x in m.latencies]
    if plot_latency_cdf({name: lat}, base / "latency_cdf.png", title=f"delivery latency CDF ({name})"):
        plots.append("latency_cdf.png")
    if plot_mesh_degree(result, base / "mesh_degree.png", title=f"mesh degree over time ({name})"):
        plots.append("mesh_degree.png")
    if plot_reach(result, base / "reach.png", title=f"reach per message ({name})"):
        plots.append("reach.png")
    md = base / "summary.md"
    md.write_text(run_markdown(summary, plots))
    return md


__all__ = ["plot_histograms", "plot_latency_cdf", "plot_mesh_degree", "plot_reach", "run_markdown", "write_run"]

"""``plot.png``: quality against cost per question, one point per method, readable at a glance.

One panel per kind of quality measured (token F1, multiple-choice accuracy, abstention on unanswerable questions),
drawn only where at least ``MIN_PANEL_QUESTIONS`` questions measure it; a method with fewer questions than that is
left out of the panel, and the panel says so. Each point carries its 95% bootstrap interval (questions resampled)
where it rests on at least ``MIN_BAND_QUESTIONS`` questions. Methods are told apart by colour and marker, named
in a legend under each panel with their number of questions, so that no label covers another or runs off the
figure; points at 0% are drawn whole.
"""

from __future__ import annotations

from pathlib import Path

MIN_PANEL_QUESTIONS = 10  # fewer questions than this: no point (and no panel) for them
MIN_BAND_QUESTIONS = 20  # fewer: a bootstrap interval would mostly show the noise of resampling a handful
BOOTSTRAP_SAMPLES = 2000

# key, axis label, which rows measure it, the value of a row (0-100)
PANELS = (
    ("f1", "token F1 on answerable questions (%)",
     lambda r: not r["unanswerable"] and r["kind"] != "mc", lambda r: 100 * r["f1"]),
    ("accuracy", "multiple-choice accuracy (%)",
     lambda r: not r["unanswerable"] and r["kind"] == "mc", lambda r: 100 * bool(r["correct"])),
    ("abstention", "abstention on unanswerable questions (%)",
     lambda r: r["unanswerable"], lambda r: 100 * bool(r["abstained"])),
)
COUNTS = {"f1": "n_free", "accuracy": "n_mc", "abstention": "n_unanswerable"}
MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


def bootstrap_interval(values: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of the mean of ``values``."""
    import numpy as np

    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(samples, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def panel_points(summary: dict[str, dict], rows: list[dict] | None, key: str) -> tuple[list[dict], list[str]]:
    """The points of one panel (method, cost, value, n, interval or None) and the methods left out for having
    fewer than MIN_PANEL_QUESTIONS questions."""
    select, value = next((s, v) for k, _, s, v in PANELS if k == key)
    points, left_out = [], []
    for method, s in summary.items():
        if s.get(key) is None:
            continue
        values = [value(r) for r in rows if r["method"] == method and select(r)] if rows is not None else None
        n = len(values) if values is not None else s.get(COUNTS[key]) or 0
        if n < MIN_PANEL_QUESTIONS:
            left_out.append(f"{method} (n={n})")
            continue
        interval = bootstrap_interval(values) if values and n >= MIN_BAND_QUESTIONS else None
        points.append({"method": method, "cost": s["cost_s"], "value": s[key], "n": n, "interval": interval})
    return points, left_out


def plot(summary: dict[str, dict], path: Path, title: str = "", rows: list[dict] | None = None) -> None:
    """Quality against cost per question (``summary`` from ``report.summarise``; ``rows``, the scored answers,
    give the bootstrap intervals). No figure is written when no kind of quality has enough questions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    panels = []
    for key, name, _, _ in PANELS:
        points, left_out = panel_points(summary, rows, key)
        if points:
            panels.append((key, name, points, left_out))
    if not panels:
        Path(path).unlink(missing_ok=True)  # an older figure would no longer match the report
        return
    methods = list(summary)
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    markers = {m: MARKERS[i % len(MARKERS)] for i, m in enumerate(methods)}

    figure, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 4.6), squeeze=False)
    banded = False
    for axis, (key, name, points, left_out) in zip(axes[0], panels):
        for point in points:
            label = f"{point['method']}  (n={point['n']})"
            if point["interval"] is not None:
                low, high = point["interval"]
                axis.errorbar(point["cost"], point["value"], yerr=[[point["value"] - low], [high - point["value"]]],
                              fmt="none", ecolor=colours[point["method"]], elinewidth=1.2, capsize=4, alpha=0.8,
                              zorder=2)
                banded = True
            axis.scatter(point["cost"], point["value"], s=60, color=colours[point["method"]],
                         marker=markers[point["method"]], edgecolor="black", linewidth=0.5, label=label, zorder=3,
                         clip_on=False)
        axis.set_xlabel("seconds per question (absorption amortised)")
        axis.set_ylabel(name)
        axis.set_xscale("log")
        costs = [p["cost"] for p in points]
        axis.set_xlim(min(costs) / 1.6, max(costs) * 1.6)
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        top = max(max(p["value"], p["interval"][1] if p["interval"] else 0) for p in points)
        axis.set_ylim(-0.04 * max(5.0, top * 1.15), min(104.0, max(5.0, top * 1.15)))
        axis.grid(True, alpha=0.3)
        legend_title = f"left out, under {MIN_PANEL_QUESTIONS} questions: {', '.join(left_out)}" if left_out else None
        axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=2, frameon=False, fontsize=9,
                    title=legend_title, title_fontsize=8)
    heading = title
    if banded:
        heading += ("\n" if heading else "") + f"bars: 95% bootstrap interval (methods with {MIN_BAND_QUESTIONS}+ questions)"
    figure.suptitle(heading, fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)

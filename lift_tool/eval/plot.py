"""``plot.png``: quality against cost per question, one point per method."""

from __future__ import annotations

from pathlib import Path


def plot(summary: dict[str, dict], path: Path, title: str = "") -> None:
    """Quality against cost per question, one point per method; one panel per kind of quality measured."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    panels = [(key, name) for key, name in (("f1", "token F1 (answerable, %)"), ("accuracy", "MC accuracy (%)"),
                                           ("abstention", "abstention on unanswerable (%)"))
              if any(s[key] is not None for s in summary.values())]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    for axis, (key, name) in zip(axes[0], panels):
        for method, s in summary.items():
            if s[key] is None:
                continue
            axis.scatter(s["cost_s"], s[key], s=50)
            axis.annotate(method, (s["cost_s"], s[key]), textcoords="offset points", xytext=(6, 4))
        axis.set_xlabel("seconds per question (absorption amortised)")
        axis.set_ylabel(name)
        axis.set_xscale("log")
        axis.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.xaxis.set_minor_formatter(NullFormatter())
        top = max(s[key] for s in summary.values() if s[key] is not None)
        axis.set_ylim(0, max(5.0, top * 1.15))
        axis.grid(True, alpha=0.3)
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

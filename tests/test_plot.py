"""lift eval's figure: n per method, bootstrap intervals where there are enough questions, no panel or point from
fewer than 10 questions, labels in a legend instead of on the points."""

from __future__ import annotations

import random

from lift_tool.eval.plot import MIN_BAND_QUESTIONS, bootstrap_interval, panel_points, plot
from lift_tool.eval.report import summarise


def rows_for(method: str, n_free: int, n_mc: int, n_unanswerable: int, rng: random.Random) -> list[dict]:
    rows = []
    for i in range(n_free + n_mc + n_unanswerable):
        kind = "mc" if n_free <= i < n_free + n_mc else "extractive"
        rows.append({"doc_id": "d", "index": i, "method": method, "kind": kind, "unanswerable": i >= n_free + n_mc,
                     "f1": rng.random(), "em": 0.0, "contains": 0.0, "correct": rng.random() > 0.5,
                     "abstained": rng.random() > 0.7, "score": 0.5, "prediction": f"p{i}", "latency_s": 1.0 + rng.random()})
    return rows


def test_panels_and_points_need_ten_questions_and_bands_twenty(tmp_path):
    rng = random.Random(0)
    rows = rows_for("rag", 40, 3, 12, rng) + rows_for("lift", 8, 3, 12, rng)
    summary = summarise(rows, {"d": {"train_seconds": 30.0}})

    f1, left_out = panel_points(summary, rows, "f1")
    assert [p["method"] for p in f1] == ["rag"] and f1[0]["n"] == 40 and left_out == ["lift (n=8)"]
    low, high = f1[0]["interval"]
    assert low < f1[0]["value"] < high  # 40 questions: an interval around the mean
    assert panel_points(summary, rows, "accuracy")[0] == []  # 3 multiple-choice questions each: no panel
    abstention, _ = panel_points(summary, rows, "abstention")
    assert {p["n"] for p in abstention} == {12} and all(p["interval"] is None for p in abstention)  # under 20: no band

    plot(summary, tmp_path / "plot.png", title="test", rows=rows)
    assert (tmp_path / "plot.png").stat().st_size > 10_000


def test_no_figure_from_too_few_questions(tmp_path):
    rows = rows_for("rag", 4, 0, 2, random.Random(1))
    (tmp_path / "plot.png").write_bytes(b"an old figure")
    plot(summarise(rows, {}), tmp_path / "plot.png", rows=rows)
    assert not (tmp_path / "plot.png").exists()


def test_the_bootstrap_interval_narrows_with_more_questions():
    few = bootstrap_interval([0, 100] * (MIN_BAND_QUESTIONS // 2))
    many = bootstrap_interval([0, 100] * 200)
    assert few[0] < many[0] < 50 < many[1] < few[1]

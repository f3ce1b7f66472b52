"""Behaviour on the real bundled model: after absorbing a short document of invented facts, the adapter
answers questions about it, without the document in the prompt, that the base model gets wrong."""

import pytest

from lift_tool.demo import is_right
from lift_tool.lift import Lift

pytestmark = pytest.mark.slow

DOCUMENT = """# The Orvane Clockworks

The Orvane Clockworks is a small factory in the mountain village of Tessaly. It was founded in 1823 by the
watchmaker Hedda Lindqvist. The factory makes brass tower clocks and sells them to churches across the Vell
valley. Its largest clock, the Great Tessaly Bell Clock, weighs four tonnes and stands in the square of Marrin.

The workshop is powered by a water wheel on the river Sallow. The company has thirty-two workers. The current
director is Piet Amundsen, who was appointed in 2019. Every year on 9 October the village holds the Festival of
Gears, when the clocks of Tessaly all strike thirteen at noon.
"""

QUESTIONS = [
    ("Who founded the Orvane Clockworks?", ["Hedda Lindqvist", "Lindqvist"]),
    ("When was the Orvane Clockworks founded?", ["1823"]),
    ("Who is the current director of the Orvane Clockworks?", ["Piet Amundsen", "Amundsen"]),
    ("How many workers does the company have?", ["thirty-two", "32"]),
    ("What river powers the workshop's water wheel?", ["Sallow"]),
]


def test_adapter_answers_what_the_base_model_cannot(tmp_path):
    from lift_tool.config import Settings

    lift = Lift(Settings(home=tmp_path / "home"))
    result = lift.absorb(DOCUMENT, progress=False)
    assert not result.cached

    base_right = lift_right = 0
    for question, answers in QUESTIONS:
        base = lift.ask(question, [result.document.doc_id], mode="base", max_new_tokens=24).text
        adapted = lift.ask(question, [result.document.doc_id], mode="lift", max_new_tokens=24).text
        base_right += is_right(base, answers)
        lift_right += is_right(adapted, answers)
    assert base_right == 0, "the base model should not know invented facts"
    assert lift_right >= 3, f"the adapter answered only {lift_right} of {len(QUESTIONS)} questions"

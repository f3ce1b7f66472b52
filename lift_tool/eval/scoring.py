"""Scoring answers: SQuAD token F1 and exact match, multiple-choice accuracy, containment, abstention.

The score of a row (:func:`score_answer`) is token F1 for a question with a free-form or extractive answer, 1/0
for a multiple-choice question (the chosen option is read from the answer), and 1/0 for an unanswerable question
(1 when the answer abstains, ``prompts.is_abstention``).

SQuAD normalisation (as the official evaluation script, which removes ASCII punctuation only; curly quotes and
dashes are removed here too): lower-case, remove punctuation, remove the articles a / an / the, collapse
whitespace. F1 is over the bag of normalised tokens; a question with several gold answers
takes the best one.

Multiple choice: the options are labelled ``A``-``D`` (QuALITY) or ``1``-``4`` (LooGLE). The chosen option is
read from the answer in this order:
  1. a label at the start of the answer: "C" alone, "(C)", "C)", "C.", "C:", "C," ("3", "(3)" ... for numbered
     options, but not "3.5" or "1,000");
  2. a label marked anywhere: "(C)", "option C", "answer is C", "Answer: C";
  3. otherwise the option whose text best matches the answer: the option whose normalised text is inside the
     answer (the longest, when one option's text holds another's; none when the answer names two unrelated
     options), else the highest token F1 with it, at least 0.5.
An answer from which no option can be read is wrong.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import TYPE_CHECKING

from lift_tool.prompts import is_abstention

if TYPE_CHECKING:
    from lift_tool.eval.data import EvalQuestion

ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
PUNCTUATION = set(string.punctuation) | {"‘", "’", "“", "”", "–", "—", "…"}


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in PUNCTUATION)
    text = ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    predicted = normalize_answer(prediction).split()
    expected = normalize_answer(gold).split()
    if not predicted or not expected:  # the official script: both empty is a match, one empty is not
        return float(predicted == expected)
    common = Counter(predicted) & Counter(expected)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(predicted)
    recall = overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def contains(prediction: str, gold: str) -> float:
    """1 when the normalised gold answer appears in the normalised prediction (a lenient, recall-like score)."""
    expected = normalize_answer(gold)
    return float(bool(expected) and f" {expected} " in f" {normalize_answer(prediction)} ")


def best(metric, prediction: str, golds: list[str]) -> float:
    """The best score of ``prediction`` against any of the gold answers (0 when there are none)."""
    return max((metric(prediction, gold) for gold in golds), default=0.0)


# ----------------------------------------------------------------------------------------- multiple choice


def parse_options(question: str) -> dict[str, str]:
    """The labelled options written into a question: ``(A) text`` lines or ``1. text`` lines."""
    lettered = dict(re.findall(r"^\s*\(([A-Z])\)\s*(.+?)\s*$", question, flags=re.MULTILINE))
    if len(lettered) >= 2:
        return lettered
    numbered = dict(re.findall(r"^\s*(\d)[.)]\s+(.+?)\s*$", question, flags=re.MULTILINE))
    return numbered if len(numbered) >= 2 else {}


def choose_option(prediction: str, options: dict[str, str]) -> str | None:
    """The label of the option an answer chooses, by the rule in the module docstring; None if none."""
    if not options:
        return None
    labels = "".join(re.escape(label) for label in options)
    text = prediction.strip()
    first = re.match(rf"^\(?([{labels}])(?:[).:,](?!\d)|$)", text)  # "1,000 people" is not option 1
    if first:
        return first.group(1)
    marked = re.search(rf"\(([{labels}])\)|(?i:\b(?:option|answer is|answer:|choice))\s*\(?([{labels}])\b", text)
    if marked:
        return marked.group(1) or marked.group(2)
    # Options whose whole text the answer contains; one inside another ("John", "John and Mary") counts as the
    # longer one, and an answer naming two unrelated options chooses neither.
    normalised = f" {normalize_answer(text)} "
    named = {}
    for label, option in options.items():
        option_text = normalize_answer(option)
        if option_text and f" {option_text} " in normalised:
            named[label] = option_text
    if named:
        longest = max(named, key=lambda label: len(named[label]))
        if all(f" {other} " in f" {named[longest]} " for other in named.values()):
            return longest
        return None
    scored = max(options, key=lambda label: token_f1(text, options[label]))
    return scored if token_f1(text, options[scored]) >= 0.5 else None


def mc_correct(prediction: str, options: dict[str, str], answer: str) -> float:
    return float(choose_option(prediction, options) == answer)


# ------------------------------------------------------------------------------------------------- a row


def score_answer(question: EvalQuestion, prediction: str) -> dict:
    """The row's metrics: ``score`` (the headline), and f1 / em / contains / correct / abstained as they apply."""
    abstained = is_abstention(prediction)
    result: dict = {"abstained": abstained, "f1": None, "em": None, "contains": None, "correct": None}
    if question.unanswerable:
        result["score"] = float(abstained)
    elif question.kind == "mc":
        result["correct"] = mc_correct(prediction, question.options, question.answers[0])
        result["score"] = result["correct"]
    else:
        result["f1"] = best(token_f1, prediction, question.answers)
        result["em"] = best(exact_match, prediction, question.answers)
        result["contains"] = best(contains, prediction, question.answers)
        result["score"] = result["f1"]
    return result

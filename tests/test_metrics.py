"""Scoring: SQuAD normalisation, token F1 and exact match on known examples, multiple-choice reading."""

import pytest

from lift_tool.eval.scoring import best, choose_option, contains, exact_match, mc_correct, normalize_answer, parse_options, token_f1

QUALITY_QUESTION = """What does the author describe to be a confusing element of the debate?

 (A) Traits for kinship did not persist into modern day
 (B) Humans didn't understand genetics in early evolution
 (C) Humans are capable of treating anyone as kin
 (D) Kin-selection would not have benefitted early humans"""
LOOGLE_QUESTION = "How many people were in Picardo's family when he was twelve?\n1. seven\n2. six\n3. five\n4. four"


def test_normalisation_follows_squad():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear") == "apple pear"
    assert normalize_answer("Theodore") == "theodore"  # "the" only as a word


def test_exact_match():
    assert exact_match("the Denver Broncos.", "Denver Broncos") == 1.0
    assert exact_match("Denver", "Denver Broncos") == 0.0


def test_token_f1_known_values():
    assert token_f1("Denver Broncos", "Denver Broncos") == 1.0
    # Official SQuAD dev example (Super Bowl 50): 3 of 3 predicted tokens among 11 gold tokens.
    gold = "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California"
    assert token_f1("Santa Clara, California", gold) == pytest.approx(2 * 1 * (3 / 11) / (1 + 3 / 11))
    assert token_f1("the cat sat", "cat sat on mat") == pytest.approx(2 / 3)
    assert token_f1("nothing alike", "Denver Broncos") == 0.0
    assert token_f1("", "Denver") == 0.0
    # repeated tokens count only as often as they appear in both
    assert token_f1("one one one", "one two") == pytest.approx(2 * (1 / 3) * (1 / 2) / ((1 / 3) + (1 / 2)))


def test_best_takes_the_best_gold_answer():
    golds = ["nine", "This region includes territory belonging to nine nations."]
    assert best(token_f1, "nine", golds) == 1.0
    assert best(token_f1, "anything", []) == 0.0
    assert best(contains, "It belongs to nine nations.", golds) == 1.0
    assert contains("ninety", "nine") == 0.0  # whole tokens only


def test_parse_options_both_styles():
    assert parse_options(QUALITY_QUESTION)["C"] == "Humans are capable of treating anyone as kin"
    assert parse_options(LOOGLE_QUESTION) == {"1": "seven", "2": "six", "3": "five", "4": "four"}
    assert parse_options("Who founded the town in 1687?") == {}


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("C", "C"),
        ("(C) Humans are capable of treating anyone as kin", "C"),
        ("B.", "B"),
        ("The correct answer is (D).", "D"),
        ("Answer: A", "A"),
        ("Humans are capable of treating anyone as kin.", "C"),
        ("A long time ago, people lived in caves.", None),  # the article "A" is not a choice
        ("I do not know.", None),
    ],
)
def test_choose_option_lettered(prediction, expected):
    assert choose_option(prediction, parse_options(QUALITY_QUESTION)) == expected


def test_choose_option_numbered_and_scoring():
    options = parse_options(LOOGLE_QUESTION)
    assert choose_option("3", options) == "3"
    assert choose_option("There were five people.", options) == "3"
    assert mc_correct("3.", options, "3") == 1.0
    assert mc_correct("2", options, "3") == 0.0


def test_numbers_are_not_option_labels_and_nested_options_choose_the_longer():
    numbered = {"1": "ten", "2": "a hundred", "3": "1,000 people"}
    assert choose_option("1,000 people", numbered) == "3"
    assert choose_option("3.5 years", {"1": "two", "2": "five", "3": "ten"}) is None
    nested = {"A": "John", "B": "John and Mary", "C": "Peter"}
    assert choose_option("It was John and Mary.", nested) == "B"
    assert choose_option("John or Peter.", nested) is None  # two unrelated options named

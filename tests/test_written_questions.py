"""Questions the model writes itself: what is kept, and the writer on the real default model."""

import pytest

from lift_tool.documents import make_document
from lift_tool.training.questions import QAPair, RuleQuestionGenerator, passages, split_sentences
from lift_tool.training.recipe import generate_qa
from lift_tool.training.written_questions import (PASSAGE_SENTENCES, ModelQuestionWriter, as_sentences, restated_pairs,
                                                  restatement_usable, usable)

TEXT = """# Brimley

Brimley was founded in 1841 by the engineer Agatha Moorcroft. The canal is 14 kilometres long.
The Brimley Canal Company has twelve barges. A bridge called the Wendle Arch crosses the canal.
The town's market is held on Thursdays in Moorcroft Square. The Wendle Arch was built of red sandstone in 1852.
"""
PASSAGE = "Brimley was founded in 1841 by the engineer Agatha Moorcroft. The canal is 14 kilometres long."


def test_a_written_pair_is_kept_only_when_its_answer_comes_from_the_passage():
    assert usable("Who founded Brimley?", "The engineer Agatha Moorcroft.", PASSAGE)
    assert not usable("Who founded Brimley", "Agatha Moorcroft", PASSAGE)  # not a question
    assert not usable("Who?", "Agatha Moorcroft", PASSAGE)  # too short to stand alone
    assert not usable("Who founded Brimley?", "The document does not say.", PASSAGE)
    assert not usable("Who founded Brimley?", "Queen Victoria, after the war of 1840.", PASSAGE)  # made up
    assert not usable("Was Brimley founded by Agatha Moorcroft?", "Agatha Moorcroft", PASSAGE)  # in the question
    assert not usable("Who founded Brimley?", "", PASSAGE)


def test_the_model_writes_questions_about_each_passage_and_keeps_the_usable_ones(real_loaded):
    import torch

    model = real_loaded.model
    model.train()
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        writer = ModelQuestionWriter(real_loaded, per_passage=3)
        runs.append(writer.generate(TEXT, "Brimley"))
    assert model.training  # left as it was found
    model.eval()

    text_passages = passages(TEXT, PASSAGE_SENTENCES)
    assert writer.written == 3 * len(text_passages)
    assert len(runs[1]) <= writer.written
    assert runs[0] == runs[1]  # seeded: the same questions again
    for pair in runs[1]:
        passage = text_passages[pair.sentence // PASSAGE_SENTENCES]
        assert pair.form == "written" and pair.answerable
        assert usable(pair.question, pair.answer, passage.text)


def test_written_questions_need_the_model_that_writes_them(tiny_settings):
    settings = tiny_settings.model_copy(
        update={"training": tiny_settings.training.model_copy(update={"written_questions": 2})})
    with pytest.raises(ValueError, match="written_questions"):
        generate_qa(make_document(TEXT, title="Brimley"), settings)


def test_written_pairs_kept_in_a_file_are_read_back_with_the_random_state_writing_left(real_loaded, tmp_path):
    """An interrupted absorption that goes on reads its written pairs back instead of writing them again, and
    samples on from the same random state, as if it had written them."""
    import json

    import torch

    saved = tmp_path / "checkpoint" / "written-questions.json"
    torch.manual_seed(0)
    first = ModelQuestionWriter(real_loaded, per_passage=3).generate(TEXT, "Brimley", saved=saved)
    after_writing = torch.get_rng_state()
    assert first  # the model wrote usable pairs (as in the test above)
    kept = json.loads(saved.read_text())
    assert [QAPair(**pair) for pair in kept["pairs"]] == first
    assert kept["written"] == 3 * len(passages(TEXT, PASSAGE_SENTENCES))

    kept["pairs"][0]["answer"] = "Read from the file."  # what comes back is the file's, not written again
    saved.write_text(json.dumps(kept))
    torch.manual_seed(0)
    writer = ModelQuestionWriter(real_loaded, per_passage=3)
    again = writer.generate(TEXT, "Brimley", saved=saved)
    assert again[0].answer == "Read from the file." and again[1:] == first[1:] and writer.written == kept["written"]
    assert torch.equal(torch.get_rng_state(), after_writing)

    torch.manual_seed(1)  # another random state: the file is not this writing's, so the model writes
    ModelQuestionWriter(real_loaded, per_passage=3).generate(TEXT, "Brimley", saved=saved)
    assert json.loads(saved.read_text())["key"] != kept["key"]


def test_a_restatement_is_kept_only_when_it_says_the_passage_in_other_words_and_adds_no_name_or_number():
    assert restatement_usable(
        "In 1841 the engineer Agatha Moorcroft founded Brimley, whose canal runs for 14 kilometres.", PASSAGE)
    assert restatement_usable("Over the years, Brimley grew from what Agatha Moorcroft founded in 1841.", PASSAGE)
    assert not restatement_usable(PASSAGE, PASSAGE)  # a copy
    assert not restatement_usable("Brimley was founded in 1841 by the engineer Agatha Moorcroft. The canal is long.",
                                  PASSAGE)  # a near copy
    assert not restatement_usable("In 1841 Agatha Moorcroft founded Brimley; its canal is 15 kilometres long.",
                                  PASSAGE)  # a number the passage lacks
    assert not restatement_usable("In 1841 Queen Victoria had the town of Brimley founded by an engineer.",
                                  PASSAGE)  # a name the passage lacks
    assert not restatement_usable("Brimley, 1841.", PASSAGE)  # too short to ask about


def test_a_listed_restatement_becomes_running_sentences():
    reply = "Here are the facts:\n1. Brimley was founded in 1841\n2) Its canal is 14 kilometres long.\n- It has barges"
    assert as_sentences(reply) == ("Brimley was founded in 1841. Its canal is 14 kilometres long. It has barges.")


def test_rule_questions_about_a_restatement_take_the_passage_sentence_they_restate_as_evidence():
    passage = passages(TEXT, PASSAGE_SENTENCES)[1]
    restatement = "Red sandstone was used to build the Wendle Arch in 1852. Moorcroft Square has a market on Thursdays."
    pairs = restated_pairs(restatement, passage, "Brimley", RuleQuestionGenerator(4))
    assert pairs and all(pair.form == "restated" and pair.answerable for pair in pairs)
    by_answer = {pair.answer: pair.sentence for pair in pairs}
    sentences = {sentence.index: sentence.text for sentence in passage.sentences}
    assert "1852" in sentences[by_answer["1852"]]  # asked about the first restated sentence: the Arch's
    assert any("Thursdays" in sentences[index] for answer, index in by_answer.items() if answer != "1852")


def test_the_model_restates_each_passage_and_the_rules_ask_about_the_kept_restatements(real_loaded):
    import torch

    runs, restated = [], []
    for _ in range(2):
        torch.manual_seed(0)
        writer = ModelQuestionWriter(real_loaded, per_passage=0, restatements=2)
        runs.append(writer.generate(TEXT, "Brimley"))
        restated.append(writer.restated)
    text_passages = passages(TEXT, PASSAGE_SENTENCES)
    assert writer.written == 0 and 0 <= writer.restated <= 2 * len(text_passages)
    assert runs[0] == runs[1] and restated[0] == restated[1]  # seeded: the same restatements again
    assert all(pair.form == "restated" and 0 <= pair.sentence < len(split_sentences(TEXT)) for pair in runs[1])
    assert not runs[1] or writer.restated > 0  # no questions without a kept restatement

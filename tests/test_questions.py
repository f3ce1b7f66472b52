from lift_tool.prompts import NOT_IN_DOCUMENT
from lift_tool.training.questions import (
    QAPair,
    RuleQuestionGenerator,
    find_spans,
    limit_repeated_answers,
    split_sentences,
    unanswerable_questions,
)
from lift_tool.segment import normalise_text

TEXT = normalise_text("""# Brimley

## History

Brimley was founded in 1841 by the engineer Agatha Moorcroft. It was built on the banks of the Tarrow river.
The canal is 14 kilometres long and was opened on 3 May 1850. The Brimley Canal Company has twelve barges.
The town's main product is blue slate, a hard stone used for roofs. A bridge called the Wendle Arch crosses it.
Mr. Hobb, the keeper, kept the lock for 20 years.
""")


def _pairs():
    return RuleQuestionGenerator(max_per_sentence=6).generate(TEXT, "Brimley")


def test_sentences_and_sections():
    sentences = split_sentences(TEXT)
    assert sentences[0].text.startswith("Brimley was founded")
    assert sentences[0].section == "History"
    assert any(s.text.startswith("Mr. Hobb, the keeper") for s in sentences)  # no cut after "Mr."
    for sentence in sentences:
        assert TEXT[sentence.start : sentence.start + 10] == sentence.text[:10]


def test_spans():
    spans = {(s.text, s.kind) for s in find_spans("The canal opened on 3 May 1850 with twelve barges.", set())}
    assert ("3 May 1850", "date") in spans
    assert ("twelve", "count") in spans
    assert not any(kind == "year" for _, kind in find_spans("Since the 1990s it grew.", set()))


def test_letters_glued_to_other_characters_are_not_names():
    sentence = "Wide Printers at Arup print 3D walls for D&B and AT&T at 5°E of Greenwich."
    names = {s.text for s in find_spans(sentence, set()) if s.kind == "name"}
    assert names == {"Wide Printers", "Arup", "Greenwich"}


def test_rules_make_natural_questions():
    pairs = {(p.question, p.answer) for p in _pairs()}
    assert ("Who founded Brimley?", "Agatha Moorcroft") in pairs
    assert ("When was Brimley founded?", "1841") in pairs
    assert ("How long is the canal?", "14 kilometres") in pairs
    assert ("How many barges does the Brimley Canal Company have?", "twelve") in pairs
    assert ("What is the town's main product?", "blue slate") in pairs
    assert ("What is the bridge called?", "Wendle Arch") in pairs


def test_pronoun_is_resolved():
    questions = [p.question for p in _pairs()]
    assert any("Brimley built" in q or "Brimley was built" in q for q in questions), questions


def test_every_pair_points_at_its_evidence():
    sentences = split_sentences(TEXT)
    for pair in _pairs():
        assert 0 <= pair.sentence < len(sentences)
        if pair.form != "recall":
            assert pair.answer.lower() not in pair.question.lower()


def test_unanswerable_questions_mention_nothing_in_the_document():
    pairs = _pairs()
    made = unanswerable_questions(pairs, TEXT, count=5)
    assert made, "no unanswerable questions were made"
    originals = {p.question for p in pairs}
    for pair in made:
        assert pair.answer == NOT_IN_DOCUMENT and not pair.answerable
        assert pair.question not in originals


def test_repeated_answers_are_limited_to_their_share():
    pairs = [QAPair(f"Who built thing {n}?", "Agatha Moorcroft" if n % 2 else "agatha moorcroft ", n, "echo")
             for n in range(100)]  # one answer (case and spaces aside) for every question
    pairs += [QAPair(f"When was thing {n} opened?", str(1800 + n), n, "when") for n in range(100)]
    kept = limit_repeated_answers(pairs, max_share=0.02)  # 2% of 200 pairs: 4 per answer
    moorcroft = [pair for pair in kept if "moorcroft" in pair.answer.lower()]
    assert len(moorcroft) == 4
    assert [pair for pair in kept if pair.form == "when"] == pairs[100:]  # answers given once are all kept
    assert kept == sorted(kept, key=pairs.index)  # in their order
    assert limit_repeated_answers(pairs, max_share=0.02) == kept  # the same choice each time (seeded)
    assert len(limit_repeated_answers(pairs, max_share=0.02, seed=1)) == len(kept)
    assert len(limit_repeated_answers(pairs, max_share=0.001)) == 103  # never fewer than 3 per answer
    assert limit_repeated_answers(pairs, max_share=1.0) == pairs


def test_a_chat_model_writes_pairs_about_each_passage_and_each_points_at_its_sentence():
    import json

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from lift_tool.training.questions import ChatQuestionGenerator, passages

    text_passages = passages(TEXT, 3)
    assert [sentence.index for passage in text_passages for sentence in passage.sentences] == list(
        range(len(split_sentences(TEXT))))  # every sentence once, in order
    # A stand-in for a large model reached over an API: one reply per passage, as it would write it.
    replies = [json.dumps([{"question": "Who founded Brimley?", "answer": "Agatha Moorcroft"},
                           {"question": "How long is the canal?", "answer": "14 kilometres"}]),
               "Here you are: " + json.dumps([{"question": "What is blue slate?", "answer": "a hard stone"},
                                              {"question": "", "answer": "dropped: no question"}]),
               "no JSON at all"]
    generator = ChatQuestionGenerator(FakeListChatModel(responses=replies), per_passage=2, passage_sentences=3)
    pairs = generator.generate(TEXT, "Brimley")
    assert len(text_passages) == 3
    assert [(pair.question, pair.sentence) for pair in pairs] == [
        ("Who founded Brimley?", 0), ("How long is the canal?", 2), ("What is blue slate?", 4)]
    assert all(pair.form == "chat" and pair.answerable for pair in pairs)

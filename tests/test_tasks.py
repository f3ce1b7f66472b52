import random

import pytest

from lift_tool.config import Settings
from lift_tool.sample import sample_document_path
from lift_tool.documents import read_document
from lift_tool.training.recipe import generate_qa
from lift_tool.training.tasks import IGNORE, TaskBuilder, batches


@pytest.fixture(scope="module")
def builder(real_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    settings = Settings()
    document = read_document(sample_document_path())
    return TaskBuilder(tokenizer, document.text, document.title, settings.training, generate_qa(document, settings))


def test_every_kind_is_present_and_labels_align(builder):
    examples = builder.epoch(random.Random(0))
    kinds = {example.kind for example in examples}
    assert kinds == {"segments", "contextual", "qa", "qa_long"}
    for example in examples:
        assert len(example.input_ids) == len(example.labels)
        assert example.target_tokens > 0
        if example.kind == "segments":
            assert example.labels == example.input_ids


def test_qa_loss_is_on_answers_only(builder):
    tokenizer = builder.tokenizer
    conversation = next(e for e in builder.epoch(random.Random(1)) if e.kind == "qa")
    answers = tokenizer.decode([t for t, label in zip(conversation.input_ids, conversation.labels) if label != IGNORE])
    prompt_part = tokenizer.decode([t for t, label in zip(conversation.input_ids, conversation.labels) if label == IGNORE])
    assert "Answer questions about the document" in prompt_part
    assert "Answer questions about" not in answers  # the system prompt carries no loss
    turns = tokenizer.decode(conversation.input_ids).count("<|im_start|>user")
    assert turns >= 2 and answers.count("<|im_end|>") == turns  # every answer, ended, and nothing else


def test_long_context_examples_carry_their_evidence(builder):
    tokenizer = builder.tokenizer
    for example in builder.epoch(random.Random(2)):
        if example.kind == "qa_long":
            text = tokenizer.decode(example.input_ids)
            assert "Context:\n" in text
            break
    else:
        pytest.fail("no long-context example in the epoch")


def test_mix_weights_scale_the_epoch(builder):
    from lift_tool.config import TaskMix

    base = len([e for e in builder.epoch(random.Random(0)) if e.kind == "segments"])
    builder.training = builder.training.model_copy(update={"mix": TaskMix(segments=2.0)})
    doubled = len([e for e in builder.epoch(random.Random(0)) if e.kind == "segments"])
    builder.training = builder.training.model_copy(update={"mix": TaskMix(segments=0.0)})
    none = len([e for e in builder.epoch(random.Random(0)) if e.kind == "segments"])
    builder.training = Settings().training
    assert doubled == 2 * len(builder.pools.segments) and none == 0
    assert base == round(Settings().training.mix.segments * len(builder.pools.segments))


def test_batches_respect_the_token_budget(builder):
    examples = builder.epoch(random.Random(0))
    for batch in batches(examples, 1024, random.Random(0)):
        assert len(batch) == 1 or max(len(e) for e in batch) * len(batch) <= 1024
    assert sum(len(b) for b in batches(examples, 1024, random.Random(0))) == len(examples)


def test_examples_name_the_sentences_they_teach_and_coverage_counts_them(builder):
    from lift_tool.training.tasks import coverage

    examples = builder.epoch(random.Random(0))
    every_sentence = {sentence.index for sentence in builder.sentences}
    for example in examples:
        assert example.sentences and example.sentences <= every_sentence, example.kind
    plan = [[example] for example in examples]
    assert coverage(plan, len(plan)) == 1.0
    assert coverage(plan, 0) == 0.0
    assert 0 < coverage(plan, 1) < 1  # one example teaches a few sentences


@pytest.mark.parametrize("regroup", [False, True])
def test_closed_book_chats_are_the_same_every_pass_unless_regrouped(real_tokenizer_dir, regroup):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    settings = Settings.model_validate({"training": {"regroup_questions": regroup}})
    document = read_document(sample_document_path())
    builder = TaskBuilder(tokenizer, document.text, document.title, settings.training, generate_qa(document, settings))
    chats = [{tuple(e.input_ids) for e in builder.epoch(random.Random(seed)) if e.kind == "qa"} for seed in (0, 1)]
    assert (chats[0] == chats[1]) != regroup
    asked = [e for e in builder.epoch(random.Random(0)) if e.kind == "qa"]
    assert sum(e.target_tokens for e in asked) > 0


def test_settings_added_later_at_their_earlier_values_keep_the_fingerprint_of_adapters_stored_before_them():
    import hashlib
    import json

    from lift_tool.config import AS_BEFORE

    assert set(AS_BEFORE) == {"regroup_questions", "distill", "written_questions", "lora_b_lr_ratio", "restatements"}
    settings = Settings()  # every later setting at the value that trains as before it existed
    before = {"lora": settings.lora.model_dump(),
              "training": settings.training.model_dump(exclude={"budget_seconds", "frozen_layer_cache_mb",
                                                                "checkpoint_seconds", "passages_without_answer",
                                                                *AS_BEFORE})}
    del before["training"]["mix"]["qa_passages"]
    as_before = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert settings.training_fingerprint() == as_before
    # how often training saves its state changes nothing it learns (a resumed absorption ends as one in one go)
    rarely = Settings.model_validate({"training": {"checkpoint_seconds": 3600}})
    assert rarely.training_fingerprint() == as_before
    fixed = Settings.model_validate({"training": {"regroup_questions": False}})
    assert fixed.training_fingerprint() != as_before  # another recipe, another adapter
    distilled = Settings.model_validate({"training": {"distill": 1.0}})
    assert distilled.training_fingerprint() not in (as_before, fixed.training_fingerprint())
    written = Settings.model_validate({"training": {"written_questions": 4}})
    assert written.training_fingerprint() not in (as_before, fixed.training_fingerprint(),
                                                  distilled.training_fingerprint())
    lora_plus = Settings.model_validate({"training": {"lora_b_lr_ratio": 4.0}})
    assert lora_plus.training_fingerprint() not in (as_before, fixed.training_fingerprint(),
                                                    distilled.training_fingerprint(), written.training_fingerprint())
    restated = Settings.model_validate({"training": {"restatements": 2}})
    assert restated.training_fingerprint() not in (as_before, written.training_fingerprint(),
                                                   lora_plus.training_fingerprint())


def test_passage_settings_change_the_fingerprint_only_where_passages_are_trained_on():
    plain = Settings().training_fingerprint()
    assert Settings.model_validate({"training": {"passages_without_answer": 0.5}}).training_fingerprint() == plain
    assert Settings.model_validate({"retrieval": {"k": 8}}).training_fingerprint() == plain
    passages = Settings.model_validate({"training": {"mix": {"qa_passages": 0.5}}})
    assert passages.training_fingerprint() != plain
    more_passages = passages.model_copy(update={"retrieval": passages.retrieval.model_copy(update={"k": 8})})
    assert more_passages.training_fingerprint() != passages.training_fingerprint()


@pytest.fixture(scope="module")
def passage_builder(real_tokenizer_dir):
    from transformers import AutoTokenizer

    from lift_tool.memory.retrieval import chunk_text, embedding_tokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    settings = Settings.model_validate({"training": {"mix": {"qa_passages": 1.0}, "passages_without_answer": 0.5}})
    document = read_document(sample_document_path())
    passages = chunk_text(document.text, embedding_tokenizer(), 120, 30)
    return TaskBuilder(tokenizer, document.text, document.title, settings.training, generate_qa(document, settings),
                       passages, passages_k=3)


def test_retrieved_passages_are_k_chunks_with_the_answering_one_in_or_left_out(passage_builder):
    pools = passage_builder.pools
    assert len(pools.passages) > 6
    rng = random.Random(0)
    for pair in pools.answerable[:40]:
        answering = pools.passage_of_sentence[pair.sentence]
        evidence = passage_builder.sentences[pair.sentence]
        chunk = pools.passages[answering]
        assert chunk.start <= evidence.start < chunk.end  # the chunk holds (the start of) its evidence
        shown = passage_builder.retrieved(pair.question, answering, rng, with_answer=True)
        parts = [c for c in pools.passages if c.text in shown]
        assert chunk in parts and len(parts) >= 3
        hidden = passage_builder.retrieved(pair.question, answering, rng, with_answer=False)
        assert chunk.text not in hidden and sum(c.text in hidden for c in pools.passages) >= 3


def test_passage_examples_leave_the_answer_out_in_their_share_and_carry_loss_on_answers(passage_builder):
    examples = [e for e in passage_builder.epoch(random.Random(0)) if e.kind == "qa_passages"]
    assert len(examples) >= 10
    tokenizer = passage_builder.tokenizer
    pools = passage_builder.pools
    with_answer = 0
    for example in examples:
        text = tokenizer.decode(example.input_ids)
        assert text.count("Context:\n") == 1 and example.target_tokens > 0
        answering = {pools.passage_of_sentence[s] for s in example.sentences}
        with_answer += any(pools.passages[i].text in text for i in answering)
    assert 0.2 < with_answer / len(examples) < 0.8  # passages_without_answer 0.5


def test_passage_examples_need_the_passages(real_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_tokenizer_dir)
    settings = Settings.model_validate({"training": {"mix": {"qa_passages": 1.0}}})
    document = read_document(sample_document_path())
    with pytest.raises(ValueError, match="passages"):
        TaskBuilder(tokenizer, document.text, document.title, settings.training, generate_qa(document, settings))

"""Context distillation: the teacher's targets are the model's own with the passage in the prompt, the closed-book
chats carry them on the right tokens, and the loss adds their divergence."""

import pytest

from lift_tool.documents import make_document
from lift_tool.prompts import render, system_prompt, user_prompt
from lift_tool.training.absorb import absorb, setup
from lift_tool.training.distill import TOP_K, distillation_loss, teacher_targets
from lift_tool.training.loop import batch_loss
from lift_tool.training.questions import QAPair
from lift_tool.training.tasks import IGNORE, TaskBuilder

TEXT = """# Brimley

Brimley was founded in 1841 by the engineer Agatha Moorcroft. The canal is 14 kilometres long.
The Brimley Canal Company has twelve barges. A bridge called the Wendle Arch crosses the canal.
The town's market is held on Thursdays in Moorcroft Square. The Wendle Arch was built of red sandstone in 1852.
"""

PAIRS = [
    QAPair("Who founded Brimley?", "Agatha Moorcroft", 1, "test"),
    QAPair("How long is the canal?", "14 kilometres", 2, "test"),
    QAPair("How many barges does the Brimley Canal Company have?", "twelve", 3, "test"),
]


def _settings(tiny_settings, **training):
    update = {"precision": "fp32", "min_steps": 4, "batch_tokens": 512, **training}
    return tiny_settings.model_copy(update={"training": tiny_settings.training.model_copy(update=update)})


def test_the_teacher_targets_are_the_models_own_with_the_passage_in_its_prompt(tiny_loaded, tiny_settings):
    import torch

    tokenizer, model = tiny_loaded.tokenizer, tiny_loaded.model
    unanswerable = QAPair("Unknown?", "x", -1, "test", False)
    builder = TaskBuilder(tokenizer, TEXT, "Brimley", _settings(tiny_settings).training, PAIRS + [unanswerable])
    targets = teacher_targets(tiny_loaded, builder)
    assert set(targets) == set(PAIRS)  # the unanswerable question has no passage to be taught from
    for pair in PAIRS:  # each question on its own, no shared cache: the same distribution at every answer token
        window = builder.pools.windows[builder.pools.window_of_sentence[pair.sentence]]
        asked = [{"role": "system", "content": system_prompt(["Brimley"])},
                 {"role": "user", "content": user_prompt(pair.question, window)}]
        prompt = tokenizer(render(tokenizer, asked, True), add_special_tokens=False)["input_ids"]
        full = tokenizer(render(tokenizer, asked + [{"role": "assistant", "content": pair.answer}], False),
                         add_special_tokens=False)["input_ids"]
        soft = targets[pair]
        assert soft.tokens == full[len(prompt):] and soft.ids.shape == (len(soft.tokens), TOP_K)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([full])).logits[0, len(prompt) - 1 : len(full) - 1].float()
        expected = torch.log_softmax(logits, dim=-1).gather(1, soft.ids)
        torch.testing.assert_close(soft.logprobs, expected, atol=1e-4, rtol=1e-4)
        assert torch.equal(soft.ids[:, 0], logits.argmax(dim=-1))
        assert torch.equal(soft.taught, soft.ids[:, 0] == torch.tensor(soft.tokens))


def test_the_divergence_is_zero_only_for_the_teachers_own_distribution():
    import torch

    teacher = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5]]), dim=-1)
    ids = torch.tensor([[3, 0, 5]])
    same = torch.full((1, 8), float("-inf"))
    same[0, ids[0]] = teacher[0]
    assert distillation_loss(same, ids, teacher).item() == pytest.approx(0.0, abs=1e-6)
    uniform = torch.log_softmax(torch.zeros((1, 8)), dim=-1)
    assert distillation_loss(uniform, ids, teacher).item() > 0.5


def test_closed_book_chats_carry_the_teachers_targets_on_their_answer_tokens(tiny_loaded, tiny_settings):
    settings = _settings(tiny_settings)
    builder = TaskBuilder(tiny_loaded.tokenizer, TEXT, "Brimley", settings.training, PAIRS)
    builder.use_teacher(teacher_targets(tiny_loaded, builder))
    chat = builder.conversation(PAIRS, context=None)
    assert len(chat.teacher) == len(PAIRS)
    labelled = [label for label in chat.labels if label != IGNORE]
    for first, soft in chat.teacher:
        assert labelled[first : first + len(soft.tokens)] == soft.tokens
    with_context = builder.conversation(PAIRS, context=builder.pools.windows[0], kind="qa_long")
    assert with_context.teacher == []  # a question with its passage in the prompt needs no teacher


def test_the_loss_adds_the_divergence_where_there_are_targets(tiny_loaded, tiny_settings):
    settings = _settings(tiny_settings)
    builder = TaskBuilder(tiny_loaded.tokenizer, TEXT, "Brimley", settings.training, PAIRS)
    builder.use_teacher(teacher_targets(tiny_loaded, builder))
    from lift_tool.training.peft_backend import PeftBackend
    from lift_tool.training.recipe import settings_for_model

    model = PeftBackend().attach(tiny_loaded, settings_for_model(tiny_loaded, settings))
    pad_id = tiny_loaded.tokenizer.pad_token_id
    taught = builder.conversation(PAIRS, context=None)
    for _, soft in taught.teacher:  # the random model's likeliest token is rarely the answer's: teach everywhere
        soft.taught[:] = True
    plain = builder.conversation(PAIRS, context=None)
    plain.teacher = []
    batch = [taught, plain]
    cross_entropy, _ = batch_loss(model, batch, pad_id)
    assert batch_loss(model, [plain], pad_id, distill=1.0)[0].item() == pytest.approx(
        batch_loss(model, [plain], pad_id)[0].item(), rel=1e-5)
    with_teacher, _ = batch_loss(model, batch, pad_id, distill=1.0)
    assert with_teacher.item() > cross_entropy.item()
    with_teacher.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_an_absorption_with_distillation_trains_on_the_teachers_targets(tiny_loaded, tiny_settings, tmp_path):
    document = make_document(TEXT, title="Brimley")
    settings = _settings(tiny_settings, distill=0.5, regroup_questions=False)
    plan = setup(document, tiny_loaded, settings)
    chats = [example for batch in plan.micro_batches for example in batch if example.kind == "qa"]
    assert chats and all(example.teacher for example in chats)
    manifest = absorb(document, tiny_loaded, settings, tmp_path / "adapter", progress=False)
    assert manifest.settings["training"]["distill"] == 0.5
    assert manifest.settings_fingerprint != _settings(tiny_settings, regroup_questions=False).training_fingerprint()


def test_an_interrupt_during_the_teachers_pass_leaves_nothing(tiny_loaded, tiny_settings, tmp_path, monkeypatch):
    from lift_tool.errors import AbsorptionInterrupted
    from lift_tool.training import absorb as absorb_module

    def interrupted(*args, **kwargs):  # a Ctrl-C while the teacher reads the document
        raise KeyboardInterrupt

    monkeypatch.setattr(absorb_module, "teacher_targets", interrupted)
    with pytest.raises(AbsorptionInterrupted):
        absorb(make_document(TEXT, title="Brimley"), tiny_loaded, _settings(tiny_settings, distill=1.0),
               tmp_path / "adapter", progress=False)
    assert not (tmp_path / "adapter").exists()
    assert not any("lora" in name for name, _ in tiny_loaded.model.named_parameters())

"""The absorption recipe: the questions a document is trained on, and the settings left to the model's size.

The examples built from them are in ``tasks``; how the recipe was chosen is in docs/ and benchmarks/results/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lift_tool.training.questions import QAPair, RuleQuestionGenerator, limit_repeated_answers, unanswerable_questions
from lift_tool.training.written_questions import ModelQuestionWriter

if TYPE_CHECKING:
    from pathlib import Path

    from lift_tool.config import Settings
    from lift_tool.documents import Document
    from lift_tool.models import LoadedModel

SMALL_MODEL_PARAMETERS = 300_000_000


def generate_qa(document: "Document", settings: "Settings", qa_generator=None,
                loaded: "LoadedModel | None" = None, progress: bool = False,
                written_file: "Path | None" = None) -> list[QAPair]:
    """The synthetic question-answer pairs to train on: the generator's (the rules by default) and, with
    ``training.written_questions`` or ``training.restatements``, those ``loaded``'s model writes itself (kept in
    ``written_file``, and read back from it when it holds them); each answer kept to its share, and questions the
    document does not answer added."""
    training = settings.training
    generator = qa_generator or RuleQuestionGenerator(training.questions_per_sentence, seed=training.seed)
    pairs = generator.generate(document.text, document.title)
    if training.written_questions > 0 or training.restatements > 0:
        if loaded is None:
            raise ValueError("training.written_questions and training.restatements need the model that writes them")
        writer = ModelQuestionWriter(loaded, training.written_questions, training.restatements,
                                     training.questions_per_sentence, seed=training.seed)
        pairs += writer.generate(document.text, document.title, progress, saved=written_file)
    if training.max_answer_share is not None:  # None only before settings_for_model has filled it in
        pairs = limit_repeated_answers(pairs, training.max_answer_share, seed=training.seed)
    n_unanswerable = max(1, round(len(pairs) * max(training.mix.unanswerable, 0.0)))
    if training.mix.unanswerable > 0:
        pairs += unanswerable_questions(pairs, document.text, n_unanswerable, seed=training.seed)
    return pairs


def settings_for_model(loaded: "LoadedModel", settings: "Settings") -> "Settings":
    """The settings with what they leave to the model's size filled in, as measured:

    - learning rate: 4e-3 suits SmolLM2-135M (docs/recipe.md, step 1); on Qwen2.5-0.5B it made the loss
      diverge, where 1e-3 trained steadily;
    - adapted layers: on SmolLM2-135M the upper half learns nearly as much as every layer in about half the time;
      on Qwen2.5-0.5B every layer scored F1 21.6 against 12.9 for the upper half, for 1.4x the time, and neither
      a second epoch nor a 2e-3 rate on every layer did better (recipe-qwen2.5-coder-0.5b.md);
    - repeated answers: on SmolLM2-135M, leaving out questions beyond 2% per answer kept lift+rag from answering
      the subject's name to anything (docs/recipe.md); the 0.5B model keeps every
      question, the recipe its reports were measured with, until it is measured there too.
    """
    small = sum(parameter.numel() for parameter in loaded.model.parameters()) < SMALL_MODEL_PARAMETERS
    training, lora = settings.training, settings.lora
    if training.learning_rate is None:
        training = training.model_copy(update={"learning_rate": 4e-3 if small else 1e-3})
    if training.max_answer_share is None:
        training = training.model_copy(update={"max_answer_share": 0.02 if small else 1.0})
    if lora.layer_fraction is None:
        lora = lora.model_copy(update={"layer_fraction": 0.5 if small else 1.0})
    return settings.model_copy(update={"training": training, "lora": lora})

"""Absorption (LIFT): training a LoRA adapter on one document.

- ``absorb``: ``absorb()``, the setup / train / save steps, composing the modules below;
- ``recipe``: the questions a document is trained on, and the settings left to the model's size;
- ``questions``, ``tasks``: synthetic question-answer pairs, and the five kinds of training example;
- ``written_questions``: what the model writes itself to train on (questions, restatements), beside the rules';
- ``distill``: context distillation, the model with the passage in its prompt as the answers' teacher;
- ``layer_cache``: the output of the frozen layers below the adapter, kept for examples seen again;
- ``loop``: the training loop, the learning-rate schedule and the batch loss;
- ``checkpoint``: the loop's state saved every few minutes, so that an interrupted absorption goes on from it;
- ``precision``: training precision and the CPU numerics that make bf16 fast;
- ``backend``: the interface of a training backend, and which one is used; ``peft_backend`` and
  ``unsloth_backend`` implement it.

Import from the modules (``from lift_tool.training.absorb import absorb``): importing this package loads none of
them, so nothing heavy either.
"""

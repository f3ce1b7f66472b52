"""The answering methods ``lift eval`` compares: Lift's answer modes, in the order the report lists them."""

from __future__ import annotations

from lift_tool.answering import ADAPTER_MODES, MODES, RETRIEVAL_MODES
from lift_tool.errors import ConfigError

# Every answer mode, in the report's order: without memory, the document in the prompt, passages, the adapter,
# the adapter with passages, and the automatic choice last.
EVAL_METHODS = tuple(sorted(MODES, key=lambda mode: (mode == "auto", mode in ADAPTER_MODES, mode in RETRIEVAL_MODES,
                                                     mode != "base")))
# The methods that need the document absorbed: "auto" answers with the adapter where there is one.
ADAPTER_METHODS = ADAPTER_MODES | {"auto"}


def check_methods(methods: list[str]) -> list[str]:
    """The methods asked for, stripped and without repeats; :class:`ConfigError` for an unknown one or none."""
    methods = [m.strip() for m in methods if m.strip()]
    unknown = [m for m in methods if m not in EVAL_METHODS]
    if unknown or not methods:
        raise ConfigError(f"unknown method(s) {', '.join(unknown) or '(none given)'}: use {', '.join(EVAL_METHODS)}")
    return list(dict.fromkeys(methods))

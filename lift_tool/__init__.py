"""lift-tool: parametric memory for long documents (LIFT: Long Input Fine-Tuning).

    from lift_tool import Lift, LiftMemory, LiftToolkit, LiftChatModel, LiftRetriever, LiftStore, Settings

Importing this package is cheap: each public name loads its module (and torch, transformers, LangChain) only
when it is first used.
"""

from lift_tool.errors import LiftError

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Lift": "lift_tool.lift",
    "Answer": "lift_tool.answering",
    "LiftMemory": "lift_tool.tool",
    "LiftToolkit": "lift_tool.tool",
    "LiftChatModel": "lift_tool.chat_model",
    "LiftRetriever": "lift_tool.retriever",
    "LiftStore": "lift_tool.store",
    "Settings": "lift_tool.config",
    "load_settings": "lift_tool.config",
}

__all__ = ["LiftError", "__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lift_tool' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

"""lift-tool: parametric memory for long documents (LIFT: Long Input Fine-Tuning).

Importing this package is cheap; torch, transformers, pydantic and friends load only when a function needs
them.
"""

from lift_tool.errors import LiftError

__version__ = "0.1.0"

__all__ = ["LiftError", "Settings", "load_settings", "__version__"]


def __getattr__(name):  # settings (pydantic) load only when asked for
    if name in ("Settings", "load_settings"):
        from lift_tool import config

        return getattr(config, name)
    raise AttributeError(f"module 'lift_tool' has no attribute {name!r}")

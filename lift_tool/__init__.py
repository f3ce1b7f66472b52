"""lift-tool: parametric memory for long documents (LIFT: Long Input Fine-Tuning).

Importing this package is cheap; torch, transformers and friends load only when a function needs them.
"""

from lift_tool.config import Settings, load_settings
from lift_tool.errors import LiftError

__version__ = "0.1.0"

__all__ = ["LiftError", "Settings", "load_settings", "__version__"]

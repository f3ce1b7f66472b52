"""The one exception family for errors a user can cause.

The CLI prints these as a single line without a traceback; the API raises the specific subclass so callers
can react to it. Every message says what went wrong and what to do about it.
"""


class LiftError(Exception):
    """Base class: a problem with the input, the configuration or the environment, not a bug."""


class InputError(LiftError):
    """The document is empty, binary, undecodable, missing or too long."""


class ModelError(LiftError):
    """The model spec cannot be resolved or loaded."""


class ConfigError(LiftError):
    """A setting is invalid."""


class BudgetError(LiftError):
    """The time budget is too small to train even one step."""


class UnknownDocumentError(LiftError):
    """No absorbed document matches the reference given."""


class AmbiguousDocumentError(UnknownDocumentError):
    """A document reference (an id prefix or a title) matches more than one document."""


class IncompatibleAdapterError(LiftError):
    """An adapter was trained on another base model than the one in use."""


class CorruptAdapterError(LiftError):
    """An adapter's files do not match the checksums recorded when it was stored."""


class AbsorptionInterrupted(LiftError):
    """Absorption was interrupted (Ctrl-C); nothing was written."""


class StorageError(LiftError):
    """The memory folder could not be read or written (disk full, permissions, a damaged index)."""


class ServerError(LiftError):
    """A server that lift-tool was pointed at (a Chroma server, a vLLM server, a Ray cluster) does not answer or
    refused a request; the message names the setting that points there and the local alternative."""

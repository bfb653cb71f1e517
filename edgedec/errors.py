"""Domain errors. The library raises them; the CLI prints their message as one line and exits 1.

Every message names the problem and the fix.
"""


class EdgedecError(Exception):
    """Base class: a user-facing problem with a one-line explanation."""


class SourceError(EdgedecError):
    """A model source (GGUF file, Hugging Face folder) is missing, corrupt or truncated."""


class UnsupportedModelError(EdgedecError):
    """The model's architecture or tensor types are not supported."""


class BundleError(EdgedecError):
    """A bundle is missing, incomplete, corrupt, or of an unknown format version."""


class ContextOverflowError(EdgedecError):
    """A prompt or conversation does not fit in the context window."""


class ModeError(EdgedecError):
    """A decoding mode or backend option that cannot run with this bundle or backend."""

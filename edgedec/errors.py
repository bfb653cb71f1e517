"""Domain errors. The library raises them; the CLI prints their message as one line and exits 1.

Every message names the problem and the fix, in the library's own terms: a parameter is written `$name`
(its Python name, e.g. `$exit_layer`). `str(error)` reads `exit_layer`; a front end that calls the
parameter something else renders the message with its own names (the CLI: `error.render(FLAGS)` reads
`--exit-layer`).
"""
from __future__ import annotations

import re

_PARAM = re.compile(r"\$([a-z][a-z_]*)")


def render(template: str, names: dict[str, str] | None = None) -> str:
    """`template` with each `$param` replaced by names[param], or by the parameter's own name."""
    names = names or {}
    return _PARAM.sub(lambda m: names.get(m[1], m[1]), template)


class Notice(str):
    """Something the user should know (a truncated prompt, a full context), in the same terms as errors:
    the string reads the library's names; `render(names)` reads a front end's."""

    def __new__(cls, template: str):
        self = super().__new__(cls, render(template))
        self.template = template
        return self

    def render(self, names: dict[str, str] | None = None) -> str:
        return render(self.template, names)


class EdgedecError(Exception):
    """Base class: a user-facing problem with a one-line explanation."""

    def render(self, names: dict[str, str] | None = None) -> str:
        return render(super().__str__(), names)

    def __str__(self) -> str:
        return self.render()


class SourceError(EdgedecError):
    """A model source (GGUF file, Hugging Face folder) is missing, corrupt or truncated."""


class UnsupportedModelError(EdgedecError):
    """The model's architecture or tensor types are not supported."""


class BundleError(EdgedecError):
    """A bundle is missing, incomplete, corrupt, or of an unknown format version."""


class ContextOverflowError(EdgedecError):
    """A prompt or conversation does not fit in the context window."""


class ModeError(EdgedecError):
    """A decoding mode, backend or setting that cannot run with this bundle or backend."""


class SessionBusyError(EdgedecError):
    """A session was asked to generate while its previous stream is still open."""


class AdapterError(EdgedecError):
    """A LoRA adapter that cannot be read, does not fit the model, or that the bundle does not have."""

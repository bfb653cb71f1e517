"""edgedec: fast offline decoding of small language models.

    import edgedec
    model = edgedec.load()                       # the default bundle (exported on first use by the CLI)
    for r in model.stream_generate("Hello", max_tokens=32):
        print(r.text, end="", flush=True)
"""
from .api import Model, load
from .errors import EdgedecError

__all__ = ["Model", "load", "EdgedecError"]
__version__ = "0.1.0"

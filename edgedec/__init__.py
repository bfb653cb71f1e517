"""edgedec: fast offline decoding of small language models.

    import edgedec
    model = edgedec.load()                       # the default bundle
    chat = model.session()                       # one conversation; many can share the model
    for r in chat.stream_generate("Hello", max_tokens=32):
        print(r.text, end="", flush=True)
"""
__version__ = "0.1.0"
__all__ = ["Model", "Session", "load", "EdgedecError"]


def __getattr__(name):  # keep `import edgedec.bundle` etc. light: onnxruntime loads only when needed
    if name in ("Model", "load", "Session"):
        from . import api
        return getattr(api, name)
    if name == "EdgedecError":
        from .errors import EdgedecError
        return EdgedecError
    raise AttributeError(name)

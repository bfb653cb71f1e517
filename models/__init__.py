"""Architectures edgedec can export and run, and the models it knows by name.

Each architecture is one module exposing `config_from_gguf(meta)`, `config_from_hf(config_json)`,
`hf_tensor_name(name)` and the per-layer weight names. `ARCHITECTURES` maps the GGUF
`general.architecture` string to that module; there is no registry class.
"""
from . import llama

ARCHITECTURES = {"llama": llama}


def architecture(name: str):
    """The module for architecture `name`, or a clear error listing the supported ones."""
    from edgedec.errors import UnsupportedModelError

    if name not in ARCHITECTURES:
        raise UnsupportedModelError(
            f"architecture '{name}' is not supported; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    return ARCHITECTURES[name]

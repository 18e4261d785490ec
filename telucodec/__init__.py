"""TeluCodec: a convolutional speech codec with residual vector quantization.

    >>> from telucodec import load_codec
    >>> codec = load_codec("runs/demo/final")          # an exported codec (safetensors)
    >>> out = codec(audio)                             # audio: Tensor[B x 1 x T], 16 kHz
    >>> out.audio.shape, out.codes.shape               # Tensor[B x 1 x T], LongTensor[B x Nq x F]

The public names below are loaded on first use (PEP 562), so importing a light submodule such
as `telucodec.bitstream` or `telucodec.metrics` does not pull in torch. The package reads no
corpus: `python -m telucodec` (the command line) lives in `telucodec_cli`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name → the submodule that defines it
_EXPORTS = {
    "Codec": "telucodec.model",
    "CodecOutput": "telucodec.model",
    "CodecConfig": "telucodec.configs",
    "get_config": "telucodec.configs",
    "DEFAULT_KBPS": "telucodec.configs",
    "load_codec": "telucodec.checkpoint",
    "save_codec": "telucodec.checkpoint",
    "CheckpointError": "telucodec.checkpoint",
    "BitstreamError": "telucodec.bitstream",
}

__all__ = [
    "DEFAULT_KBPS",
    "BitstreamError",
    "CheckpointError",
    "Codec",
    "CodecConfig",
    "CodecOutput",
    "get_config",
    "load_codec",
    "save_codec",
]
assert sorted(__all__) == sorted(_EXPORTS)

if TYPE_CHECKING:  # static tools see the real names
    from telucodec.bitstream import BitstreamError
    from telucodec.checkpoint import CheckpointError, load_codec, save_codec
    from telucodec.configs import DEFAULT_KBPS, CodecConfig, get_config
    from telucodec.model import Codec, CodecOutput


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'telucodec' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""What a model's name says about its size and quantization.

Names are the weakest source of sizing facts: they are only used when no config, weights
file or catalog entry is available. A size token is a number followed by a unit (B, M or
T) standing alone between separators: ``Llama-3.1-8B`` -> 8, ``TinyLlama-1.1B`` -> 1.1,
``SmolLM2-135M`` -> 0.135. ``4bit``, ``int4``, ``fp8``, ``awq``, ``Q4_K_M`` are never sizes;
they are quantization hints, returned separately.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A dense model's feed-forward share of its parameters. Mixtral-style ``NxS`` names give the
# size S of one dense model; only its feed-forward part is replicated per expert, attention
# and embeddings are shared: total = S * (1 + (N - 1) * FFN_SHARE). Mistral-7B has
# 32 layers x 3 x 4096 x 14336 = 5.64B of 7.24B parameters in its FFN (0.78); with that
# share Mixtral-8x7B gives 45.2 (published 46.7) and 8x22B gives 142 (published 141).
FFN_SHARE = 0.78

_UNIT_TO_BILLIONS = {"b": 1.0, "m": 1e-3, "t": 1e3}

# Between separators (start, end, - _ / space .), optionally preceded by "A" (active
# parameters, "A3B") or "NxS" experts. The number itself may have a decimal point.
_SIZE_TOKEN = re.compile(
    r"(?<![A-Za-z0-9.])"
    r"(?P<active>[Aa])?"
    r"(?:(?P<experts>\d{1,3})[xX])?"
    r"(?P<number>\d+(?:\.\d+)?)"
    r"(?P<unit>[BbMmTt])"
    r"(?![A-Za-z0-9])"
)

# llama.cpp file types: Q4_K_M, Q6_K, Q8_0, Q5_1, IQ4_XS, IQ2_XXS, TQ1_0, unsloth's Q4_K_XL.
_GGUF_TYPE = re.compile(
    r"(?<![A-Za-z0-9])"
    r"(?P<type>Q[1-8]_K(?:_(?:S|M|L|XL))?|Q[1-8]_[01]|IQ[1-4]_(?:XXS|XS|S|M|NL)|TQ[12]_0)"
    r"(?![A-Za-z0-9])",
    re.IGNORECASE,
)

# Quantization words, matched as whole tokens (case-insensitive). Precision words give the
# label; method words name the format and imply 4-bit unless a precision word says otherwise.
_PRECISION_WORDS: dict[str, str] = {
    "4bit": "4-bit",
    "int4": "4-bit",
    "w4a16": "4-bit",
    "nf4": "4-bit",
    "8bit": "8-bit",
    "int8": "8-bit",
    "w8a8": "8-bit",
    "w8a16": "8-bit",
    "fp8": "fp8",
    "mxfp4": "mxfp4",
    "nvfp4": "nvfp4",
}
_METHOD_WORDS: dict[str, str] = {"awq": "awq", "gptq": "gptq", "bnb": "bnb", "nf4": "bnb"}

_TOKEN_SPLIT = re.compile(r"[-_/ .]+")


@dataclass(frozen=True)
class NameQuantization:
    """A quantization hint read from a name.

    ``label`` is one of ``4-bit``, ``8-bit``, ``fp8``, ``mxfp4``, ``nvfp4`` or
    ``gguf-<TYPE>`` (``gguf-Q4_K_M``); ``method`` names the format when the name says it
    (``awq``, ``gptq``, ``bnb``).
    """

    label: str
    method: str | None = None

    @property
    def spec_name(self) -> str:
        """The name in the spec's quantization vocabulary (awq, gptq, bitsandbytes, int4, ...)."""
        eight_bit = self.label == "8-bit"
        if self.method == "bnb":
            return "bitsandbytes-8bit" if eight_bit else "bitsandbytes"
        if self.method == "gptq" and eight_bit:
            return "gptq-8bit"
        if self.method is not None and not eight_bit:
            return self.method
        return {"4-bit": "int4", "8-bit": "int8"}.get(self.label, self.label)


@dataclass(frozen=True)
class ModelNameFacts:
    """Sizes (billions of parameters) and quantization a name announces."""

    name: str
    params_b: float | None
    active_params_b: float | None
    size_token: str | None
    quantization: NameQuantization | None
    # How the total was derived, for explanations ("8B", "8x7B, FFN share 0.78").
    derivation: str | None


def parse_model_name(name: str) -> ModelNameFacts:
    """Read parameter counts and a quantization hint from a model name or HF id."""
    base = _strip_extension(name.rsplit("/", 1)[-1])
    total: float | None = None
    active: float | None = None
    size_token: str | None = None
    derivation: str | None = None
    for match in _SIZE_TOKEN.finditer(base):
        billions = float(match["number"]) * _UNIT_TO_BILLIONS[match["unit"].lower()]
        if match["active"]:
            if match["experts"] is None and active is None:
                active = billions
            continue
        if total is not None:
            continue
        size_token = match.group(0)
        if match["experts"] is not None:
            experts = int(match["experts"])
            total = billions * (1 + (experts - 1) * FFN_SHARE)
            derivation = f"{size_token}: {experts} experts of a {billions:g}B model, FFN share {FFN_SHARE}"
        else:
            total = billions
            derivation = size_token
    if total is None:
        active = None
    return ModelNameFacts(
        name=name,
        params_b=total,
        active_params_b=active,
        size_token=size_token,
        quantization=detect_name_quantization(base),
        derivation=derivation,
    )


def detect_name_quantization(name: str) -> NameQuantization | None:
    """The quantization a name announces, or None. GGUF types win over words."""
    gguf_match = _GGUF_TYPE.search(name)
    if gguf_match is not None:
        return NameQuantization(label=f"gguf-{gguf_match['type'].upper()}")
    tokens = [token.lower() for token in _TOKEN_SPLIT.split(name) if token]
    label = next((_PRECISION_WORDS[token] for token in tokens if token in _PRECISION_WORDS), None)
    method = next((_METHOD_WORDS[token] for token in tokens if token in _METHOD_WORDS), None)
    if label is None and method is None:
        return None
    return NameQuantization(label=label or "4-bit", method=method)


def _strip_extension(base: str) -> str:
    for extension in (".gguf", ".safetensors", ".bin", ".pt", ".onnx"):
        if base.lower().endswith(extension):
            return base[: -len(extension)]
    return base

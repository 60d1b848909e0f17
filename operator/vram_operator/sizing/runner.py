"""Whether spec.args make vLLM serve a model as a pooling model (embeddings, scores, rewards).

A pooling model loads without its LM head and runs no sampler. vLLM picks the runner from the
architecture's class name (see architecture.is_pooling_architecture); these flags override it:
`--runner pooling|generate` (0.10+), `--convert embed|classify|reward` (0.10+) and the older
`--task embed|classify|score|reward|generate`, each as `--flag value` or `--flag=value`.
"""

from __future__ import annotations

from collections.abc import Sequence

_POOLING_VALUES = frozenset({"pooling", "embed", "embedding", "classify", "score", "reward"})
_GENERATE_VALUES = frozenset({"generate", "draft", "transcription"})
_RUNNER_FLAGS = ("--runner", "--convert", "--task")


def pooling_requested(args: Sequence[str]) -> bool | None:
    """True when the args ask for a pooling runner, False for a generating one, None when they do not say.

    The last occurrence wins, as with vLLM's own parser.
    """
    said: bool | None = None
    for index, arg in enumerate(args):
        flag, _, attached = arg.partition("=")
        if flag.replace("_", "-") not in _RUNNER_FLAGS:
            continue
        value = attached if attached else (args[index + 1] if index + 1 < len(args) else "")
        value = value.strip().lower()
        if value in _POOLING_VALUES:
            said = True
        elif value in _GENERATE_VALUES:
            said = False
    return said

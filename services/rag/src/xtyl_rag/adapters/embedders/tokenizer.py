"""all-MiniLM-L6-v2's WordPiece tokenizer (vendored ``minilm/tokenizer.json``, see ``NOTICE``).

Two views of one file: :func:`load_model_tokenizer` truncates and pads for the model, and
:class:`MiniLMTokenCounter` counts word pieces without limits, for the chunker.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files

from tokenizers import Tokenizer

#: all-MiniLM-L6-v2 was trained on (and sentence-transformers truncates at) 256 word pieces,
#: counting ``[CLS]`` and ``[SEP]``.
MAX_SEQUENCE_TOKENS = 256
#: word pieces of content that fit one model input next to ``[CLS]`` and ``[SEP]``.
MAX_CONTENT_TOKENS = MAX_SEQUENCE_TOKENS - 2


def tokenizer_json() -> str:
    return (
        files(__name__.rpartition(".")[0]).joinpath("minilm", "tokenizer.json").read_text("utf-8")
    )


def load_model_tokenizer(source: str | None = None) -> Tokenizer:
    """Adds ``[CLS]``/``[SEP]``, truncates at 256 pieces; no padding (the embedder pads)."""
    tokenizer = Tokenizer.from_str(source or tokenizer_json())
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=MAX_SEQUENCE_TOKENS)
    return tokenizer


class MiniLMTokenCounter:
    """Counts word pieces exactly as the local model sees them, without special tokens.

    Loading reads a file: build it at start-up (``load``), then calls are pure CPU.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer

    @classmethod
    def load(cls, source: str | None = None) -> MiniLMTokenCounter:
        tokenizer = Tokenizer.from_str(source or tokenizer_json())
        tokenizer.no_padding()
        tokenizer.no_truncation()
        return cls(tokenizer)

    def __call__(self, texts: Sequence[str]) -> list[int]:
        if not texts:
            return []
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(encoding.ids) for encoding in encodings]

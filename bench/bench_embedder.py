"""Raw rate of the local embedder (all-MiniLM-L6-v2 int8 on ONNX Runtime), on real text.

    uv run python bench/bench_embedder.py [--chunks 256] [--threads 0]

Text: the docstrings of the standard library's own source files (read with ``ast``, nothing
imported or downloaded), chunked exactly as the service chunks documents (240 word pieces,
15 % overlap). Prints model load time, process RSS with the model loaded, and chunks/s and
tokens/s (word pieces the model actually ran, ``[CLS]``/``[SEP]`` included) at batch sizes
1, 16 and 64.
"""

from __future__ import annotations

import argparse
import ast
import sysconfig
import time
from pathlib import Path

from xtyl_rag.adapters.embedders import MAX_SEQUENCE_TOKENS, LocalEmbedder, MiniLMTokenCounter
from xtyl_rag.domain.chunking import chunk_text


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stdlib_docstrings(limit_chars: int) -> str:
    """Module, class and function docstrings of the standard library, in a stable order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    parts: list[str] = []
    size = 0
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text("utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc) > 200:
                    parts.append(doc)
                    size += len(doc)
        if size >= limit_chars:
            break
    return "\n\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=256, help="chunks per batch size")
    parser.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: cores)")
    args = parser.parse_args()

    rss_before = rss_mib()
    started = time.perf_counter()
    embedder = LocalEmbedder.load_sync(max_batch=64, threads=args.threads)  # batch sizes below
    load_s = time.perf_counter() - started
    print(f"model load: {load_s * 1000:.0f} ms (ONNX session + tokenizer + one probe)")
    print(f"RSS: {rss_before:.0f} MiB before, {rss_mib():.0f} MiB with the model loaded")

    counter = MiniLMTokenCounter.load()
    text = stdlib_docstrings(limit_chars=args.chunks * 1600)
    chunks = [chunk.content for chunk in chunk_text(text, counter)][: args.chunks]
    tokens = sum(min(n + 2, MAX_SEQUENCE_TOKENS) for n in counter(chunks))
    print(
        f"text: {len(chunks)} chunks of stdlib docstrings, {tokens / len(chunks):.0f} tokens each"
    )

    embedder.embed_sync(chunks[:16])  # warm-up
    for batch in (1, 16, 64):
        sample = chunks if batch > 1 else chunks[: max(32, len(chunks) // 4)]
        sample_tokens = sum(min(n + 2, MAX_SEQUENCE_TOKENS) for n in counter(sample))
        started = time.perf_counter()
        for start in range(0, len(sample), batch):
            embedder.embed_sync(sample[start : start + batch])
        elapsed = time.perf_counter() - started
        print(
            f"batch {batch:>2}: {len(sample) / elapsed:7.1f} chunks/s"
            f"  {sample_tokens / elapsed:8.0f} tokens/s  ({len(sample)} chunks)"
        )
    print(f"RSS after the runs: {rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()

"""``python -m xtyl_rag.reembed`` (``make reembed``): rebuild every chunk's vector with the
configured embedding model, then switch search to it.

Run it after changing ``EMBEDDER`` / ``EMBEDDING_MODEL`` (workers on the new settings write
vectors of both models for new documents meanwhile). It is resumable and safe to interrupt:

1. every chunk without a vector of the configured model gets one (keyset pages, batches);
2. the model's HNSW index is built (after the bulk load: faster);
3. in one transaction that holds back new writes, if no chunk lacks a vector the configured
   model becomes ``active`` and the old one ``retired`` (else step 1 again);
4. the retired model's vectors and index are dropped.

Search answers from the old vectors until step 3 commits.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import structlog

from xtyl_common.events import EventSettings
from xtyl_common.logging import configure_logging
from xtyl_common.settings import load_settings_or_exit
from xtyl_rag.bootstrap import RagCore, open_core
from xtyl_rag.settings import RagSettings

log = structlog.stdlib.get_logger("xtyl.rag.reembed")

MAX_PASSES = 5


async def fill(core: RagCore, *, batch: int) -> int:
    """One pass over the chunks: vectors of the configured model for those that lack one."""
    embedder = core.embedders.configured
    model = embedder.model
    written = 0
    after = None
    started = time.perf_counter()
    while rows := await core.models.chunks_missing(model, after=after, limit=batch):
        vectors = await embedder.embed([content for *_, content in rows])
        written += await core.models.add_vectors(
            model, [(chunk, owner, document) for chunk, owner, document, _ in rows], vectors
        )
        after = rows[-1][0]
        log.info(
            "reembed_progress",
            model=model,
            written=written,
            per_s=round(written / max(1e-9, time.perf_counter() - started)),
        )
    return written


async def reembed(core: RagCore, *, batch: int = 256, keep_old: bool = False) -> str:
    """Returns what happened: ``nothing to do`` or ``switched to <model>``."""
    configured = core.embedders.configured
    status = await core.models.register(configured.model, configured.dimension)
    if status.state != "changed":
        return f"nothing to do: {status.active.model} is already active"
    target = status.configured
    for _ in range(MAX_PASSES):
        await fill(core, batch=batch)
        await core.models.ensure_index(target.model, target.dimension)
        if await core.models.activate_if_complete(target.model) is not None:
            break
    else:
        raise RuntimeError(f"chunks kept arriving without {target.model} vectors; run again")
    if not keep_old:
        dropped = await core.models.drop_retired()
        log.info("retired_vectors_dropped", rows=dropped)
    return f"switched from {status.active.model} to {target.model}"


async def _main(settings: RagSettings, batch: int, keep_old: bool) -> str:
    async with open_core(settings, EventSettings()) as core:
        return await reembed(core, batch=batch, keep_old=keep_old)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xtyl_rag.reembed", description=__doc__)
    parser.add_argument("--batch", type=int, default=256, help="chunks per embedder call")
    parser.add_argument("--keep-old", action="store_true", help="keep the retired vectors")
    args = parser.parse_args(argv)
    settings = load_settings_or_exit(RagSettings, program="reembed")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    outcome = asyncio.run(_main(settings, args.batch, args.keep_old))
    print(f"reembed: {outcome}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The rag service's programs.

* ``python -m xtyl_rag`` / ``xtyl-rag``: serve the HTTP app (granian, :mod:`xtyl_rag.app`);
* ``xtyl-rag-reembed`` (``make reembed``): after a change of ``EMBEDDER`` /
  ``EMBEDDING_MODEL``, give every chunk a vector of the configured model, then switch search
  to it (resumable; see :mod:`xtyl_rag.service.reembed`).

The worker is ``xtyl-rag-worker`` (:mod:`xtyl_rag.worker`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from xtyl_common.logging import configure_logging
from xtyl_common.serve import serve
from xtyl_common.settings import load_settings_or_exit
from xtyl_rag.settings import RagSettings

REEMBED_DESCRIPTION = (
    "Give every chunk a vector of the configured embedding model, build its index, then switch"
    " search to it. Resumable and safe to interrupt: search answers from the old vectors until"
    " the switch."
)


def main() -> None:
    serve(program="xtyl-rag", factory="xtyl_rag.app:app_from_env", settings_cls=RagSettings)


def reembed(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xtyl-rag-reembed", description=REEMBED_DESCRIPTION)
    parser.add_argument("--batch", type=int, default=256, help="chunks per embedder call")
    parser.add_argument("--keep-old", action="store_true", help="keep the retired vectors")
    args = parser.parse_args(argv)
    settings = load_settings_or_exit(RagSettings, program="xtyl-rag-reembed")
    configure_logging(settings.log_level, json_logs=settings.log_json)
    outcome = asyncio.run(_reembed(settings, batch=args.batch, keep_old=args.keep_old))
    print(f"reembed: {outcome}", file=sys.stderr)
    return 0


async def _reembed(settings: RagSettings, *, batch: int, keep_old: bool) -> str:
    # here, not at the top: serving never loads the models and the database driver in the
    # parent process (granian's workers import the app themselves)
    from xtyl_common.events import EventSettings  # noqa: PLC0415
    from xtyl_rag.service import open_service  # noqa: PLC0415

    async with open_service(settings, EventSettings()) as service:
        return await service.reembed(batch=batch, keep_old=keep_old)


if __name__ == "__main__":
    main()

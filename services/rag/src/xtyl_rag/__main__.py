"""``python -m xtyl_rag`` / ``xtyl-rag``: serve the rag service."""

from __future__ import annotations

from xtyl_common.serve import serve
from xtyl_rag.settings import RagSettings


def main() -> None:
    serve(program="xtyl-rag", factory="xtyl_rag.app:app_from_env", settings_cls=RagSettings)


if __name__ == "__main__":
    main()

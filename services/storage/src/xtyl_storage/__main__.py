"""``python -m xtyl_storage`` / ``xtyl-storage``: serve the storage service."""

from __future__ import annotations

from xtyl_common.serve import serve
from xtyl_storage.settings import StorageSettings


def main() -> None:
    serve(
        program="xtyl-storage",
        factory="xtyl_storage.app:app_from_env",
        settings_cls=StorageSettings,
    )


if __name__ == "__main__":
    main()

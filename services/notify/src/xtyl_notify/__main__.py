"""``python -m xtyl_notify`` / ``xtyl-notify``: serve the notify service."""

from __future__ import annotations

from xtyl_common.serve import serve
from xtyl_notify.settings import NotifySettings


def main() -> None:
    serve(
        program="xtyl-notify", factory="xtyl_notify.app:app_from_env", settings_cls=NotifySettings
    )


if __name__ == "__main__":
    main()

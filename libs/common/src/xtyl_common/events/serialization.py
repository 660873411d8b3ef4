"""arq job payloads and results as msgpack (msgspec), not pickle.

Pass both to arq (``WorkerSettings.job_serializer``/``job_deserializer``, and
``create_pool(..., job_serializer=..., job_deserializer=...)`` for producers). Arguments are
plain data: str, bytes, numbers, lists, dicts, UUIDs and datetimes (msgpack timestamps).
A failed job's result holds its exception, which is stored as ``"ExceptionType: message"``.
"""

from __future__ import annotations

from typing import Any

import msgspec


def _enc_hook(value: Any) -> Any:
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    raise NotImplementedError(f"arq job data of type {type(value).__name__} is not serializable")


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.msgpack.Decoder()


def serialize_job(data: dict[str, Any]) -> bytes:
    return _encoder.encode(data)


def deserialize_job(data: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = _decoder.decode(data)
    return decoded

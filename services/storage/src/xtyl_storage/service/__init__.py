"""What the storage service does, whatever the transport:

* :mod:`.files`: :class:`StorageService`, the use cases behind the routes (uploads, presigned
  uploads, reads, deletes);
* :mod:`.accounts`: the caller's account (usage, export) and the erasure of a deleted user;
* :mod:`.bodies`: a request body as the service reads it;
* :mod:`.wiring`: :func:`open_service`, the one place that builds the service and its adapters.
"""

from xtyl_storage.service.accounts import EXPORT_PAGE, Accounts
from xtyl_storage.service.bodies import excluding_client_time
from xtyl_storage.service.files import (
    FILE_NOT_FOUND,
    PresignedUpload,
    StorageService,
    Upload,
    not_found,
    storage_timeout,
)
from xtyl_storage.service.wiring import open_service

__all__ = [
    "EXPORT_PAGE",
    "FILE_NOT_FOUND",
    "Accounts",
    "PresignedUpload",
    "StorageService",
    "Upload",
    "excluding_client_time",
    "not_found",
    "open_service",
    "storage_timeout",
]

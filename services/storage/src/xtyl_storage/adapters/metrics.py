"""The storage service's own metrics (docs/metrics.md, "rag, storage, notify"): the file
bytes that pass through it and the multipart parts it sends to the bucket. Presigned direct
uploads go from the client to the bucket and are not counted here.
"""

from __future__ import annotations

from prometheus_client import Counter

BYTES_RECEIVED = Counter(
    "xtyl_storage_bytes_received",
    "File bytes received by uploads through the API (as they arrive).",
)
BYTES_SENT = Counter(
    "xtyl_storage_bytes_sent",
    "File bytes streamed out by downloads (users' and other services').",
)
MULTIPART_PARTS = Counter(
    "xtyl_storage_multipart_parts",
    "Multipart parts uploaded to the bucket.",
)

"""The rag service's use cases: :class:`RagService`, which ``routes/``, ``worker.py`` and
``xtyl-rag-reembed`` call, and :func:`open_service`, which builds it and its adapters.

* :mod:`.rag`: ``RagService`` (documents, search and answers, status, indexing, re-embedding);
* :mod:`.indexing`: a document to chunks and vectors (leases, failures, the reconciler's query);
* :mod:`.retrieval`: search and answers over one user's chunks;
* :mod:`.reembed`: a change of embedding model, resumable;
* :mod:`.account`: a user's erasure, quotas and export;
* :mod:`.wiring`: ``open_service``, the one composition root.
"""

from xtyl_rag.service.indexing import DocumentBusy, IndexReport, stuck_file_finder
from xtyl_rag.service.rag import IndexingStatus, RagService
from xtyl_rag.service.retrieval import AnswerEvent, SearchResult
from xtyl_rag.service.wiring import open_service

__all__ = [
    "AnswerEvent",
    "DocumentBusy",
    "IndexReport",
    "IndexingStatus",
    "RagService",
    "SearchResult",
    "open_service",
    "stuck_file_finder",
]

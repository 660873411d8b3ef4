"""Every piece of the rag service's I/O: Postgres repositories (``postgres/``), the storage
service (``storage.py``), embedders (``embedders/``, ``vector_spaces.py``), the LLM
(``llm.py``), the inline job queue (``jobs.py``) and text extraction in capped child processes
(``extraction/``). The use cases in ``service/`` are their only callers."""

-- Documents, chunks and their embeddings. Plain SQL for Postgres 15-18 and Supabase.
--
-- pgvector is never named by schema: on Supabase it lives in `extensions` (already enabled),
-- locally it may be in `public`; `vector`, `<=>` and `vector_cosine_ops` resolve through the
-- search_path of the connection.
--
-- Why embeddings live in a table of their own, keyed by (chunk, model), with an untyped
-- `vector` column: a change of embedding model (another dimension, another space) is a new set
-- of rows next to the old ones, built while search keeps reading the old set, then switched
-- with one update of `embedding_models`; no column is retyped and nothing is rewritten in
-- place. HNSW needs a fixed dimension, so each model gets a partial index of its own on
-- `(embedding::vector(<dim>))` where model = '<model>', created by the service
-- (adapters/postgres/models.py, `ensure_model_index`) when a model is registered.

-- A user's documents: one per uploaded file (owner_id, file_id) or per inline text.
create table if not exists xtyl_rag.documents (
    id              uuid        primary key default gen_random_uuid(),
    owner_id        uuid        not null,
    source          text        not null check (source in ('file', 'inline')),
    file_id         uuid,
    -- what the file.uploaded event said, kept so a stuck document can be re-emitted
    file_key        text,
    file_name       text,
    content_type    text,
    size_bytes      bigint      check (size_bytes is null or size_bytes >= 0),
    title           text        not null,
    metadata        jsonb       not null default '{}'::jsonb
                                check (jsonb_typeof(metadata) = 'object'),
    status          text        not null default 'pending' check (status in
                        ('pending', 'extracting', 'chunking', 'embedding', 'ready', 'failed')),
    error_code      text,
    error           text,
    -- sha256 of the source bytes (file) or of the text (inline): what should be indexed
    content_sha256  text        not null check (content_sha256 ~ '^[0-9a-f]{64}$'),
    -- sha256 of what the current chunks were made from (null: never indexed)
    indexed_sha256  text,
    embedding_model text,
    chunk_count     integer     not null default 0 check (chunk_count >= 0),
    -- indexing runs so far; a document past the limit fails instead of looping
    attempts        integer     not null default 0,
    -- the job that holds the document (and until when): one indexing run at a time
    lease_id        uuid,
    lease_until     timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    indexed_at      timestamptz,
    check ((source = 'file') = (file_id is not null)),
    check (status <> 'failed' or error_code is not null)
);

-- Idempotency by file: file.uploaded delivered twice, or POST /v1/documents {file_id} after the
-- event, find the same row.
create unique index if not exists documents_owner_file_key
    on xtyl_rag.documents (owner_id, file_id) where file_id is not null;

-- GET /v1/documents: a user's documents newest first (cursor on created_at, id).
create index if not exists documents_owner_created_idx
    on xtyl_rag.documents (owner_id, created_at desc, id desc);

-- The reconciler: documents not in a final state, oldest first.
create index if not exists documents_unfinished_idx
    on xtyl_rag.documents (updated_at) where status not in ('ready', 'failed');

-- The text of an inline document until it is indexed.
create table if not exists xtyl_rag.inline_sources (
    document_id uuid primary key references xtyl_rag.documents (id) on delete cascade,
    text        text not null
);

create table if not exists xtyl_rag.chunks (
    id          uuid    primary key,
    document_id uuid    not null references xtyl_rag.documents (id) on delete cascade,
    owner_id    uuid    not null,
    ordinal     integer not null check (ordinal >= 0),
    content     text    not null,
    token_count integer not null,
    metadata    jsonb   not null default '{}'::jsonb,
    tsv         tsvector generated always as (to_tsvector('english'::regconfig, content)) stored,
    unique (document_id, ordinal)
);

create index if not exists chunks_owner_idx on xtyl_rag.chunks (owner_id);
create index if not exists chunks_tsv_idx on xtyl_rag.chunks using gin (tsv);

-- Embedding models: exactly one 'active' (what search reads); 'building' while `reembed`
-- fills a new model's vectors; 'retired' once replaced.
create table if not exists xtyl_rag.embedding_models (
    model        text        primary key,
    dimension    integer     not null check (dimension between 1 and 16000),
    state        text        not null check (state in ('active', 'building', 'retired')),
    created_at   timestamptz not null default now(),
    activated_at timestamptz
);

create unique index if not exists embedding_models_one_active
    on xtyl_rag.embedding_models ((true)) where state = 'active';

create table if not exists xtyl_rag.chunk_embeddings (
    chunk_id    uuid   not null references xtyl_rag.chunks (id) on delete cascade,
    model       text   not null references xtyl_rag.embedding_models (model),
    owner_id    uuid   not null,
    document_id uuid   not null,
    embedding   vector not null,
    primary key (chunk_id, model)
);

-- The exact path of semantic search: every vector of one owner and model, then a sort.
create index if not exists chunk_embeddings_owner_idx
    on xtyl_rag.chunk_embeddings (owner_id, model);

-- Chunks per owner, kept in the transaction that writes or deletes chunks: the planner of
-- semantic search (domain/planning.py) reads it to choose the exact scan or the HNSW index.
create table if not exists xtyl_rag.owner_stats (
    owner_id    uuid   primary key,
    chunk_count bigint not null default 0 check (chunk_count >= 0)
);

-- Supabase grants new tables to its API roles by default; these rows are the service's alone.
do $$
declare
    t text;
begin
    foreach t in array array['documents', 'inline_sources', 'chunks', 'embedding_models',
                             'chunk_embeddings', 'owner_stats'] loop
        execute format('revoke all on table xtyl_rag.%I from public', t);
        if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
            execute format('revoke all on table xtyl_rag.%I from anon', t);
        end if;
        if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
            execute format('revoke all on table xtyl_rag.%I from authenticated', t);
        end if;
    end loop;
end;
$$;

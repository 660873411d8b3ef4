-- pg_prewarm lets the rag service read the active model's HNSW index into memory when it
-- starts (adapters/postgres/chunks.py, `ChunkSearch.prewarm`): measured on 1,000,000 chunks,
-- the first pass of searches after a restart of Postgres ran 1.6-3 times as slow for the owners
-- that the index serves (bench/bench_rag.py, "cold"). It ships with Postgres and is available
-- on Supabase, where extensions live in the `extensions` schema. Where it cannot be enabled,
-- the service skips the prewarm.
do $$
begin
    if not exists (select 1 from pg_catalog.pg_extension where extname = 'pg_prewarm') then
        if exists (select 1 from pg_catalog.pg_namespace where nspname = 'extensions') then
            create extension pg_prewarm schema extensions;
        else
            create extension pg_prewarm;
        end if;
    end if;
exception when insufficient_privilege or undefined_file or feature_not_supported then
    raise notice 'pg_prewarm cannot be enabled (%): the HNSW index is not prewarmed', sqlerrm;
end $$;

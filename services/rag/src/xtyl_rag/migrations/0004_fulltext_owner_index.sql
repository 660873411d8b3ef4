-- Full-text search is always scoped to one owner. A GIN index on tsv alone yields a bitmap of
-- EVERY owner's chunks sharing a word with the query, which the owner's btree then trims
-- (measured on 1,000,000 chunks, an owner of 125,000 and a seven-word query: 55,000 rows and
-- 13 ms for the two bitmaps). A GIN index on (owner_id, tsv) builds only the owner's bitmap
-- (6,949 rows, 3.7 ms). It needs btree_gin (GIN operator classes for plain types such as
-- uuid): it ships with Postgres, is a trusted extension (any role allowed to create in the
-- database may enable it) and is available on Supabase, where extensions live in the
-- `extensions` schema. Where it cannot be enabled, the GIN index on tsv alone stays.
do $$
begin
    if not exists (select 1 from pg_catalog.pg_extension where extname = 'btree_gin') then
        if exists (select 1 from pg_catalog.pg_namespace where nspname = 'extensions') then
            create extension btree_gin schema extensions;
        else
            create extension btree_gin;
        end if;
    end if;
exception when insufficient_privilege or undefined_file or feature_not_supported then
    raise notice 'btree_gin cannot be enabled (%): full-text search keeps the GIN index on tsv',
        sqlerrm;
end $$;

do $$
begin
    if exists (select 1 from pg_catalog.pg_extension where extname = 'btree_gin') then
        create index if not exists chunks_owner_tsv_idx
            on xtyl_rag.chunks using gin (owner_id, tsv);
        drop index if exists xtyl_rag.chunks_tsv_idx;
    end if;
end $$;

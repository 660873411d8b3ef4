-- How many of each owner's chunks hold each lexeme: document frequencies per owner, kept by
-- statement triggers in the transaction that writes or deletes chunks (cascades included).
--
-- Full-text search on a large owner (adapters/postgres/chunks.py) reads it to choose which of
-- the query's lexemes generate candidates: the rarest first, until their chunks would exceed a
-- budget. A query of plain words shares one word or another with most of a big owner's
-- chunks (measured: an owner of 125,000 chunks, a seven-word sentence, over 10,000 matches),
-- and ranking all of them is what made full-text search slow there; its frequent words
-- still count in the ranking, they only stop deciding which chunks are ranked.
create table if not exists xtyl_rag.owner_lexemes (
    owner_id uuid    not null,
    lexeme   text    not null,
    chunks   integer not null check (chunks >= 0),
    primary key (owner_id, lexeme)
);

-- Rows are locked in (owner, lexeme) order by both functions, so two transactions writing
-- chunks of one owner wait for each other instead of deadlocking.
create or replace function xtyl_rag.owner_lexemes_added() returns trigger
language plpgsql set search_path = '' as $$
begin
    insert into xtyl_rag.owner_lexemes as o (owner_id, lexeme, chunks)
    select n.owner_id, l.lexeme, count(*)::integer
    from new_chunks n cross join lateral unnest(pg_catalog.tsvector_to_array(n.tsv)) as l(lexeme)
    group by n.owner_id, l.lexeme
    order by n.owner_id, l.lexeme
    on conflict (owner_id, lexeme) do update set chunks = o.chunks + excluded.chunks;
    return null;
end;
$$;

create or replace function xtyl_rag.owner_lexemes_removed() returns trigger
language plpgsql set search_path = '' as $$
begin
    perform 1 from xtyl_rag.owner_lexemes o
    where (o.owner_id, o.lexeme) in (
        select d.owner_id, l.lexeme
        from old_chunks d cross join lateral unnest(pg_catalog.tsvector_to_array(d.tsv)) as l(lexeme)
    )
    order by o.owner_id, o.lexeme
    for update;
    update xtyl_rag.owner_lexemes o set chunks = greatest(o.chunks - g.chunks, 0)
    from (
        select d.owner_id, l.lexeme, count(*)::integer as chunks
        from old_chunks d cross join lateral unnest(pg_catalog.tsvector_to_array(d.tsv)) as l(lexeme)
        group by d.owner_id, l.lexeme
    ) as g
    where o.owner_id = g.owner_id and o.lexeme = g.lexeme;
    delete from xtyl_rag.owner_lexemes o
    where o.chunks = 0 and (o.owner_id, o.lexeme) in (
        select d.owner_id, l.lexeme
        from old_chunks d cross join lateral unnest(pg_catalog.tsvector_to_array(d.tsv)) as l(lexeme)
    );
    return null;
end;
$$;

drop trigger if exists chunks_owner_lexemes_added on xtyl_rag.chunks;
create trigger chunks_owner_lexemes_added after insert on xtyl_rag.chunks
    referencing new table as new_chunks
    for each statement execute function xtyl_rag.owner_lexemes_added();

drop trigger if exists chunks_owner_lexemes_removed on xtyl_rag.chunks;
create trigger chunks_owner_lexemes_removed after delete on xtyl_rag.chunks
    referencing old table as old_chunks
    for each statement execute function xtyl_rag.owner_lexemes_removed();

-- Chunks are never updated in place (re-indexing deletes and inserts): refuse it rather than
-- let the counts drift.
create or replace function xtyl_rag.chunks_immutable() returns trigger
language plpgsql set search_path = '' as $$
begin
    raise exception 'xtyl_rag.chunks rows are immutable: delete and insert instead'
        using errcode = 'feature_not_supported';
end;
$$;

drop trigger if exists chunks_content_immutable on xtyl_rag.chunks;
create trigger chunks_content_immutable before update of content, owner_id on xtyl_rag.chunks
    for each row execute function xtyl_rag.chunks_immutable();

-- The chunks written before this migration.
insert into xtyl_rag.owner_lexemes (owner_id, lexeme, chunks)
select c.owner_id, l.lexeme, count(*)::integer
from xtyl_rag.chunks c cross join lateral unnest(tsvector_to_array(c.tsv)) as l(lexeme)
group by c.owner_id, l.lexeme
on conflict (owner_id, lexeme) do nothing;

revoke all on table xtyl_rag.owner_lexemes from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        revoke all on table xtyl_rag.owner_lexemes from anon;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        revoke all on table xtyl_rag.owner_lexemes from authenticated;
    end if;
end;
$$;

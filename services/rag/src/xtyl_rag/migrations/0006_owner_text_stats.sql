-- BM25 for full-text search needs, per owner, the number of chunks (N) and their average
-- length next to the per-lexeme chunk counts of owner_lexemes (migration 0005):
--     idf(t) = ln(1 + (N - n(t) + 0.5) / (n(t) + 0.5)),  avgdl = tokens / chunks
-- A chunk's length is its token_count (the embedding model's word pieces, counted by the
-- chunker), read from the row the search reads anyway. The counts are kept by the same statement triggers, in the transaction that
-- writes or deletes chunks, so one search statement reads N, avgdl and every n(t) of a single
-- committed state: scores never mix two states of an owner's chunks.
--
-- owner_stats (0002) is kept by the application from documents' chunk counts; these counts
-- follow the chunk rows themselves, whoever writes them.
-- Writers of chunks wait until this migration commits (searches do not).
lock table xtyl_rag.chunks in share mode;

create table if not exists xtyl_rag.owner_text_stats (
    owner_id uuid   primary key,
    chunks   bigint not null check (chunks >= 0),
    tokens   bigint not null check (tokens >= 0)
);

-- The owner's row is locked first, then its lexemes in (owner, lexeme) order: every writer of
-- one owner's chunks queues on that row, so two re-indexings (a delete of old chunks and an
-- insert of new ones each) cannot lock the same lexemes in opposite orders.
create or replace function xtyl_rag.owner_lexemes_added() returns trigger
language plpgsql set search_path = '' as $$
begin
    insert into xtyl_rag.owner_text_stats as s (owner_id, chunks, tokens)
    select n.owner_id, count(*), coalesce(sum(greatest(n.token_count, 0)), 0)
    from new_chunks n
    group by n.owner_id
    order by n.owner_id
    on conflict (owner_id) do update
        set chunks = s.chunks + excluded.chunks, tokens = s.tokens + excluded.tokens;
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
    perform 1 from xtyl_rag.owner_text_stats s
    where s.owner_id in (select d.owner_id from old_chunks d)
    order by s.owner_id
    for update;
    update xtyl_rag.owner_text_stats s
    set chunks = greatest(s.chunks - g.chunks, 0), tokens = greatest(s.tokens - g.tokens, 0)
    from (
        select d.owner_id, count(*) as chunks, coalesce(sum(greatest(d.token_count, 0)), 0) as tokens
        from old_chunks d
        group by d.owner_id
    ) as g
    where s.owner_id = g.owner_id;
    delete from xtyl_rag.owner_text_stats s
    where s.chunks = 0 and s.owner_id in (select d.owner_id from old_chunks d);
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

-- The chunks written before this migration; every later write is counted by the triggers
-- (the lock taken above keeps a write from slipping between the two).
insert into xtyl_rag.owner_text_stats (owner_id, chunks, tokens)
select c.owner_id, count(*), coalesce(sum(greatest(c.token_count, 0)), 0)
from xtyl_rag.chunks c
group by c.owner_id
on conflict (owner_id) do nothing;

revoke all on table xtyl_rag.owner_text_stats from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        revoke all on table xtyl_rag.owner_text_stats from anon;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        revoke all on table xtyl_rag.owner_text_stats from authenticated;
    end if;
end;
$$;

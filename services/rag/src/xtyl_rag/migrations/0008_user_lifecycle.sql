-- A user's life in the rag service: the erasure of a deleted user (GDPR Art. 17) and the
-- answers a user asked today (the daily quota).
--
-- xtyl_rag.erasures (xtyl_common.erasure): when the erasure of each deleted user began and
-- ended, and what it removed; from the moment a row exists the write paths refuse the user.
select xtyl_events.install_erasures('xtyl_rag');

-- An erasure in progress: what it removed so far, committed with each batch, so a run killed
-- half-way and finished by the next one still reports everything it removed. The row goes in
-- the transaction that completes the erasure (its totals then live in erasures.erased).
create table if not exists xtyl_rag.erasure_progress (
    user_id   uuid   primary key,
    documents bigint not null default 0 check (documents >= 0),
    chunks    bigint not null default 0 check (chunks >= 0)
);

-- Answers per user and UTC day: one row per user, moved to the new day by the first answer of
-- that day. Counted by one guarded upsert (adapters/postgres/usage.py), so requests racing at
-- the limit pass exactly up to it.
create table if not exists xtyl_rag.answer_counts (
    owner_id uuid    primary key,
    day      date    not null,
    answers  integer not null check (answers >= 0)
);

-- The erasure deletes the user's published events (document.indexed / document.failed name
-- the owner) batch by batch: found by owner, not by reading the whole outbox each time.
create index if not exists outbox_owner_idx on xtyl_rag.outbox ((payload ->> 'owner_id'));

do $$
declare
    t text;
begin
    foreach t in array array['erasure_progress', 'answer_counts'] loop
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

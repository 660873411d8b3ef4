-- What each outbox relay knows about the Redis it publishes to (xtyl_common.events.recovery).
--
-- epoch: the token in the Redis key <stream_prefix>:epoch when the relay last looked. Only a
--   Redis that lost its data (restarted empty, a failover without persistence, FLUSHALL) lacks
--   the key, so a different token means: the entries published before are gone.
-- replay_from: per stream (domain), the first entry id that some consumer group may not have
--   handled yet. After a loss, the outbox rows published at or after it are published again.
--
-- Plain SQL for Postgres 15-18 and Supabase: no superuser-only features, no extensions.

create table if not exists xtyl_events.stream_checkpoints (
    outbox_schema text        not null,
    stream_prefix text        not null,
    epoch         text        not null,
    replay_from   jsonb       not null default '{}'::jsonb,
    checked_at    timestamptz not null default pg_catalog.now(),
    primary key (outbox_schema, stream_prefix)
);

-- A Redis stream entry id ('1700000000000-3') as a sortable pair; null for anything else.
create or replace function xtyl_events.entry_position(entry_id text) returns numeric[]
language sql
immutable
set search_path = ''
as $$
    select case when entry_id ~ '^[0-9]+-[0-9]+$'
        then array[pg_catalog.split_part(entry_id, '-', 1)::numeric,
                   pg_catalog.split_part(entry_id, '-', 2)::numeric]
    end
$$;

revoke all on table xtyl_events.stream_checkpoints from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        revoke all on table xtyl_events.stream_checkpoints from anon;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        revoke all on table xtyl_events.stream_checkpoints from authenticated;
    end if;
end;
$$;

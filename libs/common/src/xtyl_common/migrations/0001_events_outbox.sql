-- The transactional outbox, shared by every service (xtyl_common "common" migrations).
--
-- A service declares its outbox in one of its own migrations:
--     select xtyl_events.install_outbox('storage');
-- and writes events in the same transaction as its change, from Python
-- (xtyl_common.events.add_event) or from SQL, e.g. a trigger:
--     perform xtyl_events.add_event('public', 'users', 'user.created',
--                                   jsonb_build_object('user_id', new.id), 'gateway');
-- The relay (xtyl_common.events.relay) publishes the rows to Redis Streams.
--
-- Plain SQL for Postgres 15-18 and Supabase: no superuser-only features, no extensions.

create schema if not exists xtyl_events;

-- Wakes the relays (LISTEN xtyl_outbox) once per inserting statement; delivered at commit.
create or replace function xtyl_events.notify_outbox() returns trigger
language plpgsql
set search_path = ''
as $$
begin
    perform pg_catalog.pg_notify('xtyl_outbox', tg_table_schema);
    return null;
end;
$$;

-- Creates <target_schema>.outbox (idempotent; safe to call again from a later migration).
create or replace function xtyl_events.install_outbox(target_schema text) returns void
language plpgsql
set search_path = ''
as $$
begin
    if target_schema is null or target_schema !~ '^[a-z_][a-z0-9_]*$' then
        raise exception 'install_outbox: % is not a plain lower-case schema name', target_schema;
    end if;
    execute format('create schema if not exists %I', target_schema);
    execute format($sql$
        create table if not exists %I.outbox (
            seq          bigint      generated always as identity primary key,
            id           uuid        not null unique,
            stream       text        not null,
            type         text        not null,
            version      integer     not null default 1,
            payload      jsonb       not null,
            producer     text        not null,
            request_id   text,
            occurred_at  timestamptz not null default pg_catalog.now(),
            created_at   timestamptz not null default pg_catalog.now(),
            published_at timestamptz,
            stream_id    text,
            attempts     integer     not null default 0,
            last_error   text
        )$sql$, target_schema);
    execute format(
        'create index if not exists outbox_unpublished_idx on %I.outbox (seq)'
        ' where published_at is null', target_schema);
    execute format(
        'create index if not exists outbox_published_at_idx on %I.outbox (published_at)'
        ' where published_at is not null', target_schema);
    execute format('drop trigger if exists outbox_notify on %I.outbox', target_schema);
    execute format(
        'create trigger outbox_notify after insert on %I.outbox'
        ' for each statement execute function xtyl_events.notify_outbox()', target_schema);
    -- Supabase grants new tables to its API roles by default; an outbox is never theirs.
    execute format('revoke all on table %I.outbox from public', target_schema);
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        execute format('revoke all on table %I.outbox from anon', target_schema);
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        execute format('revoke all on table %I.outbox from authenticated', target_schema);
    end if;
end;
$$;

-- Appends one event to <target_schema>.outbox in the caller's transaction; returns its id.
-- stream is the producing domain ('users', 'files', 'documents'), not the Redis key.
create or replace function xtyl_events.add_event(
    target_schema text,
    stream        text,
    event_type    text,
    payload       jsonb,
    producer      text,
    request_id    text        default null,
    version       integer     default 1,
    event_id      uuid        default null,
    occurred_at   timestamptz default null
) returns uuid
language plpgsql
set search_path = ''
as $$
declare
    new_id uuid := coalesce(event_id, pg_catalog.gen_random_uuid());
begin
    execute format(
        'insert into %I.outbox (id, stream, type, version, payload, producer, request_id,'
        ' occurred_at) values ($1, $2, $3, $4, $5, $6, $7, $8)', target_schema)
    using new_id, stream, event_type, coalesce(version, 1), payload, producer, request_id,
          coalesce(occurred_at, pg_catalog.now());
    return new_id;
end;
$$;

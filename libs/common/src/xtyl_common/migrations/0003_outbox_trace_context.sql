-- The trace context of an event travels with it: two nullable columns in every outbox
-- (traceparent, tracestate: W3C Trace Context, as xtyl_common.tracing.current_carrier gives
-- them), written by add_event and published by the relay in the event's envelope, so the
-- worker's handler span continues the trace of the request that wrote the row.
--
-- Old callers keep working: add_event takes the two as trailing parameters with defaults, so a
-- trigger calling it with five arguments (the gateway's auth.users trigger) writes no context.
--
-- Plain SQL for Postgres 15-18 and Supabase: no superuser-only features, no extensions.

-- install_outbox as before, with the two columns (added to an outbox made before, too).
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
            last_error   text,
            traceparent  text,
            tracestate   text
        )$sql$, target_schema);
    execute format(
        'alter table %I.outbox add column if not exists traceparent text,'
        ' add column if not exists tracestate text', target_schema);
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

-- Every outbox installed before this file (a table "outbox" with the outbox_notify trigger).
do $$
declare
    target text;
begin
    for target in
        select distinct n.nspname
        from pg_catalog.pg_trigger t
        join pg_catalog.pg_class c on c.oid = t.tgrelid
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where t.tgname = 'outbox_notify' and c.relname = 'outbox'
    loop
        execute format(
            'alter table %I.outbox add column if not exists traceparent text,'
            ' add column if not exists tracestate text', target);
    end loop;
end;
$$;

-- add_event with the trace context. The old signature is dropped first: with both defined, a
-- call with fewer arguments would be ambiguous. (PL/pgSQL callers, such as triggers, are
-- resolved when they run, so nothing depends on the old one.)
drop function if exists xtyl_events.add_event(
    text, text, text, jsonb, text, text, integer, uuid, timestamptz);

create function xtyl_events.add_event(
    target_schema text,
    stream        text,
    event_type    text,
    payload       jsonb,
    producer      text,
    request_id    text        default null,
    version       integer     default 1,
    event_id      uuid        default null,
    occurred_at   timestamptz default null,
    traceparent   text        default null,
    tracestate    text        default null
) returns uuid
language plpgsql
set search_path = ''
as $$
declare
    new_id uuid := coalesce(event_id, pg_catalog.gen_random_uuid());
begin
    execute format(
        'insert into %I.outbox (id, stream, type, version, payload, producer, request_id,'
        ' occurred_at, traceparent, tracestate) values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)',
        target_schema)
    using new_id, stream, event_type, coalesce(version, 1), payload, producer, request_id,
          coalesce(occurred_at, pg_catalog.now()), traceparent, tracestate;
    return new_id;
end;
$$;

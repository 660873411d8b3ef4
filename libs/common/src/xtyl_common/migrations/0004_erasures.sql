-- The erasure ledger: each service that holds a user's data records, in a table of its own
-- schema, when it began and when it finished erasing that user (GDPR Art. 17), so an operator
-- can prove it (`select * from xtyl_storage.erasures where user_id = ...`) and the gateway can
-- show a user their deletion's progress. A row also marks the user as gone for that service:
-- its write paths refuse the user from the moment the row is committed
-- (xtyl_common.erasure.ErasureLedger).
--
-- A service declares its ledger in one of its own migrations:
--     select xtyl_events.install_erasures('xtyl_storage');
--
-- Plain SQL for Postgres 15-18 and Supabase: no superuser-only features, no extensions.

create or replace function xtyl_events.install_erasures(target_schema text) returns void
language plpgsql
set search_path = ''
as $$
begin
    if target_schema is null or target_schema !~ '^[a-z_][a-z0-9_]*$' then
        raise exception 'install_erasures: % is not a plain lower-case schema name',
            target_schema;
    end if;
    execute format('create schema if not exists %I', target_schema);
    execute format($sql$
        create table if not exists %I.erasures (
            user_id      uuid        primary key,
            -- when the user was deleted (the user.deleted event's occurred_at)
            requested_at timestamptz not null,
            started_at   timestamptz not null default pg_catalog.now(),
            completed_at timestamptz,
            -- deliveries of user.deleted that worked on it (a killed worker's run counts)
            attempts     integer     not null default 1 check (attempts >= 1),
            -- what was erased, by kind: {"files": 3, "objects": 4, ...}
            erased       jsonb       not null default '{}'::jsonb
        )$sql$, target_schema);
    -- the erasures not completed yet, which the services measure every minute
    execute format(
        'create index if not exists erasures_incomplete_idx on %I.erasures (requested_at)'
        ' where completed_at is null', target_schema);
    execute format('revoke all on table %I.erasures from public', target_schema);
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        execute format('revoke all on table %I.erasures from anon', target_schema);
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        execute format('revoke all on table %I.erasures from authenticated', target_schema);
    end if;
end;
$$;

-- Who owns which object. Rows are never removed by a DELETE: status 'deleted' stays as a
-- tombstone, so repeating a DELETE answers 204 while another user's id still answers 404.
create table if not exists xtyl_storage.files (
    id           uuid        primary key,
    owner_id     uuid        not null,
    key          text        not null unique,
    name         text        not null,
    content_type text        not null,
    size         bigint      not null check (size >= 0),
    sha256       text        check (sha256 is null or sha256 ~ '^[0-9a-f]{64}$'),
    status       text        not null check (status in ('pending', 'ready', 'deleted')),
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    deleted_at   timestamptz,
    check (status <> 'ready' or sha256 is not null)
);

-- Listing a user's files newest first (cursor pagination on created_at, id).
create index if not exists files_owner_ready_idx
    on xtyl_storage.files (owner_id, created_at desc, id desc)
    where status = 'ready';

-- Finding presigned uploads never completed (for a sweeper).
create index if not exists files_pending_idx
    on xtyl_storage.files (created_at)
    where status = 'pending';

-- Supabase grants new tables to its API roles by default; these rows are the service's alone.
revoke all on table xtyl_storage.files from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        revoke all on table xtyl_storage.files from anon;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        revoke all on table xtyl_storage.files from authenticated;
    end if;
end;
$$;

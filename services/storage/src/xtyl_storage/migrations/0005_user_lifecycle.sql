-- User lifecycle: the erasure ledger, per-user usage (quotas) and what an erasure needs.

-- xtyl_storage.erasures: when storage began and finished erasing a deleted user; a row also
-- refuses the user's writes (xtyl_common.erasure).
select xtyl_events.install_erasures('xtyl_storage');

-- What each user holds: the bytes and count of their READY files. Kept by the trigger below
-- in the transaction of every change of xtyl_storage.files, so it is never apart from the
-- files, whatever code writes them. The quota check locks the row (select ... for update), so
-- checks of one user's uploads run one after the other.
create table if not exists xtyl_storage.usage (
    owner_id uuid   primary key,
    bytes    bigint not null default 0 check (bytes >= 0),
    files    bigint not null default 0 check (files >= 0)
);

-- Room held by uploads in progress (id = the file's id): an upload through the service holds
-- its declared size (or what it read so far) before the bytes go to S3 and renews its lease
-- while they flow; a presigned upload holds its size until its URL expired, plus a grace.
-- The transaction that records the file deletes the row (its bytes now count in usage); a
-- failed upload deletes it; one a dead process left behind stops counting at expires_at (and
-- is purged by the next check of that user).
create table if not exists xtyl_storage.reservations (
    id         uuid        primary key,
    owner_id   uuid        not null,
    bytes      bigint      not null check (bytes >= 0),
    expires_at timestamptz not null
);
create index if not exists reservations_owner_idx on xtyl_storage.reservations (owner_id);

-- An erasure's running totals (they survive a worker killed half-way) and how long it must
-- wait for the presigned PUT URLs it handed out to expire before its last look at the bucket.
create table if not exists xtyl_storage.erasure_progress (
    user_id           uuid        primary key,
    files             bigint      not null default 0,
    objects           bigint      not null default 0,
    multipart_uploads bigint      not null default 0,
    wait_until        timestamptz
);

-- Erasing a user's rows in batches: every file row of an owner, whatever its status.
create index if not exists files_owner_idx on xtyl_storage.files (owner_id);
-- ... and the user's published outbox rows (every storage event names its owner).
create index if not exists outbox_owner_idx
    on xtyl_storage.outbox ((payload ->> 'owner_id'));

create or replace function xtyl_storage.count_usage() returns trigger
language plpgsql
set search_path = ''
as $$
begin
    if tg_op in ('UPDATE', 'DELETE') then
        if old.status = 'ready' then
            update xtyl_storage.usage
            set bytes = bytes - old.size, files = files - 1
            where owner_id = old.owner_id;
        end if;
    end if;
    if tg_op in ('INSERT', 'UPDATE') then
        if new.status = 'ready' then
            insert into xtyl_storage.usage as u (owner_id, bytes, files)
            values (new.owner_id, new.size, 1)
            on conflict (owner_id) do update
                set bytes = u.bytes + excluded.bytes, files = u.files + 1;
        end if;
    end if;
    return null;
end;
$$;

-- Backfill and trigger in one step: no write to files may fall between the two.
lock table xtyl_storage.files in share row exclusive mode;

insert into xtyl_storage.usage as u (owner_id, bytes, files)
select owner_id, sum(size), count(*) from xtyl_storage.files
where status = 'ready'
group by owner_id
on conflict (owner_id) do update set bytes = excluded.bytes, files = excluded.files;

drop trigger if exists files_count_usage_insert on xtyl_storage.files;
create trigger files_count_usage_insert
    after insert on xtyl_storage.files
    for each row when (new.status = 'ready')
    execute function xtyl_storage.count_usage();

drop trigger if exists files_count_usage_update on xtyl_storage.files;
create trigger files_count_usage_update
    after update of status, size on xtyl_storage.files
    for each row when (old.status is distinct from new.status or old.size is distinct from new.size)
    execute function xtyl_storage.count_usage();

drop trigger if exists files_count_usage_delete on xtyl_storage.files;
create trigger files_count_usage_delete
    after delete on xtyl_storage.files
    for each row when (old.status = 'ready')
    execute function xtyl_storage.count_usage();

revoke all on table xtyl_storage.usage, xtyl_storage.reservations,
    xtyl_storage.erasure_progress from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        revoke all on table xtyl_storage.usage, xtyl_storage.reservations,
            xtyl_storage.erasure_progress from anon;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        revoke all on table xtyl_storage.usage, xtyl_storage.reservations,
            xtyl_storage.erasure_progress from authenticated;
    end if;
end;
$$;

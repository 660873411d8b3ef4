-- Idempotency-Key of POST /v1/files, per owner. A row is held by one request (token) while
-- its upload runs (locked_until, renewed by the upload), then either completed with the file
-- in the transaction that records the file, or deleted when the upload failed (nothing stored,
-- so a retry runs again). A claim not renewed past locked_until was abandoned (its process
-- died) and may be taken over; a row past expires_at is treated as absent and purged.
create table if not exists xtyl_storage.idempotency_keys (
    owner_id     uuid        not null,
    key          text        not null check (length(key) between 1 and 255),
    -- sha256 of the file name as sent and the content type: same key, other name = reused
    fingerprint  text        not null check (fingerprint ~ '^[0-9a-f]{64}$'),
    token        uuid        not null,
    locked_until timestamptz,
    file_id      uuid        references xtyl_storage.files (id),
    size         bigint      check (size is null or size >= 0),
    sha256       text        check (sha256 is null or sha256 ~ '^[0-9a-f]{64}$'),
    created_at   timestamptz not null default now(),
    expires_at   timestamptz not null,
    primary key (owner_id, key),
    check ((file_id is null) = (size is null) and (file_id is null) = (sha256 is null)),
    check (file_id is not null or locked_until is not null)
);

-- Purging expired keys.
create index if not exists idempotency_keys_expires_idx
    on xtyl_storage.idempotency_keys (expires_at);

revoke all on table xtyl_storage.idempotency_keys from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        revoke all on table xtyl_storage.idempotency_keys from anon;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        revoke all on table xtyl_storage.idempotency_keys from authenticated;
    end if;
end;
$$;

-- A user's life in notify: the erasure ledger, email preferences, address changes, coalesced
-- document emails, one-click unsubscribe headers, and suppressions kept as address hashes.

-- xtyl_notify.erasures: when notify began and finished erasing a deleted user; a row also
-- refuses the user's writes (xtyl_common.erasure).
select xtyl_events.install_erasures('xtyl_notify');

-- Recipients follow user.updated. `changed_at` is the occurred_at of the event that set the
-- row: an older event arriving later (a user.created delivered after the user.updated that
-- followed it) does not overwrite a newer address. A user may have no address (phone users).
alter table xtyl_notify.recipients alter column email drop not null;
alter table xtyl_notify.recipients add column if not exists changed_at timestamptz;

-- Which kinds of non-transactional email the user wants (no row: every kind).
create table if not exists xtyl_notify.preferences (
    user_id         uuid        primary key,
    document_ready  boolean     not null default true,
    document_failed boolean     not null default true,
    updated_at      timestamptz not null default now()
);

-- The email log: the digest of document emails, and cancelled emails (the user was deleted
-- before they left). NOT VALID: the lists only grow, the table is not scanned under the lock.
alter table xtyl_notify.emails drop constraint if exists emails_kind_check;
alter table xtyl_notify.emails add constraint emails_kind_check
    check (kind in ('welcome', 'document_ready', 'document_failed', 'document_digest',
                    'auth_signup', 'auth_recovery', 'auth_magiclink', 'auth_email_change',
                    'auth_invite', 'auth_reauthentication')) not valid;
alter table xtyl_notify.emails drop constraint if exists emails_status_check;
alter table xtyl_notify.emails add constraint emails_status_check
    check (status in ('queued', 'retrying', 'sent', 'failed', 'suppressed', 'cancelled'))
    not valid;
-- The recipient's name and the extra mail headers (List-Unsubscribe) go with the row, so a
-- digest the worker sends again later needs nothing else. Constant defaults: no rewrite.
alter table xtyl_notify.emails add column if not exists to_name text;
alter table xtyl_notify.emails add column if not exists headers jsonb not null default '{}'::jsonb;
-- Retries of digests (no stream entry behind them): the first failure starts the retry
-- horizon, the next attempt is due then.
alter table xtyl_notify.emails add column if not exists first_failed_at timestamptz;
alter table xtyl_notify.emails add column if not exists next_attempt_at timestamptz;
create index if not exists emails_digest_open_idx
    on xtyl_notify.emails (next_attempt_at)
    where kind = 'document_digest' and status in ('queued', 'retrying');

-- Every document event notify accepted for a user, once per (user, document, kind): the
-- ledger that makes a redelivered event a no-op, and the items a digest lists. `pending`
-- waits for the user's next digest; `emailed` was told (by the email under `email_key`);
-- `dropped` was not (the kind was turned off, or the user had no address by then).
create table if not exists xtyl_notify.document_notices (
    user_id     uuid        not null,
    document_id uuid        not null,
    kind        text        not null check (kind in ('document_ready', 'document_failed')),
    title       text,
    reason      text,
    occurred_at timestamptz not null,
    status      text        not null default 'pending'
                            check (status in ('pending', 'emailed', 'dropped')),
    email_key   text,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    primary key (user_id, document_id, kind)
);
create index if not exists document_notices_pending_idx
    on xtyl_notify.document_notices (user_id, occurred_at)
    where status = 'pending';
create index if not exists document_notices_done_idx
    on xtyl_notify.document_notices (updated_at)
    where status <> 'pending';

-- One row per user who got document emails: when the last one was decided (the window runs
-- from there), and when the pending notices are due as one digest (null: none pending).
create table if not exists xtyl_notify.document_windows (
    user_id       uuid        primary key,
    last_email_at timestamptz,
    due_at        timestamptz
);
create index if not exists document_windows_due_idx
    on xtyl_notify.document_windows (due_at)
    where due_at is not null;

-- An erasure's running totals: they survive a worker killed half-way; the row goes with the
-- transaction that completes the erasure.
create table if not exists xtyl_notify.erasure_progress (
    user_id              uuid   primary key,
    emails_cancelled     bigint not null default 0,
    emails_anonymised    bigint not null default 0,
    suppressions_hashed  bigint not null default 0,
    recipients           bigint not null default 0,
    preferences          bigint not null default 0,
    document_notices     bigint not null default 0,
    -- addresses whose logs Brevo was asked to delete (DELETE /v3/smtp/log/<address>), and
    -- those it refused (a bad key, an address it calls invalid: logged as errors)
    brevo_logs_deleted   bigint not null default 0,
    brevo_logs_refused   bigint not null default 0
);

-- Suppressions hold `sha256:<hex>` (HMAC-SHA256 of the lower-cased address with
-- EMAIL_HASH_PEPPER) from now on, for every address; rows written before hold the lower-cased
-- address, and the send path checks both. An erasure turns the user's plaintext rows into
-- hashes, so a deleted user's bounced address stays suppressed if it signs up again.
comment on column xtyl_notify.suppressions.address is
    'sha256:<hex>: HMAC-SHA256(EMAIL_HASH_PEPPER, lower-cased address); older rows: the lower-cased address';

revoke all on table xtyl_notify.preferences, xtyl_notify.document_notices,
    xtyl_notify.document_windows, xtyl_notify.erasure_progress from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        revoke all on table xtyl_notify.preferences, xtyl_notify.document_notices,
            xtyl_notify.document_windows, xtyl_notify.erasure_progress from anon;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        revoke all on table xtyl_notify.preferences, xtyl_notify.document_notices,
            xtyl_notify.document_windows, xtyl_notify.erasure_progress from authenticated;
    end if;
end;
$$;

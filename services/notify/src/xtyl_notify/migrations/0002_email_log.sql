-- Who gets mail (filled from user.created: event-carried state, no reads of other schemas),
-- every email the service decided to send, and the addresses it must never write to again.

create table if not exists xtyl_notify.recipients (
    user_id    uuid        primary key,
    email      text        not null,
    full_name  text,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table if not exists xtyl_notify.emails (
    id               uuid        primary key,
    user_id          uuid,
    kind             text        not null
                                 check (kind in ('welcome', 'document_ready', 'document_failed')),
    to_address       text        not null,
    subject          text        not null,
    html_body        text        not null,
    text_body        text        not null,
    tags             text[]      not null default '{}',
    -- One email per cause: `user.created:<user id>`, `document.indexed:<document id>` ...
    dedupe_key       text        not null unique,
    status           text        not null default 'queued'
                                 check (status in ('queued', 'sent', 'failed', 'suppressed')),
    brevo_message_id text,
    attempts         integer     not null default 0 check (attempts >= 0),
    last_error       text,
    -- A worker sending it holds it until then (another copy of the event waits).
    locked_until     timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    sent_at          timestamptz,
    check (status <> 'sent' or brevo_message_id is not null)
);

-- A user's emails newest first (cursor pagination on created_at, id).
create index if not exists emails_user_idx
    on xtyl_notify.emails (user_id, created_at desc, id desc);

-- Emails that never left (for operators and a future resender).
create index if not exists emails_queued_idx
    on xtyl_notify.emails (updated_at)
    where status = 'queued';

create table if not exists xtyl_notify.suppressions (
    -- Lower-cased address.
    address    text        primary key,
    reason     text        not null,
    source     text        not null default 'brevo_webhook',
    created_at timestamptz not null default now()
);

-- Supabase grants new tables to its API roles by default; these rows are the service's alone.
revoke all on table xtyl_notify.recipients, xtyl_notify.emails, xtyl_notify.suppressions
    from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        revoke all on table xtyl_notify.recipients, xtyl_notify.emails, xtyl_notify.suppressions
            from anon;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        revoke all on table xtyl_notify.recipients, xtyl_notify.emails, xtyl_notify.suppressions
            from authenticated;
    end if;
end;
$$;

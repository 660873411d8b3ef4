-- Supabase Auth's emails (sign-up, recovery, magic link, email change, invite,
-- reauthentication) reach notify through the Send Email Hook and are logged like every other
-- email: one kind each.

alter table xtyl_notify.emails drop constraint if exists emails_kind_check;
-- NOT VALID: every existing row passes (the list only grows), so the table is not scanned
-- under the ALTER's exclusive lock; new and updated rows are checked as usual.
alter table xtyl_notify.emails add constraint emails_kind_check
    check (kind in ('welcome', 'document_ready', 'document_failed', 'auth_signup',
                    'auth_recovery', 'auth_magiclink', 'auth_email_change', 'auth_invite',
                    'auth_reauthentication')) not valid;

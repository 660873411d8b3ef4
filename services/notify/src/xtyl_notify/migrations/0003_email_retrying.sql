-- `retrying`: a send failed for a transient reason (Brevo or the database down, slow or rate
-- limiting) and the email waits for its next attempt, up to the worker's retry horizon; it is
-- not final (the next attempt can still send it).

alter table xtyl_notify.emails drop constraint if exists emails_status_check;
-- NOT VALID: every existing row passes (the new list only adds a value), so the table is not
-- scanned under the ALTER's exclusive lock; new and updated rows are checked as usual.
alter table xtyl_notify.emails add constraint emails_status_check
    check (status in ('queued', 'retrying', 'sent', 'failed', 'suppressed')) not valid;

-- Emails that never left (for operators and a future resender), retrying ones included.
drop index if exists xtyl_notify.emails_queued_idx;
create index if not exists emails_open_idx
    on xtyl_notify.emails (updated_at)
    where status in ('queued', 'retrying');

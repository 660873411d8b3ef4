-- A user's changes and deletion leave auth.users as events, like their sign-up:
--   * an email or name change writes user.updated (user_id, email, full_name), so notify
--     mails the new address;
--   * a deletion (Supabase's admin API deletes the row; a soft delete sets deleted_at) writes
--     user.deleted (user_id): every service erases what it holds for the user. The gateway
--     keeps the user's id and the time in xtyl_gateway.user_deletions (no other data), so
--     GET /v1/me/deletion can say when it was asked, and deletes the user's earlier events
--     from its outbox (they carry the address and name).
-- All in the transaction that changes auth.users, so an event is written if and only if the
-- change commits. Same form as 0005: security definer, empty search_path, qualified names.

create table if not exists xtyl_gateway.user_deletions (
    user_id    uuid        primary key,
    deleted_at timestamptz not null default pg_catalog.now()
);
revoke all on table xtyl_gateway.user_deletions from public;
do $$
begin
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'anon') then
        revoke all on table xtyl_gateway.user_deletions from anon;
    end if;
    if exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticated') then
        revoke all on table xtyl_gateway.user_deletions from authenticated;
    end if;
end;
$$;

create or replace function public.record_user_deletion(deleted_id uuid)
returns void
language plpgsql
security definer
set search_path = ''
as $$
declare
    inserted boolean;
begin
    insert into xtyl_gateway.user_deletions (user_id) values (deleted_id)
    on conflict (user_id) do nothing;
    get diagnostics inserted = row_count;
    if inserted then
        perform xtyl_events.add_event(
            'xtyl_gateway',
            'users',
            'user.deleted',
            pg_catalog.jsonb_build_object('user_id', deleted_id),
            'gateway'
        );
        -- the user's earlier events carry their address and name: gone with them (published
        -- or not: a deleted user is not announced; consumers take a late one for a no-op)
        delete from xtyl_gateway.outbox
        where type in ('user.created', 'user.updated')
          and payload ->> 'user_id' = deleted_id::text;
    end if;
end;
$$;

create or replace function public.handle_updated_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    name text := public.user_full_name(new.raw_user_meta_data);
    changed boolean;
begin
    if new.deleted_at is not null and old.deleted_at is null then
        -- Supabase's soft delete: the account is gone for good, as with a hard delete
        delete from public.users where id = new.id;
        perform public.record_user_deletion(new.id);
        return new;
    end if;
    if new.deleted_at is not null then
        return new;
    end if;
    update public.users
    set email = new.email,
        full_name = name,
        updated_at = pg_catalog.now()
    where id = new.id
      and (email is distinct from new.email or full_name is distinct from name);
    get diagnostics changed = row_count;
    if changed then
        perform xtyl_events.add_event(
            'xtyl_gateway',
            'users',
            'user.updated',
            pg_catalog.jsonb_build_object('user_id', new.id, 'email', new.email, 'full_name', name),
            'gateway'
        );
    end if;
    return new;
end;
$$;

create or replace function public.handle_deleted_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform public.record_user_deletion(old.id);
    return old;
end;
$$;

drop trigger if exists on_auth_user_updated on auth.users;
create trigger on_auth_user_updated
    after update of email, raw_user_meta_data, deleted_at on auth.users
    for each row execute function public.handle_updated_user();

drop trigger if exists on_auth_user_deleted on auth.users;
create trigger on_auth_user_deleted
    after delete on auth.users
    for each row execute function public.handle_deleted_user();

revoke execute on function public.record_user_deletion(uuid) from public;
revoke execute on function public.handle_updated_user() from public;
revoke execute on function public.handle_deleted_user() from public;

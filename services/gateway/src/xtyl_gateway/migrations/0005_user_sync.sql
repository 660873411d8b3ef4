-- Keep public.users in step with auth.users, in Supabase's documented form: security definer,
-- an empty search_path and schema-qualified names. A failing trigger blocks sign-ups, so these
-- never fail on ordinary data: a missing, null or non-object raw_user_meta_data gives an empty
-- full_name; a non-string full_name is kept as its JSON text; names are capped at 500
-- characters; a repeated insert of the same user is a no-op.
--
-- The insert also writes a user.created event to the gateway's outbox in the same transaction
-- (published to the users stream by the outbox relay).

select xtyl_events.install_outbox('xtyl_gateway');

create or replace function public.user_full_name(metadata jsonb)
returns text
language sql
immutable
set search_path = ''
as $$
    select pg_catalog.left(
        case
            when metadata is null or pg_catalog.jsonb_typeof(metadata) <> 'object' then ''
            when pg_catalog.jsonb_typeof(metadata -> 'full_name') = 'string'
                then metadata ->> 'full_name'
            when metadata -> 'full_name' is null
                 or pg_catalog.jsonb_typeof(metadata -> 'full_name') = 'null' then ''
            else (metadata -> 'full_name')::text
        end,
        500)
$$;

create or replace function public.handle_new_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    name text := public.user_full_name(new.raw_user_meta_data);
    inserted boolean;
begin
    insert into public.users (id, email, full_name, created_at, updated_at)
    values (new.id, new.email, name, pg_catalog.now(), pg_catalog.now())
    on conflict (id) do nothing;
    get diagnostics inserted = row_count;
    if inserted then
        perform xtyl_events.add_event(
            'xtyl_gateway',
            'users',
            'user.created',
            pg_catalog.jsonb_build_object('user_id', new.id, 'email', new.email, 'full_name', name),
            'gateway'
        );
    end if;
    return new;
end;
$$;

create or replace function public.handle_updated_user()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    update public.users
    set email = new.email,
        full_name = public.user_full_name(new.raw_user_meta_data),
        updated_at = pg_catalog.now()
    where id = new.id
      and (email is distinct from new.email
           or full_name is distinct from public.user_full_name(new.raw_user_meta_data));
    return new;
end;
$$;

drop trigger if exists on_auth_user_created on auth.users;
create trigger on_auth_user_created
    after insert on auth.users
    for each row execute function public.handle_new_user();

drop trigger if exists on_auth_user_updated on auth.users;
create trigger on_auth_user_updated
    after update of email, raw_user_meta_data on auth.users
    for each row execute function public.handle_updated_user();

-- Users who signed up before this trigger existed get their row now (no events for them).
insert into public.users (id, email, full_name, created_at, updated_at)
select u.id, u.email, public.user_full_name(u.raw_user_meta_data),
       coalesce(u.created_at, pg_catalog.now()), pg_catalog.now()
from auth.users u
on conflict (id) do nothing;

revoke execute on function public.handle_new_user() from public;
revoke execute on function public.handle_updated_user() from public;

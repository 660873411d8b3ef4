-- The original design's step, "ALTER TABLE public.users ALTER COLUMN id TYPE uuid USING
-- id::uuid", for a public.users that an older version created with a text id. Harmless on a
-- table that is already uuid: it only runs when the column is not uuid yet (an unconditional
-- ALTER ... USING would rewrite the whole table for nothing). Afterwards the columns and the
-- foreign key this backend relies on are made sure of.
do $$
begin
    if (select data_type from information_schema.columns
        where table_schema = 'public' and table_name = 'users' and column_name = 'id') <> 'uuid' then
        alter table public.users alter column id type uuid using id::uuid;
    end if;
    alter table public.users add column if not exists email text;
    alter table public.users add column if not exists full_name text not null default '';
    alter table public.users add column if not exists created_at timestamptz not null default now();
    alter table public.users add column if not exists updated_at timestamptz not null default now();
    if not exists (
        select 1 from pg_constraint
        where conrelid = 'public.users'::regclass and contype = 'f'
          and confrelid = 'auth.users'::regclass
    ) then
        alter table public.users
            add constraint users_id_fkey foreign key (id) references auth.users (id) on delete cascade;
    end if;
end
$$;

-- The application's copy of auth.users (the original design's public.users), filled by the
-- trigger in a later migration. Row level security is on with no policy: Supabase's Data API
-- (PostgREST) cannot read it; the backend connects as the table owner.
create table if not exists public.users (
    id uuid primary key references auth.users (id) on delete cascade,
    email text,
    full_name text not null default '',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

alter table public.users enable row level security;

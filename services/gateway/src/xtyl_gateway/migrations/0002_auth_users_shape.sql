-- On Supabase, auth.users exists and belongs to Supabase Auth. On any other Postgres (the local
-- stack, tests) create a minimal auth schema and an auth.users table shaped like Supabase's, only
-- when absent, so the same user-sync trigger runs everywhere. Never touches an existing table.
do $$
begin
    if to_regclass('auth.users') is null then
        create schema if not exists auth;
        create table auth.users (
            instance_id uuid,
            id uuid primary key,
            aud varchar(255),
            role varchar(255),
            email varchar(255),
            encrypted_password varchar(255),
            email_confirmed_at timestamptz,
            invited_at timestamptz,
            confirmation_token varchar(255),
            confirmation_sent_at timestamptz,
            recovery_token varchar(255),
            recovery_sent_at timestamptz,
            email_change_token_new varchar(255),
            email_change varchar(255),
            email_change_sent_at timestamptz,
            last_sign_in_at timestamptz,
            raw_app_meta_data jsonb,
            raw_user_meta_data jsonb,
            is_super_admin boolean,
            created_at timestamptz default now(),
            updated_at timestamptz default now(),
            phone text unique default null,
            phone_confirmed_at timestamptz,
            phone_change text default '',
            phone_change_token varchar(255) default '',
            phone_change_sent_at timestamptz,
            confirmed_at timestamptz generated always as (least(email_confirmed_at, phone_confirmed_at)) stored,
            email_change_token_current varchar(255) default '',
            email_change_confirm_status smallint default 0,
            banned_until timestamptz,
            reauthentication_token varchar(255) default '',
            reauthentication_sent_at timestamptz,
            is_sso_user boolean not null default false,
            deleted_at timestamptz,
            is_anonymous boolean not null default false
        );
        comment on table auth.users is
            'Local stand-in shaped like Supabase Auth''s auth.users (created by xtyl migrations).';
    end if;
end
$$;

-- The gateway's own schema (its outbox lives here; public.users comes with the users issue).
create schema if not exists xtyl_gateway;

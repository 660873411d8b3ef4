-- The storage service's own schema (not `storage`, which Supabase reserves).
create schema if not exists xtyl_storage;

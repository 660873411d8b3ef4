-- The notify service's own schema.
create schema if not exists xtyl_notify;

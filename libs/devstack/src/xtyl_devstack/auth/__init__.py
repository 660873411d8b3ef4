"""A local Supabase Auth for ``make up`` and tests (never deployed): GoTrue's HTTP API over the
embedded Postgres, configured by ``supabase/config.toml``. See :mod:`.server`."""

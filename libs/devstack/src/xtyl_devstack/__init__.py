"""xtyl_devstack: the embedded local stack (no Docker) and its pytest plugin.

Modules: ``ports`` (free ports), ``processes`` (children that cannot outlive us), ``pginstall``
(PostgreSQL binaries and the ``xtyl-pg`` account), ``postgres``, ``redis``, ``s3`` (one server
each), ``stack`` (the three together, :class:`~xtyl_devstack.stack.StackInfo`),
``pytest_plugin`` (fixtures), ``auth`` (the local Supabase Auth), ``issuer`` (tokens for
tests), ``brevo`` (Brevo's stand-in), ``services`` (the table ``up`` runs), ``up`` (``python -m
xtyl_devstack up|env``), ``process_tree`` (what a run left behind). Nothing is imported here,
so loading the plugin stays cheap.
"""

"""xtyl_storage."""

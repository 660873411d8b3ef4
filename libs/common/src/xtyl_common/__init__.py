"""xtyl_common."""

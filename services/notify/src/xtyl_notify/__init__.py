"""xtyl_notify."""

"""xtyl_gateway."""

"""xtyl_rag."""

"""The `mlx` command line."""

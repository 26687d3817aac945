"""The rules: registry, lifecycle, composition, discovery, metrics, configuration schemas.

Nothing here knows HTTP: errors are raised as `mlx_platform.errors` classes.
"""

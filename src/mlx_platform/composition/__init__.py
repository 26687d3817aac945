"""The composition engine: the rules over registered plugin metadata, pure (no database, no
HTTP, no runtime). ``core`` reads the registry and calls it.

- ``rules``: the metadata keys, :class:`~mlx_platform.composition.rules.Facts` (one plugin
  version, parsed), the pairwise rule and the API activation and registration use
  (``conflicts_with_active``, ``unmet_requirements``).
- ``resources``: the machine's capacity and whether a plugin's needs fit beside others.
"""

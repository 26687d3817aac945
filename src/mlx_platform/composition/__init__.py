"""The composition engine: the rules over registered plugin metadata, pure (no database, no
HTTP, no runtime). ``core`` reads the registry and calls it.

- ``facts``: the metadata keys and :class:`~mlx_platform.composition.facts.Facts` (one
  registered plugin version, parsed once), version and specifier parsing, whether a version
  can run here.
- ``rules``: the API over Facts that activation, registration and discovery use
  (``pair_conflicts``, ``conflicts_with_active``, ``unmet_requirements``, ``Conflict``); it
  re-exports ``facts``' names, so callers import ``rules`` only.
- ``resources``: the machine's capacity and whether a plugin's needs fit beside others.
"""

"""The composition engine: the rules over registered plugin metadata, pure (no database, no
HTTP, no runtime; import-linter holds it to that). ``core`` reads the registry and calls it:
``core.composition`` for POST /v1/plugins/validate-composition, ``core.registry``,
``core.lifecycle`` and ``core.discovery`` for registration, activation and discovery.

Which module to open for what:

- ``facts``: the metadata keys the rules read, :class:`~.facts.Facts` (one registered plugin
  version, parsed once), version and specifier parsing, whether a version can run here.
- ``rules``: the API over Facts that activation, registration and discovery use
  (``pair_conflicts``, ``conflicts_with_active``, ``unmet_requirements``, ``Conflict`` and
  its wording); it re-exports ``facts``' names, so those callers import ``rules`` only.
- ``resources``: the machine's capacity, and whether one plugin's needs fit beside others.

Validating a composition (``evaluate.evaluate`` is the entry point):

- ``evaluate``: the answer (conflicts, warnings, synergies, recommendations, resolved) and
  the decisions behind it, in its docstring.
- ``resolver``: version choice, how it works (docstring) and ``Solver``, which runs:
  ``model`` (Catalog, RegistryIndex, Constraint, Slot, Failure, Outcome, Limits),
  ``propagation`` (step 1: settle what the constraints force), ``search`` (step 2:
  independent groups, resolvelib, the complete backtracking search), ``explain`` (the
  smallest explanation of a failure, ``why_fixed``, ``chain``, ``violations``).
- ``conflicts``: conflicts in words: resolver failures, singleton types, resources.
- ``advice``: ``version_mismatch`` warnings, recommendations and synergies.

Imports point one way: facts <- rules; facts <- model <- propagation <- search <- explain
<- resolver <- evaluate (with conflicts and advice); nothing here imports ``core``.
"""

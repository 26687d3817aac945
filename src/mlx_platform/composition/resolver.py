"""Version choice for a composition: which registered version of each plugin, and which
registered plugins the set needs besides the ones asked for.

The problem is pip's: every plugin in the set must satisfy the composition's entries and the
``requires`` of every other member, and no member may match a ``conflicts_with`` entry of
another one; only versions that can run here are candidates (:attr:`Facts.incompatible`).
It is solved in two steps, both exact (nothing is guessed):

1. **Propagation.** A plugin whose candidates the constraints narrow to one version has no
   choice left: it is fixed, its ``requires`` pull the named plugins into the set and narrow
   their candidates, its ``conflicts_with`` narrow the candidates of the peers, and the
   versions of other plugins whose own ``requires``/``conflicts_with`` it violates are
   excluded. Repeated until nothing changes. A plugin left without candidates is a failure,
   and every such failure is reported (not only the first one). Compositions that pin
   versions (or whose plugins have one registered version) are settled here, in time linear
   in the number of constraints.
2. **Search.** What is left (plugins with several possible versions, and the plugins their
   versions may pull in) is split into independent groups (no constraint between two
   groups) and each group is handed to ``resolvelib``, the backtracking resolver pip uses,
   through ``search._Provider``. Newest versions are tried first. A plugin that only appears
   in a ``conflicts_with`` is never pulled in (the provider gives it an "absent" candidate).

   resolvelib scans all its criteria every round, so one group of n plugins costs O(n^2)
   (about 1.5 s for n = 1,000). Groups of ``greedy_from`` (64) plugins or more first try a
   newest-first pick (each plugin at the newest version the others' current versions allow,
   until nothing moves); it is kept only if it meets every constraint, which makes it an
   answer resolvelib could give as well. Otherwise resolvelib searches.

   resolvelib's answer is checked too. With ``conflicts_with`` (requirements a pinned
   version can fail later) it can replace pins in circles until its round limit, and it can
   drop a pin's requirements when a conflict briefly rules the pin out, then keep the pin.
   So a success is verified against every constraint, and when the check fails, or when
   resolvelib reports ``ResolutionImpossible`` or ``ResolutionTooDeep``, a complete
   backtracking search over the group (bounded by ``search_budget`` tries) decides. The
   tests compare the outcome with brute force on thousands of random registries.

When no set exists, the answer is the *smallest explanation*: for the plugin that ran out of
candidates, the constraints on it (from propagation, and from ``ResolutionImpossible.causes``
after a search), de-duplicated (the constraints one plugin's versions impose count once, as
the union of what its versions allow), then reduced by deletion: a constraint is dropped when
the rest still leaves no candidate. What remains is minimal: remove any one of its
constraints and some registered version fits. When no single plugin's constraints explain
the failure (a chain through several plugins' versions), the same deletion runs over every
constraint of the group with the complete search as the judge. Each constraint comes with
the chain that brought its author into the set (``chain``), and a version that propagation
settled comes with the constraints that settled it (``why_fixed``).

The code: ``model`` (catalog, constraints, slots, outcome), ``propagation`` (step 1),
``search`` (step 2), ``explain`` (the smallest explanation, ``why_fixed``, ``chain``,
``violations``); :class:`Solver` here runs them in that order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlx_platform.composition.explain import dedupe, explain, failure_of
from mlx_platform.composition.facts import Facts, Spec
from mlx_platform.composition.model import Catalog, Constraint, Limits, Outcome, Slot
from mlx_platform.composition.propagation import Propagation
from mlx_platform.composition.search import exhaustive, search


class Solver:
    """One solve over a catalog: ``Solver(catalog).solve(specs)``."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        max_rounds_per_plugin: int = 60,
        search_budget: int = 20000,
        greedy_from: int = 64,
        core_limit: int = 160,
    ) -> None:
        self.catalog = catalog
        self.limits = Limits(max_rounds_per_plugin, search_budget, greedy_from, core_limit)
        self.state = Propagation(catalog)

    def solve(self, specs: Sequence[Spec]) -> Outcome:
        state = self.state
        for spec in specs:
            slot = state.slot(spec.key, spec.name)
            slot.requested = True
            state.constrain(slot, Constraint("root", slot.key, None, spec))
        state.run()
        outcome = Outcome(state.slots, {}, [], {})
        if state.failed:
            for slot in dict.fromkeys(state.failed):
                outcome.failures.append(failure_of(slot, [[c] for c in dedupe(slot.constraints)]))
            for slot in state.slots.values():
                if not slot.present:
                    continue
                pick = slot.fixed or (slot.domain[0] if slot.domain else None)
                if pick is not None:
                    outcome.fallback[slot.key] = pick
            return outcome
        for key, f in state.fixed.items():
            outcome.chosen[key] = f
        for unsolved in search(state, outcome, self.limits):
            outcome.failures.append(explain(state.slots, unsolved, self.limits))
        if outcome.failures:
            outcome.fallback.update(outcome.chosen)
            outcome.chosen = {}
            return outcome
        order = {k: i for i, k in enumerate(state.slots)}
        outcome.chosen = dict(sorted(outcome.chosen.items(), key=lambda kv: order[kv[0]]))
        return outcome

    def _exhaustive(
        self, members: list[Slot], ignore: frozenset[Any] = frozenset()
    ) -> dict[str, Facts] | str | None:
        """The complete search over one group with this solver's budget (the tests judge
        explanations with it)."""
        return exhaustive(members, self.limits.search_budget, ignore)

"""Step 1 of a solve, propagation: a plugin whose candidates the constraints narrow to one
version is fixed, and what its metadata says narrows the others in turn, until nothing
changes (see ``composition.resolver`` for the whole algorithm).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from mlx_platform.composition.facts import Facts, Spec
from mlx_platform.composition.model import Catalog, Constraint, Slot


class Propagation:
    """The state of one solve: a slot per plugin met so far, the fixed versions, the
    constraints waiting for a plugin not met yet, the slots to settle and those that failed.

    ``slot()`` brings a plugin in, ``constrain()`` adds a reason, ``run()`` settles the queue:
    a slot in the set left without candidates fails, one left with one version is fixed.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.slots: dict[str, Slot] = {}
        self.fixed: dict[str, Facts] = {}
        self.pending: dict[str, list[Constraint]] = {}
        self.queue: deque[Slot] = deque()
        self.failed: list[Slot] = []

    def slot(self, key: str, name: str) -> Slot:
        """The slot of plugin `key`, made on first use: its runnable versions, minus what the
        constraints waiting for it and the versions fixed so far rule out."""
        slot = self.slots.get(key)
        if slot is not None:
            return slot
        rows = self.catalog.versions(key)
        base = [r for r in rows if r.incompatible is None]
        slot = Slot(key, rows[0].name if rows else name, rows, base, list(base))
        self.slots[key] = slot
        for c in self.pending.pop(key, ()):
            self.constrain(slot, c)
        if self.fixed:
            self._exclude(slot, self._violations_against_fixed(base))
        return slot

    def _violations_against_fixed(
        self, candidates: Iterable[Facts]
    ) -> dict[tuple[int, str], list[tuple[Facts, Facts, Spec]]]:
        """Versions whose own requires/conflicts_with a fixed plugin violates, by culprit."""
        found: dict[tuple[int, str], list[tuple[Facts, Facts, Spec]]] = {}
        fixed = self.fixed
        for c in candidates:
            for spec in c.requires:
                f = fixed.get(spec.key)
                if f is not None and spec.key != c.key and not spec.allows(f.version):
                    found.setdefault((id(f), "requires"), []).append((c, f, spec))
            for spec in c.conflicts_with:
                f = fixed.get(spec.key)
                if f is not None and spec.key != c.key and spec.allows(f.version):
                    found.setdefault((id(f), "conflicts"), []).append((c, f, spec))
        return found

    def _exclude(
        self, slot: Slot, found: Mapping[tuple[int, str], list[tuple[Facts, Facts, Spec]]]
    ) -> None:
        for (_fid, kind), items in found.items():
            culprit = items[0][1]
            versions = ", ".join(dict.fromkeys(c.version for c, _, _ in items))
            specs = ", ".join(dict.fromkeys(f"'{s.raw}'" for _, _, s in items))
            if kind == "requires":
                note = (
                    f"'{slot.name}' {versions} require{'s' if len(items) == 1 else ''} {specs}, "
                    f"which {culprit.title()} does not satisfy"
                )
                blame = "version_conflict"
            else:
                note = (
                    f"'{slot.name}' {versions} declare{'s' if len(items) == 1 else ''} "
                    f"conflicts_with {specs}, which matches {culprit.title()}"
                )
                blame = "explicit_conflict"
            self.constrain(
                slot,
                Constraint(
                    "excludes",
                    slot.key,
                    culprit,
                    excluded=frozenset(c.id for c, _, _ in items),
                    blame=blame,
                    note=note,
                ),
            )

    def constrain(self, slot: Slot, c: Constraint) -> None:
        """Add `c` to `slot`: narrow its candidates (or fail a fixed slot `c` rules out), and
        queue it when that changed something."""
        slot.constraints.append(c)
        newly_present = c.positive and not slot.present
        if c.positive:
            slot.present = True
            if slot.via is None:
                slot.via = c
        if slot.failed:
            return
        if slot.fixed is not None:
            if not c.allows(slot.fixed):
                slot.failed = True
                self.failed.append(slot)
            return
        before = len(slot.domain)
        slot.domain = [d for d in slot.domain if c.allows(d)]
        if newly_present or len(slot.domain) != before:
            self.queue.append(slot)

    def _settle(self, slot: Slot) -> None:
        if slot.failed or slot.fixed is not None or not slot.present:
            return
        if not slot.domain:
            slot.failed = True
            self.failed.append(slot)
        elif len(slot.domain) == 1:
            self._fix(slot, slot.domain[0])

    def _fix(self, slot: Slot, f: Facts) -> None:
        slot.fixed = f
        self.fixed[slot.key] = f
        for spec in f.requires:
            if spec.key != slot.key:
                target = self.slot(spec.key, spec.name)
                self.constrain(target, Constraint("requires", target.key, f, spec))
        for spec in f.conflicts_with:
            if spec.key == slot.key:
                continue
            c = Constraint("conflicts", spec.key, f, spec)
            other = self.slots.get(spec.key)
            if other is None:
                self.pending.setdefault(spec.key, []).append(c)
            else:
                self.constrain(other, c)
        # Versions of undecided plugins whose own metadata rules out f.
        touched: dict[str, list[Facts]] = {}
        for cand, _kind, _spec in self.catalog.mentions.get(slot.key, ()):
            other = self.slots.get(cand.key)
            if other is None or other is slot or other.fixed is not None or other.failed:
                continue
            touched.setdefault(cand.key, []).append(cand)
        for key, cands in touched.items():
            other = self.slots[key]
            live = [c for c in dict.fromkeys(cands) if c in other.domain]
            if live:
                self._exclude(other, self._violations_against_fixed(live))

    def run(self) -> None:
        """Settle queued slots until the queue is empty."""
        while self.queue:
            self._settle(self.queue.popleft())

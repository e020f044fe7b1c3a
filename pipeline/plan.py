"""Plan, then act: everything a run will do, found out before it writes a byte or starts Ray.

``make_plan`` only reads: it validates the stack (every model file resolved on this machine, hub
names included), checks the output (reachable, a folder, the same stack, dtype and granularity,
no live run holding it), lists the input, splits it into units and lists the ledger. ``decide``
(a pure function) then says, per unit, whether it is added, replaced (and why), skipped or
removed, and applies the guards. Every mistake a user can make surfaces here as a ``UserError``:
one line, exit 2, nothing changed.

``pipeline.run`` acts on the plan; after it takes the output's lease it lists the ledger again
and calls ``decide`` once more, so a run that committed in between is never redone.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from actors.stack.registry import ModelNotFoundError
from pipeline.config import JobConfig
from pipeline.errors import UserError, one_line
from pipeline.lease import LeaseHeldError, read_lease
from pipeline.layout import DATA_DIR, FAILED_DIR, LEDGER_LAYOUT
from pipeline.ledger import Committed, Ledger, Manifest, check_compatible
from pipeline.sources import discover_shards
from pipeline.storage import Folder, check_output_folder, is_local_url, storage_errors
from pipeline.units import Unit, plan_units, row_settings, settings_hash

VERSION = "0.2.0"


class StackError(UserError):
    """A stack entry whose model files cannot be found."""


class OverwriteRefused(UserError):
    """``--overwrite`` on an output with committed units, not confirmed."""


class PruneGuardError(UserError):
    """A refresh would remove more of the committed units than ``max_prune_ratio`` allows."""


@dataclass(frozen=True)
class RunOptions:
    """What the command line adds to the config."""

    overwrite: bool = False
    prune: bool = True
    max_reject_ratio: float | None = None    # None: the config's
    max_prune_ratio: float | None = None     # None: the config's


@dataclass(frozen=True)
class UnitAction:
    """One unit to embed, why, and the record it replaces (if any)."""

    unit: Unit
    reason: str
    previous: Committed | None = None


@dataclass(frozen=True)
class Removal:
    """A committed unit whose shard left the input: its rows and record are removed."""

    entry: Committed
    reason: str


@dataclass
class Decision:
    """What happens to each unit, given the units planned and the ledger's listing."""

    add: list[UnitAction] = field(default_factory=list)
    replace: list[UnitAction] = field(default_factory=list)
    skip: list[Unit] = field(default_factory=list)
    remove: list[Removal] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)     # data/ or _failed/ folders of units neither planned nor committed

    @property
    def pending(self) -> list[UnitAction]:
        return self.add + self.replace


@dataclass
class Plan:
    """Everything a run will do; built without side effects."""

    config: JobConfig
    options: RunOptions
    output: Folder
    manifest: Manifest                 # what this run binds the output to
    existing: Manifest | None          # what the output holds now
    settings: str                      # the row settings' hash, second half of every unit's identity
    units: list[Unit]
    committed: dict[str, Committed]
    decision: Decision
    shards_skipped: list[str] = field(default_factory=list)

    @property
    def max_reject_ratio(self) -> float:
        ratio = self.options.max_reject_ratio
        return self.config.max_reject_ratio if ratio is None else ratio

    @property
    def max_prune_ratio(self) -> float:
        ratio = self.options.max_prune_ratio
        return self.config.max_prune_ratio if ratio is None else ratio

    def lines(self) -> list[str]:
        """A short account of the plan, printed before the run acts."""
        d = self.decision
        lines = [f"plan: {len(self.units)} units: {len(d.add)} to add, {len(d.replace)} to replace, "
                 f"{len(d.skip)} already committed, {len(d.remove)} to remove"]
        if self.options.overwrite and self.committed:
            lines.append(f"  --overwrite: deleting the output's {len(self.committed)} committed units first")
        reasons: dict[str, int] = {}
        for action in d.replace:
            reasons[action.reason] = reasons.get(action.reason, 0) + 1
        lines += [f"  replace {count}: {reason}" for reason, count in sorted(reasons.items())]
        return lines


def normalized(config: JobConfig) -> JobConfig:
    """A copy with local paths made absolute: Ray workers may not share the driver's working directory."""
    config = config.model_copy(deep=True)
    for section in (config.input, config.output):
        if is_local_url(section.path):
            section.path = os.path.abspath(os.path.expanduser(section.path))
    return config


def stack_identity(config: JobConfig) -> str:
    """The stack fingerprint, every model file resolved here; a missing one is a ``StackError``."""
    from actors.stack.fingerprint import stack_fingerprint

    try:
        return stack_fingerprint(config.specs, config.token_pooling)
    except ModelNotFoundError as error:
        index = next((i for i, spec in enumerate(config.specs) if _fails(spec)), 0)
        raise StackError(f"stack.{index}.{config.specs[index].kind}: {one_line(error, 1500)}") from None


def _fails(spec: object) -> bool:
    try:
        spec.files()  # type: ignore[attr-defined]
    except ModelNotFoundError:
        return True
    return False


def make_plan(config: JobConfig, options: RunOptions = RunOptions()) -> Plan:
    """Read everything a run needs and decide what it will do; raises ``UserError`` for any mistake."""
    config = normalized(config)
    fingerprint = stack_identity(config)
    settings = row_settings(config, fingerprint)
    settings_id = settings_hash(settings)

    output = check_output_folder(config.output.path, config.storage)
    ledger = Ledger(output)
    with storage_errors(config.output.path, "output.path", config.storage):
        holder, _ = read_lease(output)
        if holder is not None and holder.live(config.lease_timeout_s):
            raise LeaseHeldError(f"output {output.url!r} is being written by {holder.describe()}; wait for it to "
                                 f"finish, or if it died, run again after its lease expires (lease_timeout_s)")
        existing = ledger.manifest()
    manifest = Manifest(stack_fingerprint=fingerprint, stack=config.stack_config(), pooling=config.token_pooling,
                        dtype=config.output.dtype, granularity=config.output.granularity, version=VERSION,
                        layout=LEDGER_LAYOUT)
    if existing is not None:
        manifest.dim, manifest.id_type = existing.dim, existing.id_type
        manifest.settings = dict(existing.settings)
    manifest.settings[settings_id] = settings
    manifest.config = config.model_dump(mode="json")
    if not options.overwrite:
        check_compatible(existing, manifest, output.url)
    if options.overwrite:
        manifest.dim = manifest.id_type = None
        manifest.settings = {settings_id: settings}

    with storage_errors(config.input.path, "input.path", config.storage):
        shards, skipped = discover_shards(config.input, config.storage)
        units = plan_units(shards, config.input, config.storage)
    with storage_errors(config.output.path, "output.path", config.storage):
        committed = ledger.committed()
        published = set(output.listdir(DATA_DIR)) | set(output.listdir(FAILED_DIR))
    plan = Plan(config, options, output, manifest, existing, settings_id, units, committed, Decision(), skipped)
    plan.decision = decide(plan, committed, published)
    return plan


def decide(plan: Plan, committed: dict[str, Committed], published: set[str] | None = None) -> Decision:
    """Per unit: add, replace (with the reason), skip or remove; then the prune guard. Pure."""
    decision = Decision()
    if plan.options.overwrite:
        decision.add = [UnitAction(unit, "new (--overwrite)") for unit in plan.units]
        return decision
    old_settings = plan.existing.settings if plan.existing else {}
    for unit in plan.units:
        entry = committed.get(unit.key)
        state = unit_state(unit, entry, plan.settings)
        if state == "new":
            decision.add.append(UnitAction(unit, "new"))
        elif state == "done":
            decision.skip.append(unit)
        elif state == "shard changed":
            decision.replace.append(UnitAction(unit, "its shard changed", entry))
        else:
            reason = _settings_change(old_settings.get(entry.settings), plan.manifest.settings[plan.settings])
            decision.replace.append(UnitAction(unit, reason, entry))
    planned = {unit.key for unit in plan.units}
    if plan.options.prune:
        decision.remove = [Removal(entry, "its shard is no longer in the input")
                           for key, entry in sorted(committed.items()) if key not in planned]
        decision.orphans = sorted((published or set()) - planned - set(committed))
    _guard_prune(plan, decision, committed)
    return decision


def unit_state(unit: Unit, entry: Committed | None, settings: str) -> str:
    """``new``, ``done``, ``shard changed`` or ``settings changed``: a committed unit is done only
    if its shard and every setting that shapes its rows are unchanged."""
    if entry is None:
        return "new"
    if entry.source != unit.source_fingerprint:
        return "shard changed"
    return "done" if entry.settings == settings else "settings changed"


def _settings_change(before: dict | None, after: dict) -> str:
    if before is None:
        return "the settings that shape its rows changed"
    changed = [f"{key} {before.get(key)!r} → {after.get(key)!r}" for key in sorted(after) if before.get(key) != after.get(key)]
    return "settings changed: " + ", ".join(changed) if changed else "the settings that shape its rows changed"


def _guard_prune(plan: Plan, decision: Decision, committed: dict[str, Committed]) -> None:
    if not committed or not decision.remove:
        return
    share = len(decision.remove) / len(committed)
    if share > plan.max_prune_ratio:
        raise PruneGuardError(
            f"this run would remove {len(decision.remove)} of the output's {len(committed)} committed units "
            f"({share:.0%} > max_prune_ratio {plan.max_prune_ratio:.0%}) because their shards are not in "
            f"input.path {plan.config.input.path!r} ({len(plan.units)} units there now); nothing was changed. "
            f"Check input.path; to prune them anyway pass --max-prune-ratio 1, or --no-prune to keep them"
        )

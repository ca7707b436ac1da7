"""Plan: reconcile a pair's manifests, then the safety checks — a plan, or SafetyError before anything changes."""

from __future__ import annotations

from typing import Iterable, Mapping

from peersync.core.mergefile import MergeRules
from peersync.core.modes import with_modes
from peersync.core.reconcile import reconcile
from peersync.core.safety import mass_delete_violations
from peersync.core.types import (
    Action,
    Conflict,
    Entry,
    Mode,
    Plan,
    Policy,
    Report,
    Side,
)
from peersync.errors import SafetyError


def plan_sync(ancestor: Mapping[str, Entry], local: Mapping[str, Entry], remote: Mapping[str, Entry], *,
              rules: MergeRules, roots: Iterable[str], mass_delete_ratio: float, peer_name: str,
              policy: Policy, mode: Mode, offset_ns: int, local_id: str, remote_id: str, force: bool,
              paths=None, local_dead=None, remote_dead=None, modes: bool = False) -> Plan:
    """reconcile (and, with `modes`, the merge of permission bits: both sides keep them), then the
    mass-delete guard: the plan, or SafetyError (nothing changed yet)."""
    plan = reconcile(ancestor, local, remote, policy=policy, mode=mode, is_log=rules.is_log,
                     mergeable=rules.mergeable, offset_ns=offset_ns, local_id=local_id, remote_id=remote_id,
                     paths=paths, local_dead=local_dead, remote_dead=remote_dead)
    if modes:
        plan = with_modes(plan, ancestor, local, remote, set(ancestor) | set(local) | set(remote) if paths is None else paths)
    violations = mass_delete_violations(plan.changes, len(local), len(remote), ratio=mass_delete_ratio,
                                        roots=tuple(roots), local_paths=local, remote_paths=remote)
    if violations and not force:
        raise SafetyError(f"stopped: {'; '.join(violations).replace('the peer', peer_name)} — nothing was changed",
                          "If that is intended, run again with --force (deleted files go to the trash).")
    return plan


def vanished(held_before: int, remote: Mapping[str, Entry], peer_name: str, where: str) -> SafetyError | None:
    """A replica that holds none of the `held_before` files it held (by the pair's ancestor or its
    own records) — a wrong path, an unmounted folder, an expired share — looks exactly like
    "everything was deleted": refuse, unless forced."""
    if not held_before or remote:
        return None
    return SafetyError(f"stopped: {peer_name} holds none of the {held_before} files synced with it before "
                       f"(is {where} the right folder?) — nothing was changed",
                       "If it was emptied on purpose, run again with --force (deleted files go to the trash).")


def describe(plan: Plan, report: Report, peer_name: str) -> None:
    """Fill a dry-run report with what the plan would do."""
    for c in plan.changes:
        if c.action is Action.COPY:
            (report.pushed if c.target is Side.REMOTE else report.pulled).append(c.path)
            if c.quarantine:
                report.conflicts.append(Conflict(
                    c.path, kept="local" if c.target is Side.REMOTE else "remote", reason=c.reason,
                    winner="this machine" if c.target is Side.REMOTE else peer_name, side=c.target.value))
        elif c.action is Action.DELETE:
            (report.deleted_remote if c.target is Side.REMOTE else report.deleted_local).append(c.path)
        elif c.action is Action.MERGE:
            report.merged.append(c.path)
        elif c.action is Action.CONFLICT:
            report.conflicts.append(Conflict(c.path, kept="both", reason=c.reason))

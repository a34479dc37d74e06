"""What `mixtral eval` measured of a stored model on this machine, kept beside the store's manifest so that
`mixtral pull --list` and `--dry-run` can show a quantization's loss: measured here, never estimated.

It is a cache: a file that cannot be read is as good as none (the next eval writes it again).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

from ..base.atomic import atomic_path, locked
from ..quality.run import EvalReport
from .store import ModelStore

LOSS_FILE = "measured-loss.json"


@dataclass(frozen=True)
class MeasuredLoss:
    """The headline numbers of one eval of a stored model against a reference."""

    reference: str  # the reference's store name, else its file's name
    kld_mean: float
    kld_p99: float
    same_top: float  # a fraction
    ppl_ratio: float
    routing_same_set: float | None  # over every layer; None where routing was not compared
    positions: int
    n_ctx: int
    text: str
    measured: str  # when, in UTC


def _loss_file(store: ModelStore) -> Path:
    return store.home / LOSS_FILE


def measured_losses(store: ModelStore) -> dict[str, MeasuredLoss]:
    """Each stored model's last measured loss, by its name in the store."""
    try:
        data = json.loads(_loss_file(store).read_text(encoding="utf-8"))
        names = {f.name for f in fields(MeasuredLoss)}
        return {name: MeasuredLoss(**record) for name, record in data.items() if set(record) == names}
    except (OSError, ValueError, TypeError, AttributeError, RecursionError):
        return {}


def record_loss(store: ModelStore, report: EvalReport) -> str | None:
    """Keep ``report``'s numbers under the model's store name; returns that name, or None (and keeps nothing)
    where the model is not in the store, nothing was measured, the run was cut short or adapters were applied
    (then the numbers are not the quantization's)."""
    entry, losses = store.entry_at(report.model), report.losses
    if entry is None or losses is None or report.interrupted or report.model_loras or report.reference_loras:
        return None
    reference = store.entry_at(report.reference)
    record = MeasuredLoss(
        reference=reference.name if reference else report.reference.name,
        kld_mean=losses.kld.value,
        kld_p99=losses.kld_p99,
        same_top=losses.same_top.value,
        ppl_ratio=losses.ppl_ratio.value,
        routing_same_set=report.routing.same_set if report.routing else None,
        positions=losses.positions,
        n_ctx=report.n_ctx,
        text=report.text,
        measured=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    target = _loss_file(store)
    with locked(target):
        records = {name: asdict(loss) for name, loss in measured_losses(store).items()}
        records[entry.name] = asdict(record)
        with atomic_path(target) as partial:
            partial.write_text(json.dumps(records, indent=2) + "\n", encoding="utf-8")
    return entry.name

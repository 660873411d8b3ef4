"""The metric catalogue of ``docs/metrics.md``, read as data: the one list of the metrics every
process serves (name, type, labels). The monitoring files are checked against it, and so is a
real scrape of the running stack."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: docs/metrics.md of this checkout (the devstack is never installed elsewhere)
CATALOGUE = Path(__file__).resolve().parents[4] / "docs" / "metrics.md"

_ROW = re.compile(r"^\|\s*`(xtyl_[a-z0-9_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|([^|]*)\|")


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str
    labels: frozenset[str]


def catalogue(path: Path = CATALOGUE) -> dict[str, Metric]:
    """The metrics of the catalogue's tables: name -> type and labels."""
    metrics: dict[str, Metric] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("| `xtyl_"):
            continue
        row = _ROW.match(line)
        if row is None:
            raise ValueError(f"{path.name}: not a `| `name` | type | labels |` row: {line}")
        name, kind, labels = row.groups()
        if name in metrics:
            raise ValueError(f"{path.name} lists {name} twice")
        metrics[name] = Metric(name, kind, frozenset(re.findall(r"`([a-z_]+)`", labels)))
    return metrics

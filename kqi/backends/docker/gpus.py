"""Reading nvidia-smi's CSV: the GPUs a node has, and which of them run compute processes."""
from __future__ import annotations

import csv
import io
import re

from kqi.backends.base import GpuInfo, NodeError

QUERY_GPUS = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total", "--format=csv,noheader,nounits"]
QUERY_APPS = ["nvidia-smi", "--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader"]
MAX_GPUS = 64


def _rows(text: str) -> list[list[str]]:
    return [[cell.strip() for cell in row] for row in csv.reader(io.StringIO(text)) if any(c.strip() for c in row)]


def parse_gpus(text: str) -> list[GpuInfo]:
    gpus = []
    for row in _rows(text):
        if len(row) != 4 or not row[0].isdigit():
            raise NodeError(f"unexpected nvidia-smi output line: {','.join(row)[:200]!r}", infrastructure=False)
        memory = row[3].split()[0] if row[3] else "0"
        gpus.append(GpuInfo(index=int(row[0]), uuid=row[1][:128], model=row[2][:128],
                            memory_mib=int(memory) if memory.isdigit() else 0))
    if len(gpus) > MAX_GPUS or len({g.index for g in gpus}) != len(gpus):
        raise NodeError("nvidia-smi listed duplicate GPU indices or too many GPUs", infrastructure=False)
    return sorted(gpus, key=lambda g: g.index)


def parse_apps(text: str) -> set[str]:
    """UUIDs of GPUs that compute processes run on."""
    return {row[0] for row in _rows(text) if row and row[0]}


def model_label(model: str) -> str:
    """A GPU model as a partition label: "NVIDIA A100-SXM4-80GB" -> "nvidia-a100-sxm4-80gb"."""
    return re.sub(r"[^a-z0-9.]+", "-", model.lower()).strip("-")[:64]

"""One value for what a job asks for and a node has: CPU in milli-cores, memory in MiB, GPUs in
milli-GPUs (250: a quarter share of one GPU; 2000: two whole GPUs). Integers throughout, so sums
never drift; the API's units (cores, GB, GPUs as numbers) are converted only at the edges, by
`from_api` on the way in and `as_api` on the way out. kqi's "GB" is 1024 MiB (a GiB), as the
engines count memory.

Imported by the pure scheduler core as much as by the domain: it imports nothing of kqi.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

MILLI = 1000  # milli-cores in a core, milli-GPUs in a GPU
MIB_PER_GB = 1024
# The API's name of each amount, the column (and field) that stores it, and the scale between them.
API_UNITS = (("cpu", "cpu_milli", MILLI), ("memory_gb", "memory_mib", MIB_PER_GB), ("gpu", "gpu_milli", MILLI))
GB_DIGITS = 3  # memory in GB is shown rounded to this many decimals (a MiB is about 0.001 GB)


@dataclass(frozen=True, slots=True)
class Resources:
    cpu_milli: int = 0
    memory_mib: int = 0
    gpu_milli: int = 0

    @classmethod
    def from_api(cls, cpu: float, memory_gb: float, gpu: float = 0) -> Resources:
        """From the API's cores, GB and GPUs. CPU and GPUs round to the nearest milli (0.1 -> 100,
        whatever the float's last bits), any CPU above 0 being at least 1 milli; memory rounds up
        to whole MiB (a job gets at least what it asked for). Multiplying by 1024 is exact in
        binary floating point, so 1.5 GB is 1536 MiB and never 1537."""
        cpu_milli = round(cpu * MILLI)
        return cls(cpu_milli=max(1, cpu_milli) if cpu > 0 else cpu_milli, memory_mib=math.ceil(memory_gb * MIB_PER_GB),
                   gpu_milli=round(gpu * MILLI))

    @classmethod
    def of(cls, row: object) -> Resources:
        """The amounts of anything with cpu_milli, memory_mib and gpu_milli attributes (a job row)."""
        return cls(row.cpu_milli, row.memory_mib, getattr(row, "gpu_milli", 0))

    @property
    def cores(self) -> float:
        return self.cpu_milli / MILLI

    @property
    def memory_gb(self) -> float:
        return self.memory_mib / MIB_PER_GB

    @property
    def gpus(self) -> float:
        return self.gpu_milli / MILLI

    def as_api(self, gb_digits: int | None = GB_DIGITS) -> dict[str, float]:
        """{"cpu": cores, "memory_gb": GB (to `gb_digits` decimals), "gpu": GPUs}, as the API shows
        them. `gb_digits=None`: memory unrounded, so that `from_api` of these gives this value back
        (a rerun's request)."""
        return {"cpu": self.cores, "memory_gb": gb(self.memory_mib, gb_digits), "gpu": self.gpus}

    def as_fields(self) -> dict[str, int]:
        """{"cpu_milli", "memory_mib", "gpu_milli"}: keyword arguments for rows and dataclasses."""
        return {"cpu_milli": self.cpu_milli, "memory_mib": self.memory_mib, "gpu_milli": self.gpu_milli}

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu_milli + other.cpu_milli, self.memory_mib + other.memory_mib,
                         self.gpu_milli + other.gpu_milli)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu_milli - other.cpu_milli, self.memory_mib - other.memory_mib,
                         self.gpu_milli - other.gpu_milli)

    def __mul__(self, count: int) -> Resources:
        """The amounts of `count` parts alike (a gang job's parts)."""
        return Resources(self.cpu_milli * count, self.memory_mib * count, self.gpu_milli * count)

    __rmul__ = __mul__

    def fits_in(self, available: Resources) -> bool:
        """Every amount at most the available one."""
        return (self.cpu_milli <= available.cpu_milli and self.memory_mib <= available.memory_mib
                and self.gpu_milli <= available.gpu_milli)

    def __bool__(self) -> bool:
        return bool(self.cpu_milli or self.memory_mib or self.gpu_milli)


ZERO = Resources()


def limits_from_api(values: Mapping[str, float | None]) -> dict[str, int | None]:
    """Limits in the API's units (a quota: each amount a number, or None for no limit) as stored
    amounts, each rounded to the nearest unit: {"cpu_milli": ..., "memory_mib": ..., "gpu_milli": ...}."""
    return {field: None if values.get(name) is None else round(values[name] * scale)
            for name, field, scale in API_UNITS}


def limits_as_api(limits: Mapping[str, int | None], gb_digits: int | None = GB_DIGITS) -> dict[str, float | None]:
    """Stored limits ({"cpu_milli": ...}, None for no limit) in the API's units, as `as_api` shows amounts."""
    return {name: None if limits.get(field) is None else gb(limits[field], gb_digits) if field == "memory_mib"
            else limits[field] / scale for name, field, scale in API_UNITS}


def gb(mib: int, digits: int | None = GB_DIGITS) -> float:
    """MiB as the API's GB, to `digits` decimals (None: unrounded)."""
    return mib / MIB_PER_GB if digits is None else round(mib / MIB_PER_GB, digits)

"""A guest's memory policy: its balloon's floor and weight, and what its
definition says about memory (free page reporting, the soft limit).

Sizes are written with a binary unit, as virsh and QEMU read them: ``512M``,
``1G``, ``1.5G`` (also ``1GiB``). A bare number is refused: libvirt reads one
as KiB and Kubernetes as bytes, so either reading would surprise someone.
Sizes are kept in one spelling (the largest unit that holds them whole: ``1536M``
is ``1.5G`` written back as ``1536M``), so two policies that mean the same are
equal and serialize alike.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from virtpolicy.errors import PolicyError

#: A size in KiB per unit letter.
_UNITS = {"K": 1, "M": 1024, "G": 1024**2, "T": 1024**3}
_SIZE = re.compile(r"\s*([0-9]{1,11})(?:\.([0-9]{1,6}))?\s*([KMGTkmgt])(?:iB)?\s*")
#: Sizes from 1 MiB (no guest runs in less) to 64 TiB.
SIZE_MIN_KIB, SIZE_MAX_KIB = 1024, 64 * 1024**3
WEIGHT_MIN, WEIGHT_MAX = 1, 10000
#: A guest's weight when its policy gives none.
DEFAULT_WEIGHT = 100


def size_kib(text: str) -> int:
    """The KiB a size's text means (the text as :func:`_size` keeps it)."""
    found = _SIZE.fullmatch(text)
    if found is None:
        raise PolicyError(f"{json.dumps(text[:40])} is not a size")
    whole, part, unit = found.groups()
    per = _UNITS[unit.upper()]
    kib = int(whole) * per
    if part:
        numerator = int(part) * per
        scale = 10 ** len(part)
        if numerator % scale:
            raise PolicyError(f"{json.dumps(text[:40])} is not a whole number of KiB")
        kib += numerator // scale
    return kib


def show_size(kib: int) -> str:
    """``kib`` in the largest unit that holds it whole: 1048576 -> ``1G``."""
    for unit in ("T", "G", "M"):
        if kib % _UNITS[unit] == 0:
            return f"{kib // _UNITS[unit]}{unit}"
    return f"{kib}K"


def _size(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return value  # refused by the type check, in pydantic's words
    if isinstance(value, int) or not _SIZE.fullmatch(value):
        shown = json.dumps(value[:40]) if isinstance(value, str) else str(value)[:40]
        raise PolicyError(f"{shown} is not a size: a number and a unit, K, M, G or T (e.g. 512M)")
    kib = size_kib(value)
    if not SIZE_MIN_KIB <= kib <= SIZE_MAX_KIB:
        raise PolicyError(f"{json.dumps(value[:40])} is not between 1M and 64T")
    return show_size(kib)


#: A size, kept in its one spelling (see above).
Size = Annotated[str, BeforeValidator(_size)]


class MemoryPolicy(BaseModel):
    """How much memory the guest keeps when the host needs memory back."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: off: the balloon is never touched; auto: the memory tuner moves it
    #: between ``floor`` and the guest's defined memory.
    balloon: Literal["off", "auto"] = "off"
    #: Never below this (required with balloon: auto).
    floor: Size | None = None
    #: Its share of what the host takes back or gives, 100 normal.
    weight: Annotated[int, Field(ge=WEIGHT_MIN, le=WEIGHT_MAX)] | None = None
    #: <memballoon freePageReporting='on'> in the definition (next start);
    #: None leaves the definition as it is.
    free_page_reporting: bool | None = None
    #: <memtune><soft_limit>: what the host's reclaim leaves it under pressure.
    soft_limit: Size | None = None

    @model_validator(mode="after")
    def _check_floor(self) -> MemoryPolicy:
        if self.balloon == "auto" and self.floor is None:
            raise PolicyError("is required with memory.balloon: auto", field="memory.floor")
        return self

    @property
    def floor_kib(self) -> int | None:
        return None if self.floor is None else size_kib(self.floor)

    @property
    def soft_limit_kib(self) -> int | None:
        return None if self.soft_limit is None else size_kib(self.soft_limit)

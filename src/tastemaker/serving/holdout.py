"""Holdout assignment: a stable hash of (salt, user id) puts a user in ``control`` or ``personalized``.

The hash is SHA-256, so the assignment is the same in every process, on every machine and in every
release; it changes only when the salt does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from tastemaker.serving.settings import HoldoutConfig

__all__ = ["CONTROL", "PERSONALIZED", "assign"]

CONTROL = "control"
PERSONALIZED = "personalized"
_SCALE = float(2**64)


def assign(user_ids: Sequence[str], config: HoldoutConfig) -> np.ndarray:
    """Each user's variant (an object array of ``control`` / ``personalized``)."""
    salt = config.salt.encode() + b"\x1f"
    points = np.array(
        [int.from_bytes(hashlib.sha256(salt + str(u).encode()).digest()[:8], "big") / _SCALE for u in user_ids],
        dtype=np.float64,
    )
    return np.where(points < config.control_share, CONTROL, PERSONALIZED).astype(object)

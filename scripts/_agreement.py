"""Top-1 agreement between devices' answers: shared by ``ff_benchmarks.py`` (the devices of one
population) and ``device_agreement.py`` (saved devices)."""

from __future__ import annotations

from typing import Any

import numpy as np


def agreement_table(preds: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """From first-read predictions ``(D, N)`` of ``D`` devices and the labels ``(N,)``: the
    ``(D, D)`` agreement matrix, and for each pair the fraction of its disagreements on which
    one of the two devices is right (the rest: both wrong, differently)."""
    same = (preds[:, None, :] == preds[None, :, :]).mean(-1)
    right = preds == y
    one_right = np.zeros_like(same)
    for i in range(len(preds)):
        for j in range(len(preds)):
            differ = preds[i] != preds[j]
            one_right[i, j] = (float((right[i] | right[j])[differ].mean()) if differ.any()
                               else 1.0)
    pairs = np.triu_indices(len(preds), 1)
    return {"agreement": same.round(5).tolist(),
            "disagreements_one_right": one_right.round(4).tolist(),
            "pair_agreement_median": float(np.median(same[pairs])) if len(preds) > 1 else None,
            "pair_agreement_min": float(same[pairs].min()) if len(preds) > 1 else None,
            "pair_agreement_max": float(same[pairs].max()) if len(preds) > 1 else None}

"""How the scripts read a one-to-many row that an earlier revision wrote: a setting that revision
did not record yet had the value it used then."""

from __future__ import annotations

from typing import Any

# (setting, the learner_config field it took before it was recorded)
_FROM_LEARNER = (("student_negatives", "negatives"),
                 ("student_negative_belief", "negative_belief"),
                 ("hard_label_negatives", "negatives"),
                 ("hard_label_negative_belief", "negative_belief"))


def spelled_out(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` (a ``distill_benchmarks.py`` one-to-many row) with each setting it may lack filled
    in as the revision that wrote it used it: one cell and no DAC bound per student (rows from
    before ``--student-cells`` and ``--student-input-bound``), and the learner's negatives and
    negative belief (``row["learner_config"]``) for the students and for the hard-label arm
    (rows from before they recorded their own). Settings the row records are kept; ``row`` is
    not changed."""
    learner = row.get("learner_config", {})
    return {"student_cells": 1, "student_input_bound": None,
            **{k: learner.get(field) for k, field in _FROM_LEARNER}, **row}

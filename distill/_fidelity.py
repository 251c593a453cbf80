"""Fidelity of a student to its teacher, reported apart from accuracy (Stanton et al. 2021)."""

from __future__ import annotations

import numpy as np


def fidelity(teacher_probs: np.ndarray, student_probs: np.ndarray, labels: np.ndarray,
             n_classes: int) -> dict[str, object]:
    """Top-1 agreement, KL(teacher ‖ student), accuracies and per-class error.

    Args:
        teacher_probs, student_probs: ``(N, C)`` class probabilities on the same held-out inputs.
        labels: ``(N,)`` true classes.
    Returns:
        ``agreement`` (fraction of equal argmax), ``kl`` (mean nats), ``student_accuracy``,
        ``teacher_accuracy``, ``relative_accuracy`` (student / teacher), ``per_class_error``
        (list of C student error rates; NaN for a class absent from ``labels``).
    """
    t, s = np.asarray(teacher_probs, np.float64), np.asarray(student_probs, np.float64)
    y = np.asarray(labels)
    t_pred, s_pred = t.argmax(-1), s.argmax(-1)
    eps = 1e-12
    kl = np.sum(t * (np.log(t + eps) - np.log(s + eps)), axis=-1)
    per_class = [float(np.mean(s_pred[y == c] != c)) if np.any(y == c) else float("nan")
                 for c in range(n_classes)]
    s_acc, t_acc = float(np.mean(s_pred == y)), float(np.mean(t_pred == y))
    return {
        "agreement": float(np.mean(t_pred == s_pred)),
        "kl": float(np.mean(kl)),
        "student_accuracy": s_acc,
        "teacher_accuracy": t_acc,
        "relative_accuracy": s_acc / t_acc if t_acc > 0 else float("nan"),
        "per_class_error": per_class,
    }

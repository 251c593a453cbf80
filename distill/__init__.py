"""distill: moving function between mortal devices by matching soft output probabilities.

A trained device's weights mean nothing on another device, so students learn *in place*, with the
same Forward-Forward rule as training, to reproduce their teachers' soft probabilities.

Targets: ``teacher_logits``, ``ensemble_probabilities`` (measure only), ``soft_target_loss``.
Transfer sets: ``random_fraction``, ``without_classes``, ``noise_inputs``, ``hybrid_inputs``;
views shared by teacher and students on every step: ``shifted_views`` (``DistillConfig.jitter``),
``mixed_views`` (``DistillConfig.mixup``).
Topologies: ``DistillConfig``, ``student_config``, ``distill_epoch`` (one or an ensemble of
teachers → many students, one compiled program), ``chain`` (generations), ``mutual_epoch``
(mutual distillation / codistillation on labelled shards), ``copy_weights`` (the immortal
control arm). Fidelity: ``fidelity``. Missing classes: ``fit_class_bias``,
``corrected_predictions``, ``tune_class_offset``.
"""

from ._bias import corrected_predictions, fit_class_bias, tune_class_offset
from ._fidelity import fidelity
from ._mutual import mutual_epoch, others_mean
from ._targets import ensemble_probabilities, soft_target_loss, teacher_logits
from ._topology import (
    DistillConfig,
    chain,
    copy_weights,
    distill_epoch,
    distill_epoch_fn,
    lineage_record,
    student_config,
)
from ._transfer import hybrid_inputs, noise_inputs, random_fraction, without_classes
from ._views import mixed_views, shifted_views

__all__ = [
    "DistillConfig",
    "chain",
    "copy_weights",
    "corrected_predictions",
    "distill_epoch",
    "distill_epoch_fn",
    "ensemble_probabilities",
    "fidelity",
    "fit_class_bias",
    "hybrid_inputs",
    "lineage_record",
    "mixed_views",
    "mutual_epoch",
    "noise_inputs",
    "others_mean",
    "random_fraction",
    "shifted_views",
    "soft_target_loss",
    "student_config",
    "teacher_logits",
    "tune_class_offset",
    "without_classes",
]

"""Training presets: the settings a backbone family trains well with, written once.

`paper` is the paper's ImageNet fine-tuning (head warm-up, then the whole network; class-weighted loss): the
ConvertConfig field defaults. `scratch` is the recipe of the face-native backbones from random weights,
measured on 2 CPU cores (TOOLCHAIN "Training from scratch"; converters/fer2013_face_vgg.yaml): AdamW with
warm-up and a cosine to 1%, label smoothing, BatchNorm momentum 0.99, rotation and random erasing on top of
the paper's four augmentations, no class weights while training (a logit adjustment chosen on validation
afterwards instead: the weighted loss cost 12-17 pp at short budgets), bfloat16 where the CPU has it.
`finetune` starts a face-native backbone from FER2013 weights on a small data set: a short head warm-up,
then the whole network at a lower rate, milder (sqrt) class weights for small unbalanced sets.

A preset fills only the fields a user did not set (`model_fields_set`): a flag or a recipe key always wins.
"""

from __future__ import annotations

PRESETS: dict[str, dict] = {
    "paper": {},
    "scratch": {
        "epochs": 0, "fine_tune_epochs": 60, "warmup_epochs": 2, "lrs": [2e-3], "lr_floor": 0.01,
        "optimizer": "adamw", "weight_decay": 0.01, "label_smoothing": 0.1, "class_weighting": "none",
        "batch_size": 64, "patience": 100, "bn_momentum": 0.99, "rotation": 10.0, "erasing": 0.25,
        "precision": "auto",
    },
    "finetune": {
        "epochs": 2, "fine_tune_epochs": 20, "lrs": [1e-3], "fine_tune_lr_factor": 0.5, "lr_floor": 0.02,
        "optimizer": "adamw", "weight_decay": 0.01, "label_smoothing": 0.1, "class_weighting": "sqrt",
        "batch_size": 32, "patience": 100, "bn_momentum": 0.9, "rotation": 10.0, "erasing": 0.25,
        "precision": "auto",
    },
}
PRESET_NAMES = ("auto", *PRESETS)


def auto_preset(face_native: bool, weights: str) -> str:
    """auto: scratch or finetune for a face-native backbone (by whether it starts from weights), else paper."""
    if not face_native:
        return "paper"
    return "scratch" if str(weights).lower() in ("none", "auto") else "finetune"


def preset_values(name: str, explicit: set[str]) -> dict:
    """The preset's values for the fields not in `explicit`."""
    if name not in PRESETS:
        from fer_edge.errors import UnknownNameError

        raise UnknownNameError("preset", name, list(PRESET_NAMES))
    return {k: v for k, v in PRESETS[name].items() if k not in explicit}

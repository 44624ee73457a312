"""The expression classifier on the board: a converted .tflite through the shared interpreter wrapper.

Everything the device needs to know about the model - labels in order, input size, colour mode,
crop margin - comes from the metadata inside the .tflite. There are no device-side defaults: a
model without fer-edge metadata is refused with the fix, unless its labels and input size are
given explicitly (classifier.labels / input_size / color, or --labels / --input-size / --color).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fer_edge.errors import ConfigError
from fer_edge.interpreter import TFLiteModel, default_threads, resolve_metadata
from fer_edge.preprocess import PreprocessSpec
from fer_edge.runtime.config import ClassifierConfig

log = logging.getLogger("fer_edge.runtime.classifier")


class Classifier:
    def __init__(self, model: str | Path, threads: int | None = None, delegate: str | None = None,
                 runtime: str | None = None, labels: list[str] | None = None, input_size: int | None = None,
                 color: str | None = None, require_variant: str | None = None, tta: str | None = None,
                 accelerator: str = ClassifierConfig.model_fields["accelerator"].default):
        from fer_edge.tta import check_tta, with_tta

        self.threads = int(threads) if threads else default_threads()
        meta = resolve_metadata(model, labels, input_size, color)
        self.tta = check_tta(meta.tta if tta is None else tta)   # None: as the model's metadata asks
        if require_variant and meta.variant != require_variant:
            raise ConfigError(f"classifier.require_variant is {require_variant}, but {model} is the {meta.variant} "
                              f"export ({meta.input_dtype} input); give model_{require_variant}.tflite from the "
                              "same convert output, or drop the requirement")
        self.model = TFLiteModel(model, threads=self.threads, metadata=meta, runtime=runtime, delegate=delegate,
                                 accelerator=accelerator)
        self.delegate_note = self.model.delegate_note
        if self.delegate_note:
            log.warning(self.delegate_note)
        self.accelerator_note = self.model.accelerator_note
        if self.accelerator_note:  # what runs the model, or (a warning) why the GPU was not used
            log.log(logging.INFO if self.model._compiled is not None else logging.WARNING, self.accelerator_note)
        self.spec: PreprocessSpec = self.model.metadata.preprocess
        self.labels: list[str] = self.model.labels
        self._predict_one = with_tta(self.model.predict_one, self.tta)

    @classmethod
    def from_config(cls, config: ClassifierConfig, model: str | Path) -> "Classifier":
        """From the daemon's `classifier:` section (fer_edge.runtime.config.ClassifierConfig) and the model
        file it resolves to (DaemonConfig.require_model)."""
        c = config
        return cls(model, threads=c.threads, delegate=c.delegate, runtime=c.runtime, labels=c.labels,
                   input_size=c.input_size, color=c.color, require_variant=c.require_variant, tta=c.tta,
                   accelerator=c.accelerator)

    def classify(self, crops: list[np.ndarray]) -> np.ndarray:
        """Model inputs (uint8, spec.shape each) -> probabilities (N, K)."""
        if not crops:
            return np.zeros((0, len(self.labels)), np.float32)
        return np.stack([self._predict_one(c) for c in crops])

    def describe(self) -> dict[str, Any]:
        m = self.model
        return {
            "path": str(m.path), "runtime": f"{m.runtime.name} {m.runtime.version}", "threads": self.threads,
            "labels": self.labels, "input": list(self.spec.shape), "color": self.spec.color,
            "variant": m.metadata.variant, "backbone": m.metadata.backbone, "tta": self.tta,
            "delegate_note": self.delegate_note or None, "accelerator_note": self.accelerator_note or None,
        }

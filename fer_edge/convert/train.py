"""Fine-tuning, the paper's recipe: new head, head-only warm-up, unfreeze at a lower rate,
class-weighted cross-entropy, the four augmentations, a learning-rate sweep picked on
validation mean per-class recall, early stopping with best weights, per-epoch checkpoints.

Backend-agnostic Keras 3 (no tf.* here), so the same code trains under KERAS_BACKEND=jax on a
GPU box; only `distribute.py` touches tf.distribute. Keras is imported inside functions so
importing this module stays cheap.

Training runs one `fit` call per epoch: the learning rate, the phase and the validation
metric the paper selects on (mean recall, not accuracy) are all decided between epochs, and a
fresh `fit` per epoch is what reliably changes the learning rate on every backend (TOOLCHAIN).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from fer_edge.atomic import atomic_write_text
from fer_edge.convert.settings import default
from fer_edge.metrics import score

PHASE_HEAD, PHASE_FULL = "head", "full"


@dataclass
class TrainConfig:
    """The resolved training settings. Every default is the settings tree's (fer_edge.convert.settings), where
    each field is described; fer_edge.convert.api.train_config builds one from a ConvertConfig."""

    epochs: int = default("epochs")                       # phase 1: head only (pretrained) or whole net, at lr
    fine_tune_epochs: int = default("fine_tune_epochs")   # phase 2: whole network, lr * factor cosine-decayed
    lrs: list[float] = field(default_factory=lambda: default("lrs"))
    fine_tune_lr_factor: float = default("fine_tune_lr_factor")
    batch_size: int = default("batch_size")
    class_weights: bool = default("class_weights")
    augment: bool = default("augment")
    patience: int = default("patience")
    seed: int = default("seed")
    strategy: str = default("strategy")
    bn: str = default("bn")                               # "adapt" | "frozen"
    sweep_epochs: int | None = default("sweep_epochs")   # rate race: only the leader goes on
    # The from-scratch recipe of the face-native backbones sets these; the defaults keep the paper's recipe.
    optimizer: str = default("optimizer")                 # "adam" | "adamw" (no decay on BatchNorm or biases)
    weight_decay: float = default("weight_decay")
    warmup_epochs: int = default("warmup_epochs")         # linear warm-up at the start of the full phase
    lr_floor: float = default("lr_floor")                 # the cosine ends at lr x this
    label_smoothing: float = default("label_smoothing")
    class_weighting: str | None = default("class_weighting")  # None: inverse (eq. 1) unless class_weights is off
    precision: str = default("precision")                 # "float32" | "mixed_bfloat16" (resolved already)
    rotation: float = default("rotation")                 # augmentation: max rotation in degrees (0 = off)
    erasing: float = default("erasing")                   # augmentation: probability of erasing a rectangle
    # Share of the teachers' soft targets in the training target: none without teachers (with teachers, the
    # settings tree's distill_weight).
    distill_weight: float = 0.0

    @property
    def weighting(self) -> str:
        if self.class_weighting is not None:
            return self.class_weighting
        return "inverse" if self.class_weights else "none"


@dataclass
class LrRun:
    lr: float
    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_mean_recall: float = -1.0
    best_accuracy: float = 0.0
    epochs_done: int = 0
    phase: str = PHASE_HEAD
    bad_epochs: int = 0
    pretrained: bool = False
    done: bool = False
    seconds: float = 0.0
    machine: str = ""                 # where it trained (a run may train on a GPU box and export elsewhere)
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: object                     # the inference model (keras.Model) with the chosen lr's best weights
    info: dict
    runs: list[LrRun]
    best_lr: float
    class_weights: dict[int, float] | None
    n_replicas: int = 1


def class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Paper eq. 1: weight_c = N / (K * n_c) from the training counts (K = classes present).

    A class absent from training gets weight 0: it contributes no loss either way.
    """
    counts = np.bincount(np.asarray(y, np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    k = int(present.sum())
    n = counts.sum()
    w = np.zeros(n_classes, np.float64)
    w[present] = n / (k * counts[present])
    return w


WEIGHTINGS = ("none", "sqrt", "inverse", "balanced")


def sample_weights(y: np.ndarray, n_classes: int, mode: str) -> np.ndarray | None:
    """Per-sample loss weights for a class-weighting mode, normalised to mean 1 over the training set.

    inverse = eq. 1 (N / (K n_c)); sqrt = its square root, a milder push towards the minority classes
    (the full weighting cost 12-17 pp of accuracy at short budgets, TOOLCHAIN); none and balanced (which
    re-samples instead, see `epoch_order`) weight every sample alike.
    """
    if mode not in WEIGHTINGS:
        from fer_edge.errors import UnknownNameError

        raise UnknownNameError("class weighting", mode, list(WEIGHTINGS))
    if mode in ("none", "balanced"):
        return None
    w = class_weights(y, n_classes)
    if mode == "sqrt":
        w = np.sqrt(w)
    per_sample = w[np.asarray(y, np.int64)]
    return (per_sample / per_sample.mean()).astype(np.float32)


def soft_targets(y: np.ndarray, n_classes: int, label_smoothing: float = 0.0, teacher: np.ndarray | None = None,
                 distill_weight: float = 0.0) -> np.ndarray:
    """Training targets: one-hot labels smoothed by `label_smoothing`, mixed with the teachers' soft
    targets at `distill_weight` (0 = labels only, 1 = teachers only)."""
    onehot = np.eye(n_classes, dtype=np.float32)[np.asarray(y, np.int64)]
    t = onehot * (1.0 - label_smoothing) + label_smoothing / n_classes
    if teacher is not None and distill_weight > 0:
        if teacher.shape != t.shape:
            raise ValueError(f"teacher targets {teacher.shape} do not match the labels {t.shape}")
        t = (1.0 - distill_weight) * t + distill_weight * teacher.astype(np.float32)
    return t


def augmentation_layers(seed: int, rotation: float = 0.0, erasing: float = 0.0):
    """The paper's four, active only in training (Keras random layers are identities at inference):
    random horizontal flip, crop (translation), scale (zoom) and brightness; optionally small rotations
    and random erasing (the from-scratch recipe). float32 even under a bfloat16 policy: pixels are 0..255."""
    import keras

    layers = [
        keras.layers.RandomFlip("horizontal", seed=seed, name="aug_flip"),
        keras.layers.RandomTranslation(0.1, 0.1, fill_mode="nearest", seed=seed + 1, name="aug_crop"),
        keras.layers.RandomZoom((-0.15, 0.15), fill_mode="nearest", seed=seed + 2, name="aug_scale"),
        keras.layers.RandomBrightness(0.2, value_range=(0.0, 255.0), seed=seed + 3, name="aug_brightness"),
    ]
    if rotation:
        layers.append(keras.layers.RandomRotation(rotation / 360.0, fill_mode="nearest", seed=seed + 4,
                                                  name="aug_rotate"))
    if erasing:
        layers.append(keras.layers.RandomErasing(erasing, scale=(0.02, 0.15), value_range=(0, 255),
                                                 seed=seed + 5, name="aug_erase"))
    for layer in layers:
        layer.dtype_policy = keras.dtype_policies.get("float32")
    if keras.backend.backend() == "jax":
        # They declare themselves not jit-compilable, which silently makes the whole step run op by
        # op under JAX; their ops do compile (TOOLCHAIN, measured on an H100).
        for layer in layers:
            layer.supports_jit = True
    return layers


def training_model(infer, augment: bool, seed: int, rotation: float = 0.0, erasing: float = 0.0):
    """Augmentation in front of the inference model; only the inference model is ever exported."""
    import keras

    inp = keras.Input(infer.input_shape[1:], name="train_pixels")
    x = inp
    if augment:
        for layer in augmentation_layers(seed, rotation, erasing):
            x = layer(x)
    return keras.Model(inp, infer(x), name="fer_training")


def _jit_default() -> bool | str:
    """XLA on accelerators and under JAX; plain graph mode for TensorFlow on a CPU, where XLA tripled the
    first-step trace (MobileNet a0.25: 17.6 s vs 5.8 s) and doubled the step time (measured)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return "auto"
    try:
        gpus = keras.distribution.list_devices("gpu")
    except Exception:  # no GPU platform at all
        gpus = []
    return "auto" if gpus else False


def training_machine() -> str:
    """Where training runs, for the record: Keras backend and the first accelerator (else the CPU model)."""
    import platform

    import keras

    backend = keras.backend.backend()
    device = None
    try:
        gpus = keras.distribution.list_devices("gpu")
    except Exception:  # no GPU platform at all
        gpus = []
    if gpus and backend == "jax":
        import jax

        device = f"{jax.devices()[0].device_kind} x{len(gpus)}"
    elif gpus:
        device = f"{len(gpus)} GPU(s)"
    if device is None:
        from fer_edge.machine import cpu_name

        device = f"{cpu_name()} ({os.cpu_count()} cores)"
    return f"{device}, Keras {keras.__version__} / {backend}, {platform.node() or 'host'}"


def _optimizer(cfg: TrainConfig, lr: float):
    import keras

    if cfg.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if cfg.optimizer == "adamw":
        opt = keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.weight_decay)
        # Decay on BatchNorm scales and biases only fights the normalisation; convention is to skip them.
        opt.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        return opt
    from fer_edge.errors import UnknownNameError

    raise UnknownNameError("optimizer", cfg.optimizer, ["adam", "adamw"])


def _compile(model, lr: float, cfg: TrainConfig | None = None, jit: bool | str | None = None) -> None:
    """Targets are always class-probability rows (one-hot, smoothed or distilled): categorical loss."""
    import keras

    jit = _jit_default() if jit is None else jit
    model.compile(
        optimizer=_optimizer(cfg or TrainConfig(), lr),
        loss=keras.losses.CategoricalCrossentropy(),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        jit_compile=jit,
    )


def _set_phase(train_model, phase: str, pretrained: bool, bn: str = "adapt") -> None:
    """Head phase freezes a pretrained backbone; full phase unfreezes it.

    bn="frozen" keeps a pretrained backbone's BatchNorm layers in inference mode during the full
    phase. Calling the backbone with training=False is NOT enough for that in Keras 3.15: a
    functional model passes the outer training=True down to nested models, overriding the node's
    own flag (measured); a BatchNormalization layer with trainable=False always runs in inference
    mode, so that is what keeps it there. bn="adapt" (default) lets BatchNorm re-estimate its
    statistics on the new domain, with a fast momentum (see backbones.build_classifier): on grey
    faces this trained much better than frozen statistics (measured on the synthetic set:
    frozen collapsed to chance at lr 5e-4, adapt reached 90% in 12 epochs).
    """
    import keras

    backbone = train_model.get_layer("fer_classifier").get_layer("backbone")
    backbone.trainable = not (phase == PHASE_HEAD and pretrained)
    if pretrained and backbone.trainable and bn == "frozen":
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False


def _epoch_plan(cfg: TrainConfig) -> list[tuple[str, float]]:
    """(phase, lr factor) for each epoch.

    Phase 2 decays its rate on a cosine from lr x fine_tune_lr_factor down to 5% of that: a
    constant rate plateaus early on FER2013, and the stepwise 1e-3 -> 3e-4 -> 1e-4 baseline in
    TOOLCHAIN.md was still rising when it stopped.
    """
    n = cfg.fine_tune_epochs
    floor = cfg.lr_floor
    w = min(cfg.warmup_epochs, n)
    warm = [(PHASE_FULL, cfg.fine_tune_lr_factor * (i + 1) / (w + 1)) for i in range(w)]
    m = n - w
    full = [
        (PHASE_FULL, cfg.fine_tune_lr_factor * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * i / max(1, m - 1)))))
        for i in range(m)
    ] if m > 1 else [(PHASE_FULL, cfg.fine_tune_lr_factor)] * m
    return [(PHASE_HEAD, 1.0)] * cfg.epochs + warm + full


def _lr_tag(lr: float) -> str:
    return f"lr_{lr:.0e}".replace("+", "").replace("-0", "-")


def _epoch_order(n: int, batch: int, seed: int, y: np.ndarray | None = None) -> np.ndarray:
    """This epoch's shuffle, with the partial last batch dropped (it would trigger a second XLA compile).

    With `y` (class-balanced sampling) the epoch draws n samples with replacement, each class equally likely.
    """
    rng = np.random.default_rng(seed)
    if y is not None:
        counts = np.bincount(y)
        p = 1.0 / counts[y]
        order = rng.choice(n, size=n, replace=True, p=p / p.sum())
    else:
        order = rng.permutation(n)
    keep = max(batch, (n // batch) * batch) if n >= batch else n
    return order[:keep]


def progress_callback(progress, description: str, steps: int):
    """A Keras callback that drives one rich.progress task per epoch (batches, running loss/accuracy)."""
    import keras

    class RichEpoch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.task = None

        def on_epoch_begin(self, epoch, logs=None):
            if progress is not None:
                self.task = progress.add_task(description, total=steps, stats="")

        def on_train_batch_end(self, batch, logs=None):
            if progress is not None and self.task is not None:
                logs = logs or {}
                stats = f"loss {logs.get('loss', float('nan')):.3f} acc {logs.get('accuracy', float('nan')):.3f}"
                progress.update(self.task, completed=batch + 1, stats=stats)

        def on_epoch_end(self, epoch, logs=None):
            if progress is not None and self.task is not None:
                progress.update(self.task, completed=steps)
                progress.remove_task(self.task)

    return RichEpoch()


def predict_probs(model, x: np.ndarray, batch_size: int = 256, distributed: bool = False) -> np.ndarray:
    """Float probabilities for uint8 crops, batched (predict_on_batch: no per-call pipeline).

    Under a multi-replica strategy predict_on_batch returns every replica's copy of the batch
    (measured: 96 rows for 48 images on two CPUs); `predict` distributes and gathers properly.
    """
    if distributed:
        return np.asarray(model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0))
    out = []
    for i in range(0, len(x), batch_size):
        chunk = x[i:i + batch_size].astype(np.float32)
        n = len(chunk)
        if 0 < n < batch_size and len(x) > batch_size:
            # Pad the last partial batch: under XLA a new batch shape is a whole new compile (TOOLCHAIN).
            chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:], chunk.dtype)])
        out.append(np.asarray(model.predict_on_batch(chunk))[:n])
    return np.concatenate(out) if out else np.zeros((0, model.output_shape[-1]), np.float32)


def _save_keras_atomic(model, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _save_weights_atomic(model, path: Path) -> None:
    tmp = path.with_name(f".{path.name.removesuffix('.weights.h5')}.tmp.weights.h5")
    model.save_weights(tmp)
    os.replace(tmp, path)


def train_lr(build: Callable[[], tuple], lr: float, data: dict[str, np.ndarray], labels: list[str],
             cfg: TrainConfig, ckpt_dir: Path, sw: np.ndarray | None, scope,
             progress=None, on_epoch: Callable[[dict], None] | None = None, resume: bool = True,
             n_replicas: int = 1, stop_after: int | None = None) -> LrRun:
    """Train one learning rate to completion (or resume it from its checkpoint); best weights on disk.

    stop_after: pause after that many epochs of the plan (the rate race), leaving the run resumable.
    """
    import keras

    ckpt_dir.mkdir(parents=True, exist_ok=True)
    state_path, last_path = ckpt_dir / "state.json", ckpt_dir / "last.keras"
    best_path = ckpt_dir / "best.weights.h5"
    run = LrRun(lr=lr)
    plan = _epoch_plan(cfg)
    train_model = None
    if resume and state_path.is_file():
        saved = json.loads(state_path.read_text())
        run = LrRun(**saved)
        if run.done:
            # Its best weights may be absent (a run trained elsewhere brings back only the chosen rate's);
            # train() checks the file of the rate it picks.
            return run
        if stop_after is not None and run.epochs_done >= stop_after:
            return run
        if last_path.is_file() and run.epochs_done > 0:
            with scope():
                train_model = keras.models.load_model(last_path)
        else:
            run = LrRun(lr=lr)
    if train_model is None:
        keras.utils.set_random_seed(cfg.seed)
        with scope():
            infer, info = build()
            train_model = training_model(infer, cfg.augment, cfg.seed, cfg.rotation, cfg.erasing)
            run.pretrained = pretrained = bool(info["pretrained"])
            run.phase = plan[0][0] if plan else PHASE_FULL
            _set_phase(train_model, run.phase, pretrained, cfg.bn)
            _compile(train_model, lr * (plan[0][1] if plan else 1.0), cfg)
    pretrained = run.pretrained
    run.machine = run.machine or training_machine()
    infer = train_model.get_layer("fer_classifier")
    x_tr, y_tr, x_val, y_val = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    targets = soft_targets(y_tr, len(labels), cfg.label_smoothing, data.get("t_train"), cfg.distill_weight)
    balanced = y_tr if cfg.weighting == "balanced" else None
    t_start = time.perf_counter() - run.seconds
    epoch = run.epochs_done
    end = len(plan) if stop_after is None else min(len(plan), stop_after)
    while epoch < end:
        phase, factor = plan[epoch]
        if phase != run.phase:
            # Phase boundary: continue from the best weights of the phase that ended.
            if best_path.is_file():
                infer.load_weights(best_path)
            run.phase, run.bad_epochs = phase, 0
            with scope():
                _set_phase(train_model, phase, pretrained, cfg.bn)
                _compile(train_model, lr * factor, cfg)
        else:
            # Within a phase only the rate moves (cosine); one fit per epoch makes the change take on every backend.
            train_model.optimizer.learning_rate = lr * factor
        keras.utils.set_random_seed(cfg.seed * 1000 + epoch)
        order = _epoch_order(len(x_tr), cfg.batch_size, cfg.seed * 1000 + epoch, balanced)
        steps = math.ceil(len(order) / cfg.batch_size)
        desc = f"train lr {lr:g} epoch {epoch + 1}/{len(plan)} ({phase})"
        t0 = time.perf_counter()
        hist = train_model.fit(
            x_tr[order], targets[order], batch_size=cfg.batch_size, epochs=1, shuffle=False, verbose=0,
            sample_weight=None if sw is None else sw[order], callbacks=[progress_callback(progress, desc, steps)],
        )
        probs = predict_probs(infer, x_val, distributed=n_replicas > 1)
        s = score(y_val, probs, labels)
        row = {
            "lr": lr, "epoch": epoch + 1, "phase": phase, "epoch_lr": lr * factor,
            "loss": float(hist.history["loss"][-1]), "accuracy": float(hist.history["accuracy"][-1]),
            "val_accuracy": s.accuracy, "val_mean_recall": s.mean_recall, "val_macro_f1": s.macro_f1,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        improved = s.mean_recall > run.best_mean_recall
        if improved:
            run.best_mean_recall, run.best_accuracy, run.best_epoch = s.mean_recall, s.accuracy, epoch + 1
            run.bad_epochs = 0
            _save_weights_atomic(infer, best_path)
        else:
            run.bad_epochs += 1
        row["best"] = improved
        run.history.append(row)
        epoch += 1
        if run.bad_epochs >= cfg.patience:
            # Early stop ends the current phase: skip to the next phase, or finish.
            nxt = next((i for i in range(epoch, len(plan)) if plan[i][0] != phase), len(plan))
            row["early_stop"] = True
            epoch = nxt
        run.epochs_done = epoch
        run.seconds = time.perf_counter() - t_start
        _save_keras_atomic(train_model, last_path)
        atomic_write_text(state_path, json.dumps(run.to_dict(), indent=1))
        if on_epoch is not None:
            on_epoch(row)
    if epoch < len(plan):
        return run  # paused by stop_after; state and last.keras are on disk
    run.done = True
    run.seconds = time.perf_counter() - t_start
    atomic_write_text(state_path, json.dumps(run.to_dict(), indent=1))
    _unlink(last_path)  # the optimizer state is no longer needed once the lr is done
    return run


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _rank(run: LrRun) -> tuple:
    """The learning-rate choice: validation mean recall, then accuracy, then the lower rate."""
    return run.best_mean_recall, run.best_accuracy, -run.lr


def _end_race(run: LrRun, ckpt_dir: Path, race: int) -> None:
    """A rate that lost the race is finished where it stands (its best weights stay for the record)."""
    run.done = True
    run.note = f"rate race: stopped after {run.epochs_done} epoch(s) (race of {race})"
    atomic_write_text(ckpt_dir / "state.json", json.dumps(run.to_dict(), indent=1))
    _unlink(ckpt_dir / "last.keras")


def train(build: Callable[[], tuple], data: dict[str, np.ndarray], labels: list[str], cfg: TrainConfig,
          work_dir: Path, progress=None, on_epoch: Callable[[dict], None] | None = None,
          resume: bool = True, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train one model per learning rate; keep the one with the best validation mean per-class recall."""
    import keras

    from fer_edge.convert.distribute import make_scope
    from fer_edge.convert.precision import policy_scope

    scope, n_replicas = make_scope(cfg.strategy)
    scope = policy_scope(scope, cfg.precision)  # models are built under the run's dtype policy
    sw = sample_weights(data["y_train"], len(labels), cfg.weighting)
    # the per-class weights actually applied (for the record)
    cw = None if sw is None else {int(c): float(sw[np.flatnonzero(data["y_train"] == c)[0]])
                                  for c in np.unique(data["y_train"])}
    race = cfg.sweep_epochs if cfg.sweep_epochs and len(cfg.lrs) > 1 else None

    def run_lr(lr: float, stop_after: int | None, resume_lr: bool) -> LrRun:
        run = train_lr(build, lr, data, labels, cfg, work_dir / _lr_tag(lr), sw, scope, progress, on_epoch,
                       resume_lr, n_replicas, stop_after=stop_after)
        if log:
            state = "" if run.done else f" after {run.epochs_done} epoch(s) of the race"
            log(f"lr {lr:g}: best validation mean recall {run.best_mean_recall:.2%} "
                f"(accuracy {run.best_accuracy:.2%}) at epoch {run.best_epoch}{state}, {run.seconds:.0f} s")
        return run

    runs = [run_lr(lr, race, resume) for lr in cfg.lrs]
    best = max(runs, key=_rank)
    if race:
        # Successive halving with one survivor: the rates are compared on validation after `race` epochs
        # each, then only the leader trains its whole plan. The leader can only improve on its race
        # score, so the final choice equals the race's (and a rerun after an interruption agrees).
        for r in runs:
            if r is not best and not r.done:
                _end_race(r, work_dir / _lr_tag(r.lr), race)
        if log:
            log(f"rate race: lr {best.lr:g} leads after {race} epoch(s); it alone trains on")
        runs[runs.index(best)] = best = run_lr(best.lr, None, True)
    keras.utils.set_random_seed(cfg.seed)
    model, info = build()
    best_file = work_dir / _lr_tag(best.lr) / "best.weights.h5"
    if not best_file.is_file():
        from fer_edge.errors import ModelError

        raise ModelError(f"the checkpoint of the chosen learning rate {best.lr:g} has no best weights "
                         f"({best_file}); delete {work_dir} or pass --no-resume to train again")
    model.load_weights(best_file)
    return TrainResult(model=model, info=info, runs=runs, best_lr=best.lr, class_weights=cw, n_replicas=n_replicas)


def clear_checkpoints(work_dir: Path) -> None:
    shutil.rmtree(work_dir, ignore_errors=True)

"""Backbone registry: the paper's ImageNet networks, looked up by name.

Each entry is data (constructor, default and minimum input size, the pixel range the
network expects, the ImageNet weight file Keras would look for). `build_classifier` wraps a
backbone into a model that takes uint8-valued pixels 0..255 at the PreprocessSpec's shape:
grey input is tiled to three channels and rescaled INSIDE the model, so the .tflite a board
runs takes the raw crop.

Keras itself would download missing ImageNet weights; fer-edge never does (the target
machines are often offline, and a hanging download is worse than a clear message). It looks
for the exact file in the Keras cache and loads it into a backbone built without weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fer_edge.convert.settings import default
from fer_edge.errors import ConfigError, WeightsNotFoundError
from fer_edge.preprocess import PreprocessSpec
from fer_edge.registry import Registry

KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    constructor: str                 # attribute of keras.applications
    default_size: int                # sensible for 48x48 face crops
    min_size: int
    input_range: str                 # "-1,1" (rescale inside the model) or "0,255" (backbone rescales itself)
    weight_file: Callable[[float], str]
    url_dir: str                     # where Keras downloads it from (for the error message)
    default_alpha: float | None = None
    imagenet_alphas: tuple[float, ...] = ()
    extra_kwargs: tuple[tuple[str, object], ...] = ()
    face_native: bool = False        # built by fer_edge.convert.facenets: native channels, from-scratch recipe

    def alpha_for(self, alpha: float | None) -> float | None:
        if self.default_alpha is None:
            if alpha is not None:
                raise ConfigError(f"--alpha does not apply to backbone '{self.name}' (it has no width multiplier); "
                                  "drop the option")
            return None
        return self.default_alpha if alpha is None else float(alpha)


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def _add(spec: BackboneSpec, *aliases: str) -> None:
    BACKBONES.register(spec.name, *aliases)(spec)


def _v1_file(alpha: float) -> str:
    text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
    # Keras only ships v1 weights at 128..224 and falls back to the 224 file for other sizes.
    return f"mobilenet_{text}_224_tf_no_top.h5"


def _v2_file(alpha: float) -> str:
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_224_no_top.h5"


def _v3_file(kind: str) -> Callable[[float], str]:
    return lambda alpha: f"weights_mobilenet_v3_{kind}_224_{float(alpha)}_float_no_top_v2.h5"


_add(BackboneSpec("mobilenet", "MobileNet", 96, 32, "-1,1", _v1_file, KERAS_URL + "mobilenet/",
                  default_alpha=0.25, imagenet_alphas=(0.25, 0.5, 0.75, 1.0)), "mobilenet_v1")
_add(BackboneSpec("mobilenet_v2", "MobileNetV2", 96, 32, "-1,1", _v2_file, KERAS_URL + "mobilenet_v2/",
                  default_alpha=0.35, imagenet_alphas=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4)))
_add(BackboneSpec("mobilenet_v3_small", "MobileNetV3Small", 96, 32, "0,255", _v3_file("small"),
                  KERAS_URL + "mobilenet_v3/", default_alpha=1.0, imagenet_alphas=(0.75, 1.0),
                  extra_kwargs=(("include_preprocessing", True),)))
_add(BackboneSpec("mobilenet_v3_large", "MobileNetV3Large", 96, 32, "0,255", _v3_file("large"),
                  KERAS_URL + "mobilenet_v3/", default_alpha=1.0, imagenet_alphas=(0.75, 1.0),
                  extra_kwargs=(("include_preprocessing", True),)))
_add(BackboneSpec("inception_v3", "InceptionV3", 139, 75, "-1,1",
                  lambda a: "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
                  KERAS_URL + "inception_v3/"), "inception")
_add(BackboneSpec("nasnet_mobile", "NASNetMobile", 96, 32, "-1,1", lambda a: "nasnet_mobile_no_top.h5",
                  KERAS_URL + "nasnet/"), "nasnet")


def _no_imagenet(alpha: float) -> str:
    return ""


for _name in ("face_vgg_tiny", "face_vgg_small", "face_vgg_base", "face_resnet_tiny", "face_resnet_small",
              "face_resnet_base"):
    # 48 px is FER2013's native size; min 16 keeps a 2x2 map after three poolings.
    _add(BackboneSpec(_name, "", 48, 16, "-1,1", _no_imagenet, "", face_native=True))


def get_backbone(name: str) -> BackboneSpec:
    return BACKBONES.get(name)


def keras_cache_dirs() -> list[Path]:
    """Where Keras keeps downloaded weights, in the order fer-edge looks: $KERAS_HOME/models, ~/.keras/models,
    and the /tmp/.keras fallback Keras uses when the home is read-only."""
    dirs = []
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]).expanduser() / "models")
    dirs.append(Path("~/.keras/models").expanduser())
    dirs.append(Path("/tmp/.keras/models"))
    seen, out = set(), []
    for d in dirs:
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out


# Shipped in the package (Apache-2.0, see its NOTICE.md) so the demo does transfer learning offline.
BUNDLED_WEIGHTS = Path(__file__).resolve().parents[1] / "assets" / "keras"


def find_imagenet_weights(spec: BackboneSpec, alpha: float | None, bundled: bool = True) -> Path | None:
    """The exact file Keras would download, from the Keras cache, else the copy bundled with fer-edge."""
    name = spec.weight_file(alpha if alpha is not None else 1.0)
    for d in keras_cache_dirs() + ([BUNDLED_WEIGHTS] if bundled else []):
        if (d / name).is_file():
            return d / name
    return None


FER2013_WEIGHTS = "fer2013"
# Backbone weights the project trained on FER2013 (research-only data: see the NOTICE beside them).
FER2013_DIR = Path(__file__).resolve().parents[1] / "assets" / "fer2013"


def fer2013_weights(name: str) -> Path | None:
    path = FER2013_DIR / f"{name}.weights.h5"
    return path if path.is_file() else None


def shipped_fer2013_backbones() -> list[str]:
    return sorted(p.name.removesuffix(".weights.h5") for p in FER2013_DIR.glob("*.weights.h5"))


def resolve_weights(spec: BackboneSpec, weights: str, alpha: float | None) -> tuple[Path | None, str]:
    """'imagenet' | 'none' | 'auto' | a path -> (weights file or None, a description for the metadata).

    'auto' means ImageNet when the file is in the Keras cache, otherwise random initialisation.
    """
    w = str(weights)
    if w.lower() == "none":
        return None, "none"
    if w.lower() == FER2013_WEIGHTS:
        found = fer2013_weights(spec.name)
        if found is None:
            have = ", ".join(shipped_fer2013_backbones()) or "none"
            raise WeightsNotFoundError(
                f"fer-edge ships no FER2013-pretrained weights for {spec.name} (shipped for: {have}). "
                "Pick one of those backbones, or train with --weights none.")
        return found, f"fer2013:{found.name}"
    if spec.face_native and w.lower() == "auto":
        return None, "none"
    if spec.face_native and w.lower() == "imagenet":
        raise ConfigError(f"{spec.name} is a face-native backbone: it has no ImageNet weights. Use --weights "
                          f"{FER2013_WEIGHTS} (pretrained on faces, where shipped) or --weights none.")
    if w.lower() in ("imagenet", "auto"):
        if spec.imagenet_alphas and alpha not in spec.imagenet_alphas:
            if w.lower() == "auto":
                return None, "none"
            raise ConfigError(
                f"no ImageNet weights exist for {spec.name} at alpha {alpha}; ImageNet alphas are "
                f"{', '.join(str(a) for a in spec.imagenet_alphas)}. Pick one of those or use --weights none."
            )
        found = find_imagenet_weights(spec, alpha)
        if found is not None:
            return found, f"imagenet:{found.name}"
        if w.lower() == "auto":
            return None, "none"
        name = spec.weight_file(alpha if alpha is not None else 1.0)
        dirs = keras_cache_dirs()
        raise WeightsNotFoundError(
            f"ImageNet weights for {spec.name}"
            + (f" (alpha {alpha})" if alpha is not None else "")
            + f" are not on this machine: fer-edge looked for the file '{name}' in "
            + ", ".join(str(d) for d in dirs)
            + f". fer-edge never downloads (this machine may be offline). Copy the file to {dirs[0]}/{name} "
            f"(Keras publishes it at {spec.url_dir}{name}), pass --weights PATH to a copy elsewhere, "
            "or train from scratch with --weights none."
        )
    path = Path(w).expanduser()
    if not path.is_file():
        raise WeightsNotFoundError(
            f"weights file not found: {path}. Give an existing .h5/.weights.h5 file, 'imagenet' or 'none'."
        )
    return path, f"file:{path.name}"


def check_input_size(spec: BackboneSpec, size: int) -> None:
    if size < spec.min_size:
        raise ConfigError(
            f"--input-size {size} is too small for {spec.name}: its minimum is {spec.min_size} px "
            f"(default {spec.default_size})."
        )


def build_backbone(spec: BackboneSpec, size: int, alpha: float | None, weights_file: Path | None,
                   bn_momentum: float | None = None):
    """The bare backbone (no top, no pooling) for (size, size, 3) input, weights loaded from a local file only."""
    import keras

    check_input_size(spec, size)
    if spec.face_native:
        raise ConfigError(f"{spec.name} is built by build_face_classifier, not as a keras.applications backbone")
    kwargs: dict = dict(include_top=False, weights=None, input_shape=(size, size, 3), name="backbone")
    if alpha is not None:
        kwargs["alpha"] = alpha
    kwargs.update(dict(spec.extra_kwargs))
    try:
        backbone = getattr(keras.applications, spec.constructor)(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"cannot build {spec.name} at {size} px with alpha {alpha}: {exc}") from exc
    if weights_file is not None:
        try:
            backbone.load_weights(str(weights_file))
        except Exception as exc:  # h5py/keras raise several types for a wrong file
            raise WeightsNotFoundError(
                f"the weights file {weights_file} does not fit {spec.name} (alpha {alpha}): {exc}. "
                "Check the backbone, --alpha and the file."
            ) from exc
    if bn_momentum is not None:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    return backbone


def _load_backbone_weights(backbone, path: Path, spec: BackboneSpec) -> None:
    try:
        backbone.load_weights(str(path))
    except Exception as exc:  # h5py/keras raise several types for a wrong file
        raise WeightsNotFoundError(
            f"the weights file {path} does not fit {spec.name}: {exc}. Check the backbone and the file "
            "(fer2013 weights fit grey input of any size).") from exc


def save_backbone_weights(model, path: Path) -> Path:
    """The backbone part of a trained classifier, for --weights PATH|fer2013 starts (head excluded); atomic."""
    path = Path(path)
    tmp = path.with_name(f".{path.name.removesuffix('.weights.h5')}.tmp.weights.h5")
    model.get_layer("backbone").save_weights(str(tmp))
    os.replace(tmp, path)
    return path


def input_adapter(x, channels: int, input_range: str):
    """uint8-valued pixels -> what the network expects: 3 channels, scaled to `input_range`."""
    import keras

    if channels == 1:
        # Concatenate is a built-in layer, so the saved .keras needs no custom objects.
        x = keras.layers.Concatenate(axis=-1, name="grey_to_rgb")([x, x, x])
    x = rescaling(x, input_range)
    return x


INPUT_RANGES = {"-1,1": (1 / 127.5, -1.0), "0,1": (1 / 255.0, 0.0), "0,255": None}


def rescaling(x, input_range: str, name: str = "pixels_to_range"):
    import keras

    key = input_range.replace(" ", "")
    if key not in INPUT_RANGES:
        raise ConfigError(f"unknown input range '{input_range}'; valid: {', '.join(INPUT_RANGES)}")
    if INPUT_RANGES[key] is None:
        return x
    scale, offset = INPUT_RANGES[key]
    return keras.layers.Rescaling(scale, offset=offset, name=name)(x)


def build_classifier(name: str, preprocess: PreprocessSpec, n_classes: int, weights: str = "none",
                     alpha: float | None = None, dropout: float = default("dropout"),
                     bn_momentum: float = default("bn_momentum")):
    """A classifier on uint8-valued input (0..255) of `preprocess.shape`; returns (model, info).

    BatchNorm momentum is lowered from Keras' 0.99-0.9997 so that statistics re-estimated on face
    crops (or learnt from scratch) catch up within a few hundred steps (TOOLCHAIN). Whether a
    pretrained backbone's BatchNorm trains at all is decided per phase in train._set_phase.
    """
    import keras

    spec = get_backbone(name)
    alpha = spec.alpha_for(alpha)
    weights_file, weights_desc = resolve_weights(spec, weights, alpha)
    pretrained = weights_file is not None
    inp = keras.Input(preprocess.shape, name="pixels")
    if spec.face_native:
        from fer_edge.convert.facenets import build_face_backbone

        check_input_size(spec, preprocess.input_size)
        backbone = build_face_backbone(spec.name, preprocess.input_size, preprocess.channels, bn_momentum)
        if weights_file is not None:
            _load_backbone_weights(backbone, weights_file, spec)
        x = rescaling(inp, spec.input_range)  # native channels: grey stays one channel
    else:
        backbone = build_backbone(spec, preprocess.input_size, alpha, weights_file, bn_momentum=bn_momentum)
        x = input_adapter(inp, preprocess.channels, spec.input_range)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    # float32 even under a mixed bfloat16 policy: the softmax and the loss stay in full precision.
    out = keras.layers.Dense(n_classes, activation="softmax", name="head_logits", dtype="float32")(x)
    model = keras.Model(inp, out, name="fer_classifier")
    info = {"backbone": spec.name, "alpha": alpha, "weights": weights_desc, "pretrained": pretrained,
            "input_range": spec.input_range}
    return model, info

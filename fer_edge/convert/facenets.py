"""Backbones built for faces at their native size (48-64 px grey), trained from scratch or from FER2013 weights.

Why they exist beside the ImageNet networks: a FER crop is 48 px grey, and on a board the classifier runs
next to a face detector that costs 10-30x more. Dense 3x3 convolutions are where int8 pays on XNNPACK
(3x over fp32, measured), while MobileNet a0.25 is too small for int8 to pay at all; and a network that
downsamples 8x keeps a 6x6 map of a 48 px face instead of upsampling it to 96-224 px for a 32x backbone.

Every op here (CONV_2D with fused BatchNorm and ReLU, MAX_POOL_2D, ADD, MEAN, FULLY_CONNECTED, SOFTMAX)
has an int8 XNNPACK kernel, so the int8 file runs entirely inside the delegate (the export checks the op
list). Each family has presets: `tiny` for tests (seconds), `small` (the shipped model), `base`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FacePreset:
    family: str                      # "vgg" | "resnet"
    widths: tuple[int, ...]          # channels per stage; a 2x2 down-sampling between stages
    depth: int                       # conv layers (vgg) or residual blocks (resnet) per stage


PRESETS: dict[str, FacePreset] = {
    "face_vgg_tiny": FacePreset("vgg", (8, 16, 32), 1),
    "face_vgg_small": FacePreset("vgg", (32, 64, 128, 256), 2),
    "face_vgg_base": FacePreset("vgg", (48, 96, 192, 384), 2),
    "face_resnet_tiny": FacePreset("resnet", (8, 16, 32), 1),
    "face_resnet_small": FacePreset("resnet", (32, 64, 128, 256), 1),
    "face_resnet_base": FacePreset("resnet", (32, 64, 128, 256), 2),
}


def _conv_bn(x, width: int, name: str, momentum: float, stride: int = 1, relu: bool = True, kernel: int = 3):
    import keras

    x = keras.layers.Conv2D(width, kernel, strides=stride, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = keras.layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x) if relu else x


def _vgg(x, p: FacePreset, momentum: float):
    import keras

    for s, w in enumerate(p.widths):
        if s:
            x = keras.layers.MaxPooling2D(2, name=f"stage{s + 1}_pool")(x)
        for d in range(p.depth):
            x = _conv_bn(x, w, f"stage{s + 1}_{d + 1}", momentum)
    return x


def _resnet(x, p: FacePreset, momentum: float):
    import keras

    x = _conv_bn(x, p.widths[0], "stem", momentum)
    for s, w in enumerate(p.widths):
        for d in range(p.depth):
            stride = 2 if (s and d == 0) else 1
            name = f"stage{s + 1}_block{d + 1}"
            shortcut = x
            if stride != 1 or int(x.shape[-1]) != w:
                shortcut = _conv_bn(x, w, f"{name}_proj", momentum, stride=stride, relu=False, kernel=1)
            y = _conv_bn(x, w, f"{name}_a", momentum, stride=stride)
            y = _conv_bn(y, w, f"{name}_b", momentum, relu=False)
            x = keras.layers.Add(name=f"{name}_add")([shortcut, y])
            x = keras.layers.ReLU(name=f"{name}_out")(x)
    return x


FAMILIES = {"vgg": _vgg, "resnet": _resnet}


def build_face_backbone(name: str, size: int, channels: int, bn_momentum: float = 0.99):
    """The bare backbone (no pooling, no head) for (size, size, channels) input scaled to [-1, 1]."""
    import keras

    p = PRESETS[name]
    inp = keras.Input((size, size, channels), name="backbone_input")
    out = FAMILIES[p.family](inp, p, bn_momentum)
    return keras.Model(inp, out, name="backbone")


def downsampling(name: str) -> int:
    """How many times smaller the final feature map is than the input (8 for four stages)."""
    return 2 ** (len(PRESETS[name].widths) - 1)

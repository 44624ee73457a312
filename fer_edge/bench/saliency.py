"""Where a model looks: occlusion sensitivity (any model, int8 TFLite included), gradient saliency
and Grad-CAM (the float Keras model).

Occlusion needs only predictions, so it works on a board and on integer-only models. Gradients
need the Keras model; the one backend-specific step (taking a gradient) is looked up by the
active Keras backend, everything else uses numpy or keras.ops.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from fer_edge.errors import ModelError
from fer_edge.registry import Registry

GREY = 128  # the occluder: mid-grey in the uint8 pixel space every model takes


def _positions(size: int, patch: int, stride: int) -> list[int]:
    last = size - patch
    pos = list(range(0, last + 1, stride))
    if pos[-1] != last:  # cover the bottom/right edge too
        pos.append(last)
    return pos


def occlusion_map(predict: Callable[[np.ndarray], np.ndarray], image: np.ndarray, target: int | None = None,
                  patch: int | None = None, stride: int | None = None, fill: int = GREY,
                  batch: int = 64) -> tuple[np.ndarray, int, float]:
    """Slide a `fill` square over `image` (uint8 S,S,C); at each pixel, the mean drop of the target
    class probability over the patches that covered it.

    -> (map float32 (S,S), target class, its probability on the intact image). Positive = hiding the
    pixel lowers the model's confidence: the model relies on it.
    """
    image = np.asarray(image, np.uint8)
    h, w = image.shape[:2]
    patch = patch or max(2, min(h, w) // 6)
    patch = min(patch, h, w)
    stride = stride or max(1, patch // 2)
    base = np.asarray(predict(image[None]), np.float32)[0]
    target = int(base.argmax()) if target is None else int(target)
    boxes = [(y, x) for y in _positions(h, patch, stride) for x in _positions(w, patch, stride)]
    drops = np.empty(len(boxes), np.float32)
    for i in range(0, len(boxes), batch):
        chunk = boxes[i:i + batch]
        occluded = np.repeat(image[None], len(chunk), axis=0)
        for j, (y, x) in enumerate(chunk):
            occluded[j, y:y + patch, x:x + patch] = fill
        drops[i:i + len(chunk)] = base[target] - np.asarray(predict(occluded), np.float32)[:, target]
    total = np.zeros((h, w), np.float32)
    count = np.zeros((h, w), np.float32)
    for (y, x), d in zip(boxes, drops):
        total[y:y + patch, x:x + patch] += d
        count[y:y + patch, x:x + patch] += 1
    return total / np.maximum(count, 1), target, float(base[target])


# ------------------------------------------------------------------------------------------ gradients

GRADIENTS: Registry[Callable] = Registry("keras backend (for gradients)")


@GRADIENTS.register("tensorflow")
def _grad_tf(fn: Callable, x: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    t = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(t)
        y = fn(t)
    return np.asarray(tape.gradient(y, t))


@GRADIENTS.register("jax")
def _grad_jax(fn: Callable, x: np.ndarray) -> np.ndarray:
    import jax
    import jax.numpy as jnp

    return np.asarray(jax.grad(fn)(jnp.asarray(x)))


@GRADIENTS.register("torch")
def _grad_torch(fn: Callable, x: np.ndarray) -> np.ndarray:
    import torch

    t = torch.tensor(x, requires_grad=True)
    fn(t).backward()
    return t.grad.detach().cpu().numpy()


def gradient(fn: Callable, x: np.ndarray) -> np.ndarray:
    """d fn(x) / d x for a scalar-valued `fn`, with whatever backend Keras runs on."""
    import keras

    return GRADIENTS.get(keras.backend.backend())(fn, np.asarray(x, np.float32))


def _normalise(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float32)
    top = float(m.max()) if m.size else 0.0
    return m / top if top > 0 else np.zeros_like(m)


def gradient_saliency(model, image: np.ndarray, target: int) -> np.ndarray:
    """|d p_target / d pixel|, max over colour channels, scaled to 0..1 (Simonyan et al.'s saliency map)."""
    from keras import ops

    g = gradient(lambda t: model(t, training=False)[0, target], image[None].astype(np.float32))
    return _normalise(ops.convert_to_numpy(ops.max(ops.abs(g[0]), axis=-1)))


def _run(layers, x):
    for layer in layers:
        x = layer(x, training=False)
    return x


def _flatten(layer, x) -> list:
    """A nested model whose own layers run one after another is opened up (recursively), so Grad-CAM can
    reach the backbone's last feature map; a nested model with branches (residual adds, Inception
    blocks) stays one step - its output, the backbone's feature map, is then the Grad-CAM layer."""
    import keras
    from keras import layers as L
    from keras import ops

    if not isinstance(layer, keras.Model):
        return [layer]
    inner = [lay for lay in layer.layers if not isinstance(lay, L.InputLayer)]
    try:
        steps, a = [], x
        for sub in inner:
            parts = _flatten(sub, a)
            a = _run(parts, a)
            steps += parts
        if np.allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(layer(x, training=False)), atol=1e-4):
            return steps
    except (ValueError, TypeError):  # a layer that cannot take the previous one's output alone
        pass
    return [layer]


class LayerChain:
    """A model whose layers run one after another (nested chain models opened up), split at its last
    spatial feature map for Grad-CAM. Checked against the model's own output."""

    def __init__(self, model, probe: np.ndarray):
        from keras import ops

        x = probe[None].astype(np.float32)
        self.layers = _flatten(model, x)
        if self.layers == [model]:
            raise ModelError("the model's layers do not form a chain; Grad-CAM needs one")
        a = x
        last_spatial = None
        for i, layer in enumerate(self.layers):
            a = layer(a, training=False)
            shape = tuple(ops.shape(a))
            if len(shape) == 4 and shape[1] > 1 and shape[2] > 1:
                last_spatial = i
        if last_spatial is None:
            raise ModelError("the model has no spatial feature map (no 4-D layer output) for Grad-CAM")
        self.split = last_spatial
        self.layer_name = self.layers[last_spatial].name

    def body(self, x):
        return _run(self.layers[: self.split + 1], x)

    def head(self, f):
        return _run(self.layers[self.split + 1:], f)


def grad_cam(model, image: np.ndarray, target: int, chain: LayerChain | None = None) -> tuple[np.ndarray, str]:
    """Grad-CAM (Selvaraju et al.): feature maps of the last spatial layer weighted by their mean gradient,
    ReLU, upsampled to the input. -> (map 0..1 (S,S), the layer it used)."""
    import cv2
    from keras import ops

    chain = chain or LayerChain(model, image)
    feats = ops.convert_to_numpy(chain.body(image[None].astype(np.float32)))
    grads = gradient(lambda f: chain.head(f)[0, target], feats)
    weights = grads[0].mean(axis=(0, 1))
    cam = np.maximum((feats[0] * weights).sum(-1), 0)
    h, w = image.shape[:2]
    return _normalise(cv2.resize(cam.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)), chain.layer_name

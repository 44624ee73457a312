"""--strategy: scale training past one device with tf.distribute (the only place training touches tf).

default      one device, no strategy scope (any Keras backend).
mirrored     synchronous data parallelism over every local GPU; on a machine without GPUs over
             every logical CPU device (how it is tested here: two logical CPUs).
multiworker  synchronous data parallelism across machines; each worker reads its role from the
             TF_CONFIG environment variable, as tf.distribute documents.

--batch-size is the global batch, split across replicas.
"""

from __future__ import annotations

import contextlib
from typing import Callable, ContextManager

from fer_edge.errors import ConfigError
from fer_edge.registry import Registry

STRATEGIES: Registry[Callable[[], object]] = Registry("strategy")


def _tf():
    import keras

    if keras.backend.backend() != "tensorflow":
        raise ConfigError(
            f"--strategy needs the TensorFlow Keras backend (KERAS_BACKEND={keras.backend.backend()}); "
            "use --strategy default, or unset KERAS_BACKEND"
        )
    import tensorflow as tf

    return tf


@STRATEGIES.register("mirrored")
def _mirrored():
    tf = _tf()
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=devices)


@STRATEGIES.register("multiworker", "multi_worker")
def _multiworker():
    return _tf().distribute.MultiWorkerMirroredStrategy()


def make_scope(name: str) -> tuple[Callable[[], ContextManager], int]:
    """(a factory of the scope that model building and compiling must run in, number of replicas)."""
    if name in ("default", "", None):
        return contextlib.nullcontext, 1
    if name not in STRATEGIES:
        from fer_edge.errors import UnknownNameError

        raise UnknownNameError("strategy", name, strategy_names())
    strategy = STRATEGIES.get(name)()
    return strategy.scope, int(strategy.num_replicas_in_sync)


def strategy_names() -> list[str]:
    return ["default", *STRATEGIES.names()]

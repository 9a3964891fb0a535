"""Choosing the ``tf.distribute`` strategy.

Order: ``--tpu`` -> ``TPUStrategy``; ``TF_CONFIG`` set -> ``MultiWorkerMirroredStrategy``
(created first, before any other TF op, as TF requires); ``replicas > 1`` on a
machine without GPUs -> that many logical CPU devices and ``MirroredStrategy`` (for
testing distributed code); several GPUs -> ``MirroredStrategy``; otherwise the
default strategy.
"""
import json
import os


def configure_cpu_replicas(replicas):
    """Split the CPU into ``replicas`` logical devices. Must run before TF initializes
    its devices (before any op); raises RuntimeError otherwise."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * int(replicas)
    )
    return [f"/cpu:{i}" for i in range(int(replicas))]


def select_strategy(tpu=None, replicas=None):
    """Return ``(strategy, kind)`` where kind is ``'tpu'``, ``'multi_worker'``,
    ``'cpu_mirrored'``, ``'gpu_mirrored'``, ``'gpu'`` or ``'cpu'``."""
    import tensorflow as tf

    if tpu:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=None if tpu == "local" else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver), "tpu"
    if os.environ.get("TF_CONFIG"):
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
        return tf.distribute.MultiWorkerMirroredStrategy(), "multi_worker"
    gpus = tf.config.list_physical_devices("GPU")
    if replicas and int(replicas) > 1 and not gpus:
        devices = configure_cpu_replicas(replicas)
        return tf.distribute.MirroredStrategy(devices), "cpu_mirrored"
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy(), "gpu_mirrored"
    return tf.distribute.get_strategy(), ("gpu" if gpus else "cpu")


def worker_role(strategy):
    """``(task_type, task_id, is_chief)`` of this process in a multi-worker cluster;
    ``(None, None, True)`` for a single process. The chief is ``chief:0``, or
    ``worker:0`` when the cluster has no ``chief`` task (TensorFlow's convention)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None) if resolver is not None else None
    if not task_type:
        return None, None, True
    task_id = int(resolver.task_id or 0)
    cluster = resolver.cluster_spec().as_dict()
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    return task_type, task_id, chief

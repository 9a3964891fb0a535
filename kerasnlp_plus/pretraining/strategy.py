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


def select_strategy(tpu=None, replicas=None, collective_timeout=None):
    """Return ``(strategy, kind)`` where kind is ``'tpu'``, ``'multi_worker'``,
    ``'cpu_mirrored'``, ``'gpu_mirrored'``, ``'gpu'`` or ``'cpu'``.

    ``collective_timeout``: seconds after which a multi-worker all-reduce that a dead
    or unreachable worker never joins fails (instead of waiting forever)."""
    import tensorflow as tf

    if tpu:
        # tpu="local" is TensorFlow's documented value on a TPU VM (the TPU is attached).
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver), "tpu"
    if os.environ.get("TF_CONFIG"):
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise ValueError(f"TF_CONFIG is not valid JSON: {e}") from e
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options), "multi_worker"
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


_WATCHER = r"""
import os, select, signal, sys
pid, timeout, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ready, _, _ = select.select([sys.stdin], [], [], timeout)
if not ready:  # neither disarmed nor closed (the worker's exit closes the pipe)
    print(message, file=sys.stderr, flush=True)
    os.kill(pid, signal.SIGKILL)  # TensorFlow handles SIGTERM itself and keeps waiting
"""


class StartupWatchdog:
    """Stop the process with a clear message when this worker has not joined the
    cluster within ``timeout`` seconds (a worker that cannot reach the others would
    otherwise wait forever in TensorFlow's connection retries). ``disarm()`` once the
    model's variables exist: creating them broadcast the chief's initial values.

    The watcher is a separate small process: while TensorFlow waits for the other
    workers it holds the GIL, so a thread of this process would never run."""

    def __init__(self, timeout, what):
        import subprocess
        import sys

        message = (f"pretrain.py: error: {what} was not joined by every worker within {float(timeout):g} s: "
                   "a worker cannot reach the others (check TF_CONFIG's addresses and ports and that every "
                   "worker was started); stopping this worker (SIGKILL)")
        self._proc = subprocess.Popen([sys.executable, "-c", _WATCHER, str(os.getpid()), str(timeout), message],
                                      stdin=subprocess.PIPE)

    def disarm(self):
        if self._proc.poll() is None:
            self._proc.stdin.write(b"ok\n")
            self._proc.stdin.close()
            self._proc.wait()


def add_strategy_args(parser):
    """The device options of a fine-tuning script (``examples/``), with the selection
    of :func:`select_strategy`: ``--replicas`` and ``--cluster-timeout``."""
    g = parser.add_argument_group("devices (the strategy selection of pretraining/pretrain.py)")
    g.add_argument("--replicas", type=int, default=None,
                   help="N logical CPU replicas + MirroredStrategy (testing on a CPU). Default: all local "
                        "GPUs (MirroredStrategy), or the cluster of TF_CONFIG (MultiWorkerMirroredStrategy)")
    g.add_argument("--cluster-timeout", type=float, default=300,
                   help="with TF_CONFIG: seconds an all-reduce waits for a dead or unreachable worker")
    return g


def strategy_from_args(args, log=print):
    """:func:`select_strategy` for the options of :func:`add_strategy_args`; logs the
    choice when there is more than one replica. Call it before any other TF op."""
    strategy, kind = select_strategy(replicas=getattr(args, "replicas", None),
                                     collective_timeout=getattr(args, "cluster_timeout", None))
    if strategy.num_replicas_in_sync > 1:
        log(f"strategy: {kind} ({strategy.num_replicas_in_sync} replicas; --batch-size is the global batch)")
    return strategy


def check_global_batch(batch_size, strategy):
    """Refuse a global batch that does not split evenly over the replicas (each
    replica must get the same number of rows for N replicas to train like one)."""
    replicas = strategy.num_replicas_in_sync
    if int(batch_size) % replicas:
        raise ValueError(f"--batch-size {batch_size} is not divisible by the {replicas} replicas")

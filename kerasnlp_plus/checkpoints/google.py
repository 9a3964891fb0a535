"""Google TF checkpoints (``bert_model.ckpt``): read with ``tf.train.load_checkpoint``,
written with ``tf.raw_ops.SaveV2`` so bert4keras-era tools and TF 1.x read them."""
import glob
import os
import tempfile

import numpy as np

from kerasnlp_plus.checkpoints.common import assign_entries
from kerasnlp_plus.utils import atomic_write_bytes
from kerasnlp_plus.checkpoints.mapping import google_entries, google_layout
from kerasnlp_plus.models.config import TransformerConfig


def resolve_checkpoint_prefix(path):
    """A checkpoint prefix from a prefix, a folder with a ``checkpoint`` file, or a
    folder holding exactly one ``*.index``."""
    import tensorflow as tf

    path = os.fspath(path)
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest and os.path.exists(latest + ".index"):
            return latest
        indexes = sorted(glob.glob(os.path.join(path, "*.index")))
        if len(indexes) == 1:
            return indexes[0][: -len(".index")]
        raise FileNotFoundError(
            f"no TF checkpoint in folder {path}: expected a 'checkpoint' file or one *.index, found {indexes}"
        )
    if path.endswith(".index"):
        path = path[: -len(".index")]
    if not os.path.exists(path + ".index"):
        raise FileNotFoundError(f"TF checkpoint not found: {path}.index does not exist")
    return path


def is_google_checkpoint(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        return bool(glob.glob(os.path.join(path, "*.index")))
    return os.path.exists(path + ".index") or path.endswith(".index")


def checkpoint_variable_names(path):
    import tensorflow as tf

    return sorted(tf.train.load_checkpoint(resolve_checkpoint_prefix(path)).get_variable_to_shape_map())


def detect_albert_layout(names):
    """'albert_brightmart' if the names are brightmart's (``layer_shared``), else 'albert'."""
    return "albert_brightmart" if any("/layer_shared/" in n for n in names) else "albert"


def load_google_checkpoint(model, path, keep_tokens=None):
    """Load a Google-format checkpoint into ``model``.

    Optimizer slots (``adam_m``/``adam_v``), ``global_step`` and variables the model
    does not use (extra pretraining heads) are ignored.
    """
    import tensorflow as tf

    prefix = resolve_checkpoint_prefix(path)
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (tf.errors.OpError, IndexError, OSError) as e:
        raise ValueError(f"cannot read checkpoint index {prefix}.index: truncated or corrupt ({e})") from None
    names = reader.get_variable_to_shape_map().keys()

    def get_tensor(name):
        # TF's reader says only "Read less bytes than requested" (IndexError) for a short
        # data file, or reports a checksum mismatch without the variable's name.
        try:
            return reader.get_tensor(name)
        except (tf.errors.OpError, IndexError, OSError) as e:
            data_files = sorted(os.path.basename(f) for f in glob.glob(glob.escape(prefix) + ".data-*"))
            raise ValueError(
                f"cannot read variable {name!r} from checkpoint {prefix} (data files {data_files}): the data "
                f"is truncated or corrupt ({type(e).__name__}: {getattr(e, 'message', e)})"
            ) from None

    assign_entries(google_entries(model), get_tensor, names, prefix, keep_tokens=keep_tokens)


def save_google_checkpoint(model, prefix, config_name=None):
    """Write ``model``'s weights as a Google-format checkpoint at ``prefix``.

    Also writes the ``checkpoint`` state file and a config JSON beside it
    (``bert_config.json`` or ``albert_config.json`` unless ``config_name`` is given),
    so ``build_transformer_model(config, prefix, model=...)`` loads it back. Every file
    is written under a temporary name and renamed, so an interrupted save leaves the
    previous checkpoint intact. Returns the prefix.
    """
    import tensorflow as tf

    prefix = os.path.abspath(os.fspath(prefix))
    folder = os.path.dirname(prefix)
    os.makedirs(folder, exist_ok=True)
    entries = google_entries(model)
    names = [e.name for e in entries]
    tensors = [e.to_checkpoint(np.asarray(e.variable.numpy())) for e in entries]
    tmp_prefix = tempfile.mkdtemp(dir=folder, prefix=".tmp-ckpt-") + "/" + os.path.basename(prefix)
    tmp_dir = os.path.dirname(tmp_prefix)
    try:
        tf.raw_ops.SaveV2(prefix=tmp_prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                          tensors=tensors)
        written = sorted(glob.glob(tmp_prefix + ".*"))
        # data shards first, the index last: a reader never sees an index without its data
        for f in sorted(written, key=lambda f: f.endswith(".index")):
            os.replace(f, prefix + f[len(tmp_prefix):])
    finally:
        for f in glob.glob(os.path.join(tmp_dir, "*")):
            os.remove(f)
        os.rmdir(tmp_dir)
    base = os.path.basename(prefix)
    state = f'model_checkpoint_path: "{base}"\nall_model_checkpoint_paths: "{base}"\n'
    atomic_write_bytes(os.path.join(folder, "checkpoint"), state.encode())
    config_name = config_name or ("albert_config.json" if model.family.startswith("albert") else "bert_config.json")
    TransformerConfig.from_model(model).write(os.path.join(folder, config_name), format="google")
    return prefix


__all__ = ["load_google_checkpoint", "save_google_checkpoint", "google_layout", "resolve_checkpoint_prefix"]

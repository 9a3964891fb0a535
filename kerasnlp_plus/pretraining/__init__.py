"""Pretraining: data preparation (masking, packing, record schema), the ``tf.data``
pipeline, strategy selection, schedule, losses and the Keras ``fit`` loop.

The command-line tools ``pretraining/prepare_data.py`` and ``pretraining/pretrain.py``
are thin wrappers around :func:`prepare` and :func:`run_pretraining`.
"""
import os

from kerasnlp_plus.pretraining.masking import (
    mask_whole_words_np,
    mask_whole_words_tf,
    plm_order_np,
    plm_order_tf,
    unilm_split_np,
)
from kerasnlp_plus.pretraining.packing import document_units, pack_documents, segment_words
from kerasnlp_plus.pretraining.preparation import load_meta, prepare
from kerasnlp_plus.pretraining.records import TASKS, example_transform, feature_names
from kerasnlp_plus.pretraining.text import BadLine, read_documents


def demo_model_path():
    """Folder of the small Chinese BERT shipped with the package (``config.json``,
    ``model.safetensors``, ``vocab.txt``, ``MODEL_CARD.md``).

    >>> from kerasnlp_plus.models import build_transformer_model
    >>> path = demo_model_path()
    >>> model = build_transformer_model(path, path, with_mlm=True)
    >>> model.count_params()
    2628369
    """
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "demo_model")


def __getattr__(name):  # the TF-heavy parts load on first use
    if name in ("make_dataset",):
        from kerasnlp_plus.pretraining import pipeline

        return getattr(pipeline, name)
    if name in ("select_strategy", "configure_cpu_replicas"):
        from kerasnlp_plus.pretraining import strategy

        return getattr(strategy, name)
    if name in ("WarmupLinearDecay",):
        from kerasnlp_plus.pretraining import schedule

        return getattr(schedule, name)
    if name in ("run_pretraining", "build_pretraining_model", "make_optimizer", "evaluate_masked", "export_model"):
        from kerasnlp_plus.pretraining import training

        return getattr(training, name)
    raise AttributeError(f"module 'kerasnlp_plus.pretraining' has no attribute {name!r}")

"""Checkpoint I/O: Google TF format and Hugging Face format, in and out."""
import os

from kerasnlp_plus.checkpoints.google import (
    checkpoint_variable_names,
    is_google_checkpoint,
    load_google_checkpoint,
    save_google_checkpoint,
)
from kerasnlp_plus.checkpoints.huggingface import (
    is_huggingface_checkpoint,
    load_huggingface_weights,
    save_huggingface,
)


def load_checkpoint(model, path, keep_tokens=None, naming=None):
    """Load Google (prefix or folder) or Hugging Face (folder or file) weights.

    ``naming`` forces ``'google'`` or ``'huggingface'``; by default the files decide.
    """
    path = os.fspath(path)
    if naming is None:
        if is_huggingface_checkpoint(path):
            naming = "huggingface"
        elif is_google_checkpoint(path):
            naming = "google"
        else:
            raise FileNotFoundError(
                f"checkpoint not found or not recognised: {path} (expected a Google TF checkpoint "
                "prefix/folder, or a Hugging Face folder / model.safetensors / pytorch_model.bin)"
            )
    if naming == "google":
        load_google_checkpoint(model, path, keep_tokens=keep_tokens)
    elif naming == "huggingface":
        load_huggingface_weights(model, path, keep_tokens=keep_tokens)
    else:
        raise ValueError(f"unknown checkpoint naming {naming!r}; known: 'google', 'huggingface'")


def has_copy_weights(path):
    """Whether a Google or Hugging Face checkpoint holds a trained copy mechanism
    (``cls/copy/...`` or ``cls.copy....``; see ``layers/copy.py``)."""
    path = os.fspath(path)
    if is_huggingface_checkpoint(path):
        from kerasnlp_plus.checkpoints.huggingface import resolve_weights_file

        weights = resolve_weights_file(path)
        if weights.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(weights, framework="numpy") as f:
                return "cls.copy.gate.weight" in f.keys()
        from kerasnlp_plus.checkpoints.huggingface import read_weights

        return "cls.copy.gate.weight" in read_weights(weights)
    if is_google_checkpoint(path):
        return "cls/copy/gate/kernel" in checkpoint_variable_names(path)
    return False


__all__ = [
    "checkpoint_variable_names",
    "has_copy_weights",
    "load_checkpoint",
    "load_google_checkpoint",
    "load_huggingface_weights",
    "save_google_checkpoint",
    "save_huggingface",
]

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


__all__ = [
    "checkpoint_variable_names",
    "load_checkpoint",
    "load_google_checkpoint",
    "load_huggingface_weights",
    "save_google_checkpoint",
    "save_huggingface",
]

"""Hugging Face BERT / RoBERTa / ALBERT weights: ``model.safetensors`` (read and
written with ``safetensors``, no torch needed) or ``pytorch_model.bin`` (needs torch)."""
import json
import os

import numpy as np

from kerasnlp_plus.checkpoints.common import assign_entries
from kerasnlp_plus.utils import atomic_write_bytes
from kerasnlp_plus.checkpoints.mapping import hf_entries
from kerasnlp_plus.models.config import TransformerConfig, huggingface_model_type

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_weights_file(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in WEIGHT_FILES:
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise FileNotFoundError(f"no Hugging Face weights ({' or '.join(WEIGHT_FILES)}) in folder {path}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Hugging Face weights file not found: {path}")
    return path


def is_huggingface_checkpoint(path):
    path = os.fspath(path)
    if os.path.isdir(path):
        return any(os.path.isfile(os.path.join(path, n)) for n in WEIGHT_FILES)
    return path.endswith((".safetensors", ".bin"))


def read_weights(path):
    """All tensors of a weights file as a dict of numpy arrays."""
    path = resolve_weights_file(path)
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors raises its own SafetensorError (an Exception)
            raise ValueError(safetensors_damage(path, e)) from None
    try:
        import torch
    except ImportError:
        raise ImportError(f"reading {path} needs torch; convert it to model.safetensors or install torch") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError) as e:  # torch's zip/pickle readers
        raise ValueError(f"cannot read PyTorch weights {path}: truncated or corrupt ({e})") from None
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}


def safetensors_damage(path, error):
    """Why ``path`` could not be read, naming the tensors whose bytes are missing.

    The format is an 8-byte little-endian header size, a JSON header giving each
    tensor's byte range in the data section, then the data; safetensors' own message
    ("incomplete metadata, file not fully covered") names no tensor.
    """
    size = os.path.getsize(path)
    prefix = f"cannot read Hugging Face weights {path} ({size} bytes): "
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return prefix + f"truncated inside the 8-byte header size ({error})"
        header_size = int.from_bytes(head, "little")
        if 8 + header_size > size:
            return prefix + f"truncated inside its {header_size}-byte JSON header ({error})"
        try:
            header = json.loads(f.read(header_size))
        except ValueError:
            return prefix + f"the JSON header is corrupt ({error})"
    available = size - 8 - header_size
    cut = sorted(
        (name for name, info in header.items()
         if name != "__metadata__" and isinstance(info, dict) and info.get("data_offsets", [0, 0])[1] > available),
        key=lambda name: header[name]["data_offsets"][0],
    )
    if cut:
        needed = max(header[n]["data_offsets"][1] for n in cut) + 8 + header_size
        return (prefix + f"truncated: {len(cut)} tensor(s) extend past the end of the file, first "
                f"{cut[0]!r} (the header needs {needed} bytes) ({error})")
    return prefix + f"corrupt ({error})"


def detect_layout(names):
    """'roberta', 'albert' or 'bert' from the tensor names."""
    if any(n.startswith("roberta.") or n.startswith("lm_head.") for n in names):
        return "roberta"
    if any("albert_layer_groups" in n for n in names):
        return "albert"
    if any(n.startswith("roformer.") for n in names):
        return "roformer"
    return "bert"


def _aliases(layout):
    prefix = f"{layout}."

    def aliases(name):
        out = []
        # pre-2019 names used TF's gamma/beta
        if name.endswith("LayerNorm.weight"):
            out.append(name[: -len("weight")] + "gamma")
        if name.endswith("LayerNorm.bias"):
            out.append(name[: -len("bias")] + "beta")
        if name.endswith("predictions.bias"):
            out.append(name[: -len("bias")] + "decoder.bias")
        # weights saved from the bare model (BertModel) have no "bert." prefix
        out += [a[len(prefix):] for a in [name] + out if a.startswith(prefix)]
        return out

    return aliases


def load_huggingface_weights(model, path, keep_tokens=None, layout=None):
    """Load a Hugging Face folder or weights file into ``model``.

    Tensors the model does not use (e.g. ``position_ids`` buffers, heads it was built
    without) are ignored.
    """
    weights = read_weights(path)
    layout = layout or detect_layout(weights)
    if model.family.startswith("albert") and layout != "albert":
        layout = "albert"
    if model.family == "roformer":
        layout = "roformer"
    assign_entries(hf_entries(model, layout), weights.__getitem__, weights.keys(), resolve_weights_file(path),
                   keep_tokens=keep_tokens, aliases=_aliases(layout))


def roformer_sinusoid_table(num_positions, head_size):
    """transformers' ``roformer.encoder.embed_positions.weight``: sin of every
    frequency in the first half, cos in the second (a fixed buffer; written so that the
    saved folder is complete)."""
    frequencies = 10000.0 ** (-2.0 * np.arange(head_size // 2) / head_size)
    angles = np.arange(num_positions)[:, None] * frequencies[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1).astype(np.float32)


def save_huggingface(model, folder, layout=None, dtype=None):
    """Write ``config.json`` and ``model.safetensors`` that ``transformers`` loads
    (``BertForPreTraining`` / ``AlbertForPreTraining`` / ``RobertaForMaskedLM`` /
    ``RoFormerForMaskedLM``).

    ``dtype='float16'`` halves the file (loading casts back to the model's dtype)."""
    from safetensors.numpy import save

    layout = layout or huggingface_model_type(model.family)
    entries = hf_entries(model, layout)
    tensors = {e.name: np.ascontiguousarray(e.to_checkpoint(np.asarray(e.variable.numpy()))) for e in entries}
    if layout == "roformer":
        tensors["roformer.encoder.embed_positions.weight"] = roformer_sinusoid_table(
            model.max_position, model.hidden_size // model.num_heads)
    if dtype is not None:
        tensors = {k: v.astype(dtype) for k, v in tensors.items()}
    os.makedirs(folder, exist_ok=True)
    atomic_write_bytes(os.path.join(folder, "model.safetensors"), save(tensors, metadata={"format": "pt"}))
    TransformerConfig.from_model(model).write(os.path.join(folder, "config.json"), format="huggingface",
                                              layout=layout)
    return folder

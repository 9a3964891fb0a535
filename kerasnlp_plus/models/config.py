"""Reading model configs: Google ``bert_config.json`` / ``albert_config.json`` and
Hugging Face ``config.json`` into :class:`Transformer` arguments."""
import json
import os

REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")

# config.json key -> Transformer argument
RENAMES = {
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "max_position_embeddings": "max_position",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "layer_norm_eps": "layer_norm_epsilon",
}
PASSTHROUGH = ("vocab_size", "hidden_size", "intermediate_size", "embedding_size", "type_vocab_size",
               "hidden_act", "initializer_range")


def resolve_config_path(config_path):
    """A config file, or the ``config.json`` / ``*config*.json`` inside a folder."""
    path = os.fspath(config_path)
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "config.json")):
            return os.path.join(path, "config.json")
        candidates = sorted(f for f in os.listdir(path) if f.endswith(".json") and "config" in f)
        if len(candidates) == 1:
            return os.path.join(path, candidates[0])
        raise FileNotFoundError(f"no model config (config.json or *config*.json) in folder {path}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model config not found: {path}")
    return path


def read_config(config_path):
    """Parse a config file; returns ``(raw_dict, transformer_kwargs)``.

    Raises a ``ValueError`` naming the file and the field when a required field is
    missing, and ``FileNotFoundError`` naming the path when it does not exist.
    """
    path = resolve_config_path(config_path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"model config {path} is not valid JSON: {e}") from None
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise ValueError(f"model config {path} is missing required field(s) {missing}")
    if raw.get("inner_group_num", 1) != 1 or raw.get("num_hidden_groups", 1) != 1:
        raise ValueError(
            f"model config {path}: ALBERT with inner_group_num={raw.get('inner_group_num')} / "
            f"num_hidden_groups={raw.get('num_hidden_groups')} is not supported (only 1 and 1, "
            "as in every released ALBERT)"
        )
    kwargs = {k: raw[k] for k in PASSTHROUGH if k in raw and raw[k] is not None}
    kwargs.update({new: raw[old] for old, new in RENAMES.items() if old in raw and raw[old] is not None})
    return raw, kwargs


def is_huggingface_config(raw):
    return "model_type" in raw or "architectures" in raw

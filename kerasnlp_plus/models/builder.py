"""``build_transformer_model``: the bert4keras entry point."""
import os

from kerasnlp_plus.models.config import read_config
from kerasnlp_plus.models.transformer import Transformer

MODELS = ("bert", "roberta", "albert", "albert_brightmart", "roformer")

# Transformer arguments a caller may override by keyword (bert4keras spellings too).
OVERRIDE_ALIASES = {
    "max_position_embeddings": "max_position",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "num_hidden_layers": "num_layers",
    "num_attention_heads": "num_heads",
    "layer_norm_eps": "layer_norm_epsilon",
    "segment_vocab_size": "type_vocab_size",
}


def _albert_family(raw_config, checkpoint_path, naming):
    """Google or brightmart ALBERT: by explicit ``naming``, else the checkpoint's variable
    names, else brightmart's config marker (``ln_type``)."""
    if naming in ("google", "brightmart"):
        return "albert" if naming == "google" else "albert_brightmart"
    if checkpoint_path is not None:
        from kerasnlp_plus.checkpoints.google import checkpoint_variable_names, detect_albert_layout
        from kerasnlp_plus.checkpoints.huggingface import is_huggingface_checkpoint

        if not is_huggingface_checkpoint(checkpoint_path):
            return detect_albert_layout(checkpoint_variable_names(checkpoint_path))
    return "albert_brightmart" if "ln_type" in raw_config else "albert"


def build_transformer_model(
    config_path=None,
    checkpoint_path=None,
    model="bert",
    application="encoder",
    with_pool=False,
    with_nsp=False,
    with_mlm=False,
    keep_tokens=None,
    hierarchical_position=None,
    return_keras_model=True,
    albert_naming=None,
    **config_overrides,
):
    """Build a BERT / RoBERTa / ALBERT model and load its checkpoint.

    Args:
        config_path: Google ``bert_config.json`` / ``albert_config.json`` or Hugging Face
            ``config.json`` (a folder works too). Optional when ``checkpoint_path`` is a
            Hugging Face folder.
        checkpoint_path: Google TF checkpoint prefix or folder; Hugging Face folder,
            ``model.safetensors`` or ``pytorch_model.bin``. ``None``: random weights.
        model: ``'bert'``, ``'roberta'``, ``'albert'`` (Google and brightmart naming
            are told apart from the checkpoint; ``'albert_brightmart'`` forces the latter)
            or ``'roformer'`` (rotary positions in every layer, no position table).
        application: ``'encoder'``, ``'lm'``, ``'unilm'`` or ``'plm'``; ``'lm'`` and
            ``'unilm'`` imply ``with_mlm=True`` (as in bert4keras).
        with_pool, with_nsp: append the pooled [CLS] vector / NSP probabilities.
        with_mlm: ``True`` MLM probabilities, ``'linear'`` logits (tied embedding).
        keep_tokens: ids to keep, in new order (vocabulary simplification): slices the
            token embedding and the MLM bias while loading.
        hierarchical_position: ``True`` (alpha 0.4) or alpha: positions up to
            ``max_position**2``.
        return_keras_model: ``False`` returns a handle whose ``.model`` is the Keras
            model (bert4keras code reads ``bert.model``); other attributes pass through.
        **config_overrides: any :class:`Transformer` argument (``dropout_rate``,
            ``max_position``, ``attention_scale='log_n'``, ``num_layers``, ...), or its
            config.json spelling.

    >>> m = build_transformer_model(None, vocab_size=100, hidden_size=8, num_hidden_layers=1,
    ...                             num_attention_heads=2, intermediate_size=16, with_mlm=True)
    >>> m.output.shape
    (None, None, 100)

    Outputs follow bert4keras: one -> it; two -> the second; more -> all but the first
    of ``[sequence, pooled?, nsp?, mlm?]`` (see :class:`Transformer`).
    """
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}; known: {MODELS}")
    if config_path is None and checkpoint_path is not None and os.path.isdir(os.fspath(checkpoint_path)):
        config_path = checkpoint_path
    raw, kwargs = ({}, {}) if config_path is None else read_config(config_path)
    for key, value in config_overrides.items():
        kwargs[OVERRIDE_ALIASES.get(key, key)] = value
    if config_path is None:
        missing = [k for k in ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")
                   if k not in kwargs]
        if missing:
            raise ValueError(f"no config_path given and these config fields were not passed: {missing}")

    if model.startswith("albert"):
        family = "albert_brightmart" if model == "albert_brightmart" else _albert_family(
            raw, checkpoint_path, albert_naming)
    else:
        family = model
    if model == "bert" and raw.get("model_type") == "roberta":
        family = "roberta"
    if model == "bert" and raw.get("model_type") == "roformer":
        family = "roformer"
    if family == "roformer" and raw.get("rotary_value"):
        raise ValueError(f"config {config_path}: rotary_value=true (rotating the values too) is not supported")
    if model in ("bert", "roberta") and raw.get("model_type") == "albert":
        raise ValueError(f"config {config_path} is an ALBERT config (model_type 'albert'); use model='albert'")
    if family == "roberta" and raw.get("model_type") == "roberta":
        # HF RoBERTa counts padding_idx + 1 reserved rows in max_position_embeddings.
        kwargs["max_position"] = kwargs.get("max_position", 514) - 2
        kwargs.setdefault("type_vocab_size", raw.get("type_vocab_size", 1))
        kwargs.setdefault("mask_token_id", raw.get("mask_token_id", 4))
    if keep_tokens is not None:
        kwargs["vocab_size"] = len(keep_tokens)

    transformer = Transformer(
        family=family,
        application=application,
        with_pool=with_pool,
        with_nsp=with_nsp,
        with_mlm=with_mlm,
        hierarchical_position=hierarchical_position,
        **kwargs,
    )
    transformer.keep_tokens = None if keep_tokens is None else list(keep_tokens)
    if checkpoint_path is not None:
        from kerasnlp_plus.checkpoints import load_checkpoint

        load_checkpoint(transformer, checkpoint_path, keep_tokens=keep_tokens)
    return transformer if return_keras_model else TransformerHandle(transformer)


class TransformerHandle:
    """What bert4keras returns with ``return_keras_model=False``: ``.model`` is the
    Keras model; any other attribute is the model's."""

    def __init__(self, model):
        self.model = model

    def __getattr__(self, name):
        return getattr(self.model, name)

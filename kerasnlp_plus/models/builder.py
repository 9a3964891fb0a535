"""``build_transformer_model``: the bert4keras entry point."""
import os

from kerasnlp_plus.models.config import FAMILIES, TransformerConfig
from kerasnlp_plus.models.transformer import Transformer


def _albert_family(config, checkpoint_path, naming):
    """Google or brightmart ALBERT: by explicit ``naming``, else the checkpoint's variable
    names, else what the config file says (brightmart's marker)."""
    if naming in ("google", "brightmart"):
        return "albert" if naming == "google" else "albert_brightmart"
    if checkpoint_path is not None:
        from kerasnlp_plus.checkpoints.google import checkpoint_variable_names, detect_albert_layout
        from kerasnlp_plus.checkpoints.huggingface import is_huggingface_checkpoint

        if not is_huggingface_checkpoint(checkpoint_path):
            return detect_albert_layout(checkpoint_variable_names(checkpoint_path))
    return "albert_brightmart" if config is not None and config.family == "albert_brightmart" else "albert"


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
        model: the architecture (bert4keras' keyword; the package calls it the
            ``family``, see :data:`~kerasnlp_plus.models.config.FAMILIES`): ``'bert'``,
            ``'roberta'``, ``'albert'`` (Google and brightmart naming are told apart from
            the checkpoint; ``'albert_brightmart'`` forces the latter) or ``'roformer'``
            (rotary positions in every layer, no position table). A Hugging Face config
            whose ``model_type`` is ``roberta`` or ``roformer`` turns ``'bert'`` into it.
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
            ``max_position``, ``attention_scale='log_n'``, ``num_layers``, ...); the
            config's fields in either spelling (``hidden_dropout_prob=0.2`` as in
            bert4keras, or ``dropout_rate=0.2``; see
            :class:`~kerasnlp_plus.models.TransformerConfig`), applied over the file.

    >>> m = build_transformer_model(None, vocab_size=100, hidden_size=8, num_hidden_layers=1,
    ...                             num_attention_heads=2, intermediate_size=16, with_mlm=True)
    >>> m.output.shape
    (None, None, 100)

    Outputs follow bert4keras: one -> it; two -> the second; more -> all but the first
    of ``[sequence, pooled?, nsp?, mlm?]`` (see :class:`Transformer`).
    """
    # ``model`` is bert4keras' keyword for the architecture; inside the package it is
    # the ``family`` (``model`` names a model object everywhere else).
    requested_family = model
    if requested_family not in FAMILIES:
        raise ValueError(f"unknown model {requested_family!r}; known: {FAMILIES}")
    if config_path is None and checkpoint_path is not None and os.path.isdir(os.fspath(checkpoint_path)):
        config_path = checkpoint_path
    config_fields, transformer_args = TransformerConfig.split_overrides(config_overrides)
    if config_path is None:
        file_config = None
        config = TransformerConfig.from_overrides(**config_fields)
    else:
        file_config = TransformerConfig.from_json_file(config_path)
        config = file_config.replace(**config_fields)
    named = file_config.family if file_config is not None else None  # what the file says it is

    if requested_family.startswith("albert"):
        family = "albert_brightmart" if requested_family == "albert_brightmart" else _albert_family(
            file_config, checkpoint_path, albert_naming)
    else:
        family = requested_family
    if requested_family == "bert" and named in ("roberta", "roformer"):
        family = named
    if requested_family in ("bert", "roberta") and named == "albert":
        raise ValueError(f"config {config_path} is an ALBERT config (model_type 'albert'); use model='albert'")
    if keep_tokens is not None:
        config = config.replace(vocab_size=len(keep_tokens))

    transformer = Transformer(
        family=family,
        application=application,
        with_pool=with_pool,
        with_nsp=with_nsp,
        with_mlm=with_mlm,
        hierarchical_position=hierarchical_position,
        **config.transformer_kwargs(),
        **transformer_args,
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

"""The one model config: :class:`TransformerConfig`, in the spirit of Google BERT's
``BertConfig``. It reads Google ``bert_config.json`` / ``albert_config.json`` (RoFormer's
too) and Hugging Face ``config.json``, takes overrides in either spelling, validates
what it holds, and writes both formats. No other module spells a config-file key.
"""
import dataclasses
import json
import numbers
import os
from typing import Callable, Optional, Union

# The model families, in the order they are documented: the architecture names
# ``build_transformer_model(model=...)`` and ``Transformer(family=...)`` accept.
FAMILIES = ("bert", "roberta", "albert", "albert_brightmart", "roformer")

# Field -> its key in bert_config.json / config.json (Google and Hugging Face spell
# them alike). Fields not listed keep their own name as the key.
FILE_KEYS = {
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "max_position": "max_position_embeddings",
    "dropout_rate": "hidden_dropout_prob",
    "attention_dropout_rate": "attention_probs_dropout_prob",
    "layer_norm_epsilon": "layer_norm_eps",
}
# Other spellings accepted in overrides: bert4keras' build_transformer_model keyword.
ALIASES = {"segment_vocab_size": "type_vocab_size"}

REQUIRED = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size")

# Hugging Face ``model_type`` of each family's layout, and the class a saved folder names.
HF_MODEL_TYPES = {"bert": "bert", "roberta": "roberta", "albert": "albert", "roformer": "roformer"}
HF_ARCHITECTURES = {"bert": "BertForPreTraining", "roberta": "RobertaForMaskedLM",
                    "albert": "AlbertForPreTraining", "roformer": "RoFormerForMaskedLM"}
# HF RoBERTa counts padding_idx + 1 reserved rows in max_position_embeddings.
ROBERTA_RESERVED_POSITIONS = 2
# The [MASK] id (read by the permutation LM) a file that does not give one implies:
# BERT vocabularies' 103, RoBERTa's <mask> at 4 in fairseq-style vocabularies.
BERT_MASK_TOKEN_ID = 103
ROBERTA_MASK_TOKEN_ID = 4
# brightmart's albert_config.json marker (its layer-norm placement), which Google's lacks.
BRIGHTMART_MARKER = "ln_type"


def huggingface_model_type(family):
    """The Hugging Face layout a family is stored in (brightmart ALBERT: Google's)."""
    return "albert" if family.startswith("albert") else HF_MODEL_TYPES.get(family, "bert")


def file_key(field):
    """The config-file spelling of a :class:`TransformerConfig` field."""
    return FILE_KEYS.get(field, field)


def field_name(key):
    """The :class:`TransformerConfig` field a field name, file key or alias names, or None."""
    if key in _FIELD_NAMES:
        return key
    return _FROM_FILE_KEY.get(key) or ALIASES.get(key)


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


@dataclasses.dataclass
class TransformerConfig:
    """The size and regularization of a BERT-family model, as its config file gives them.

    Field names are :class:`~kerasnlp_plus.models.Transformer`'s arguments; each has one
    config-file key (``num_layers`` is ``num_hidden_layers``, see :data:`FILE_KEYS`),
    and every method that takes names accepts either spelling.

    ``family`` is the family the file names: Hugging Face's ``model_type``, brightmart's
    ALBERT marker, or None where the file does not say (a Google ``bert_config.json``
    serves BERT, RoBERTa and RoFormer alike). ``source`` is the file read, quoted in errors.

    >>> c = TransformerConfig(vocab_size=100, hidden_size=8, num_layers=1, num_heads=2,
    ...                       intermediate_size=16).replace(hidden_dropout_prob=0.0)
    >>> c.dropout_rate, c.to_google_dict()["num_hidden_layers"]
    (0.0, 1)
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    embedding_size: Optional[int] = None  # ALBERT's factorized embedding; None: hidden_size
    max_position: int = 512
    type_vocab_size: int = 2
    hidden_act: Union[str, Callable] = "gelu"
    dropout_rate: float = 0.1  # embeddings and residual branches (hidden_dropout_prob)
    attention_dropout_rate: float = 0.1  # attention probabilities
    layer_norm_epsilon: float = 1e-12
    initializer_range: float = 0.02
    mask_token_id: int = BERT_MASK_TOKEN_ID  # the permutation-LM query stream's input token
    family: Optional[str] = None
    source: Optional[str] = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self):
        where = "model config" if self.source is None else f"model config {self.source}"
        for f in dataclasses.fields(self):
            if f.name != "source":
                setattr(self, f.name, _checked(f.name, getattr(self, f.name), where))
        if self.hidden_size % self.num_heads:
            raise ValueError(f"{where}: hidden_size {self.hidden_size} is not divisible by "
                             f"{file_key('num_heads')} {self.num_heads}")

    # --- reading ---------------------------------------------------------------------
    @classmethod
    def from_json_file(cls, path):
        """Read a Google or Hugging Face config file (or the one in a folder)."""
        path = resolve_config_path(path)
        try:
            with open(path, encoding="utf-8") as f:
                raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"model config {path} is not valid JSON: {e}") from None
        return cls.from_dict(raw, source=path)

    @classmethod
    def from_dict(cls, raw, source=None):
        """A config from the content of a config file (keys in the file's spelling).

        Raises a ``ValueError`` naming ``source`` and the key when a required key is
        missing or a value is out of range, or the file describes something unsupported.
        """
        where = "model config" if source is None else f"model config {source}"
        if not isinstance(raw, dict):
            raise ValueError(f"{where} must hold a JSON object, got {type(raw).__name__}")
        missing = [file_key(k) for k in REQUIRED if raw.get(file_key(k)) is None]
        if missing:
            raise ValueError(f"{where} is missing required field(s) {missing}")
        if raw.get("inner_group_num", 1) != 1 or raw.get("num_hidden_groups", 1) != 1:
            raise ValueError(
                f"{where}: ALBERT with inner_group_num={raw.get('inner_group_num')} / "
                f"num_hidden_groups={raw.get('num_hidden_groups')} is not supported (only 1 and 1, "
                "as in every released ALBERT)"
            )
        if raw.get("rotary_value"):
            raise ValueError(f"{where}: rotary_value=true (rotating the values too) is not supported")
        values = {f: raw[file_key(f)] for f in _FIELD_NAMES if raw.get(file_key(f)) is not None}
        model_type = raw.get("model_type")
        values.pop("family", None)
        if model_type in HF_MODEL_TYPES:
            values["family"] = model_type
        elif BRIGHTMART_MARKER in raw:
            values["family"] = "albert_brightmart"
        if model_type == "roberta":
            if "max_position" in values:
                values["max_position"] = values["max_position"] - ROBERTA_RESERVED_POSITIONS
            values.setdefault("type_vocab_size", 1)
            values.setdefault("mask_token_id", ROBERTA_MASK_TOKEN_ID)
        return cls(**values, source=None if source is None else os.fspath(source))

    @classmethod
    def from_model(cls, model):
        """The config of a built :class:`~kerasnlp_plus.models.Transformer`."""
        return cls(**{f: getattr(model, f) for f in _FIELD_NAMES})

    # --- overrides -------------------------------------------------------------------
    @classmethod
    def split_overrides(cls, overrides):
        """``(config_fields, rest)``: the keywords that name a config field (either
        spelling), by field name, and the others (other :class:`Transformer` arguments)."""
        fields, rest = {}, {}
        for key, value in overrides.items():
            name = field_name(key)
            if name is None or name == "family":
                rest[key] = value
            elif name in fields:
                raise ValueError(f"config field {name} given twice (as {key!r} and another spelling)")
            else:
                fields[name] = value
        return fields, rest

    @classmethod
    def from_overrides(cls, **overrides):
        """A config from keywords alone (no file), in either spelling."""
        fields, rest = cls.split_overrides(overrides)
        if rest:
            raise TypeError(f"not config fields: {sorted(rest)}")
        missing = [k for k in REQUIRED if k not in fields]
        if missing:
            raise ValueError("no config_path given and these config fields were not passed: "
                             + ", ".join(f"{k} ({file_key(k)})" if file_key(k) != k else k for k in missing))
        return cls(**fields)

    def replace(self, **overrides):
        """A copy with ``overrides`` (field names or file keys) applied; an unknown name
        is a ``TypeError``, a bad value a ``ValueError`` naming the override."""
        fields, rest = self.split_overrides(overrides)
        if rest:
            raise TypeError(f"not config fields: {sorted(rest)}")
        for name, value in fields.items():
            _checked(name, value, "override")
        return dataclasses.replace(self, **fields)

    def transformer_kwargs(self):
        """The :class:`Transformer` arguments this config sets (all but ``family``)."""
        return {f: getattr(self, f) for f in _FIELD_NAMES if f != "family"}

    # --- writing ---------------------------------------------------------------------
    def _common_dict(self, implied_mask_token_id=BERT_MASK_TOKEN_ID):
        config = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            file_key("num_layers"): self.num_layers,
            file_key("num_heads"): self.num_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            file_key("dropout_rate"): self.dropout_rate,
            file_key("attention_dropout_rate"): self.attention_dropout_rate,
            file_key("max_position"): self.max_position,
            "type_vocab_size": self.type_vocab_size,
            "initializer_range": self.initializer_range,
            file_key("layer_norm_epsilon"): self.layer_norm_epsilon,
        }
        if self.mask_token_id != implied_mask_token_id:  # written only where reading would lose it
            config["mask_token_id"] = self.mask_token_id
        return config

    def _embedding_size(self):
        return self.embedding_size or self.hidden_size

    def to_google_dict(self):
        """The ``bert_config.json`` / ``albert_config.json`` content."""
        config = self._common_dict()
        family = self.family or "bert"
        if family.startswith("albert"):
            config.update(embedding_size=self._embedding_size(), num_hidden_groups=1, inner_group_num=1)
        if family == "albert_brightmart":
            config[BRIGHTMART_MARKER] = "postln"  # what tells brightmart's layout apart on reading
        return config

    def to_huggingface_dict(self, layout=None):
        """The ``config.json`` content ``transformers`` reads, in ``layout`` (a Hugging
        Face ``model_type``; default: the family's)."""
        layout = layout or huggingface_model_type(self.family or "bert")
        if layout not in HF_MODEL_TYPES:
            raise ValueError(f"unknown Hugging Face layout {layout!r}; known: {tuple(HF_MODEL_TYPES)}")
        implied = ROBERTA_MASK_TOKEN_ID if layout == "roberta" else BERT_MASK_TOKEN_ID
        config = {"architectures": [HF_ARCHITECTURES[layout]], "model_type": layout, **self._common_dict(implied)}
        if layout == "roberta":
            config[file_key("max_position")] = self.max_position + ROBERTA_RESERVED_POSITIONS
        config["pad_token_id"] = 1 if layout == "roberta" else 0
        if layout == "albert":
            config.update(embedding_size=self._embedding_size(), num_hidden_groups=1, inner_group_num=1)
        if layout == "roformer":
            config.update(embedding_size=self._embedding_size(), rotary_value=False)
        return config

    def to_json_string(self, format="google", layout=None):
        if format == "google":
            config = self.to_google_dict()
        elif format == "huggingface":
            config = self.to_huggingface_dict(layout)
        else:
            raise ValueError(f"unknown config format {format!r}; known: 'google', 'huggingface'")
        return json.dumps(config, indent=2, ensure_ascii=False)

    def write(self, path, format="google", layout=None):
        """Write the config file (atomically): ``format='google'`` or ``'huggingface'``."""
        from kerasnlp_plus.utils import atomic_write_text

        atomic_write_text(os.fspath(path), self.to_json_string(format, layout))
        return path


_FIELD_NAMES = tuple(f.name for f in dataclasses.fields(TransformerConfig) if f.name != "source")
_FROM_FILE_KEY = {v: k for k, v in FILE_KEYS.items()}
_POSITIVE_INTS = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position",
                  "type_vocab_size")
_RATES = ("dropout_rate", "attention_dropout_rate")


def _checked(name, value, where):
    """``value`` as field ``name`` holds it, or a ``ValueError`` naming ``where`` and
    the key (in the file's spelling, with the field name where they differ)."""
    key = file_key(name) if where != "override" else name
    label = key if key == name else f"{key} ({name})"

    def bad(expected):
        return ValueError(f"{where}: {label} must be {expected}, got {value!r}")

    is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    is_real = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if name in _POSITIVE_INTS or (name == "embedding_size" and value is not None):
        if not is_int or value < 1:
            raise bad("a positive int")
        return int(value)
    if name == "mask_token_id":
        if not is_int or value < 0:
            raise bad("an int >= 0")
        return int(value)
    if name in _RATES:
        if not is_real or not 0 <= value < 1:
            raise bad("a rate in [0, 1)")
        return float(value)
    if name == "layer_norm_epsilon":
        if not is_real or value <= 0:
            raise bad("a positive number")
        return float(value)
    if name == "initializer_range":
        if not is_real or value < 0:
            raise bad("a number >= 0")
        return float(value)
    if name == "hidden_act":
        from kerasnlp_plus.layers.transformer import ACTIVATIONS

        if not callable(value) and value not in ACTIVATIONS:
            raise bad(f"one of {sorted(ACTIVATIONS)}")
        return value
    if name == "family":
        if value is not None and value not in FAMILIES:
            raise bad(f"one of {FAMILIES}")
        return value
    return value

"""The one name mapping between our layers and checkpoint variables.

Each :class:`Entry` ties a Keras variable to its name in a checkpoint layout and says
how to convert the array (transpose for PyTorch ``Linear`` weights, skipped leading
rows for RoBERTa's offset positions, vocabulary rows for ``keep_tokens``). Google and
Hugging Face loaders and savers all read these lists, so a layout is defined once.
"""
import dataclasses

import numpy as np

from kerasnlp_plus.models.config import HF_MODEL_TYPES

GOOGLE_LAYOUTS = ("bert", "albert", "albert_brightmart")
HF_LAYOUTS = tuple(HF_MODEL_TYPES)


@dataclasses.dataclass
class Entry:
    variable: object  # keras.Variable
    name: str
    transpose: bool = False
    row_offset: int = 0  # rows of the checkpoint array that precede ours (RoBERTa positions)
    vocab_rows: bool = False  # rows indexed by token id: keep_tokens selects them
    optional: bool = False  # a head no standard checkpoint has (the copy mechanism): kept as built if absent

    def to_model(self, array, keep_tokens=None):
        """Checkpoint array -> the value our variable takes."""
        array = np.asarray(array)
        if self.transpose:
            array = array.T
        if self.row_offset:
            array = array[self.row_offset :]
        if self.vocab_rows and keep_tokens is not None:
            array = array[np.asarray(keep_tokens)]
        return array

    def to_checkpoint(self, array):
        """Our variable's value -> the checkpoint array."""
        array = np.asarray(array)
        if self.row_offset:
            pad = np.zeros((self.row_offset,) + array.shape[1:], dtype=array.dtype)
            array = np.concatenate([pad, array], axis=0)
        return array.T if self.transpose else array


def _dense(entries, layer, name, kernel_transpose=False, kernel="kernel", bias="bias", sep="/"):
    entries.append(Entry(layer.kernel, f"{name}{sep}{kernel}", transpose=kernel_transpose))
    if layer.use_bias:
        entries.append(Entry(layer.bias, f"{name}{sep}{bias}"))


def _norm(entries, layer, name, gamma="gamma", beta="beta", sep="/"):
    entries.append(Entry(layer.gamma, f"{name}{sep}{gamma}"))
    entries.append(Entry(layer.beta, f"{name}{sep}{beta}"))


def _copy_entries(entries, model, prefix, sep, transpose, kernel, bias):
    """The copy mechanism's variables (``layers/copy.py``), optional: a checkpoint
    without them (any standard one) leaves the freshly initialized pointer."""
    copy = getattr(model, "copy_mechanism", None)
    if copy is None:
        return
    for part in ("query", "key", "gate", "continuation"):
        entries.append(Entry(getattr(copy, f"{part}_kernel"), f"{prefix}{sep}{part}{sep}{kernel}",
                             transpose=transpose, optional=True))
        entries.append(Entry(getattr(copy, f"{part}_bias"), f"{prefix}{sep}{part}{sep}{bias}", optional=True))


def google_layout(model):
    """The Google layout a model's family is stored in."""
    # RoFormer checkpoints (bert4keras, ZhuiyiTechnology) use the BERT names, less the
    # position table.
    return {"bert": "bert", "roberta": "bert", "roformer": "bert"}.get(model.family, model.family)


def google_entries(model):
    """Entries in Google TF naming (``bert/...``, ``cls/...``)."""
    layout = google_layout(model)
    e = []
    e.append(Entry(model.token_embedding.embeddings, "bert/embeddings/word_embeddings", vocab_rows=True))
    if layout == "albert_brightmart":
        e.append(Entry(model.token_mapping.kernel, "bert/embeddings/word_embeddings_2"))
    e.append(Entry(model.segment_embedding.embeddings, "bert/embeddings/token_type_embeddings"))
    if model.position_embedding is not None:
        e.append(Entry(model.position_embedding.embeddings, "bert/embeddings/position_embeddings"))
    _norm(e, model.embedding_norm, "bert/embeddings/LayerNorm")
    if model.embedding_mapping is not None:
        _dense(e, model.embedding_mapping, "bert/encoder/embedding_hidden_mapping_in")
    for i, block in enumerate(model.transformer_blocks):
        att = block.attention
        if layout == "albert":
            p = "bert/encoder/transformer/group_0/inner_group_0/"
            names = ("attention_1/self/", "attention_1/output/dense", "LayerNorm",
                     "ffn_1/intermediate/dense", "ffn_1/intermediate/output/dense", "LayerNorm_1")
        else:
            p = "bert/encoder/layer_shared/" if layout == "albert_brightmart" else f"bert/encoder/layer_{i}/"
            names = ("attention/self/", "attention/output/dense", "attention/output/LayerNorm",
                     "intermediate/dense", "output/dense", "output/LayerNorm")
        for proj in ("query", "key", "value"):
            _dense(e, getattr(att, f"{proj}_dense"), p + names[0] + proj)
        _dense(e, att.output_dense, p + names[1])
        _norm(e, block.attention_norm, p + names[2])
        _dense(e, block.intermediate_dense, p + names[3])
        _dense(e, block.output_dense, p + names[4])
        _norm(e, block.output_norm, p + names[5])
    if model.pooler_dense is not None:
        _dense(e, model.pooler_dense, "bert/pooler/dense")
    if model.nsp_dense is not None:
        _dense(e, model.nsp_dense, "cls/seq_relationship", kernel_transpose=True,
               kernel="output_weights", bias="output_bias")
    if model.mlm_dense is not None:
        _dense(e, model.mlm_dense, "cls/predictions/transform/dense")
        _norm(e, model.mlm_norm, "cls/predictions/transform/LayerNorm")
        e.append(Entry(model.mlm_bias.bias, "cls/predictions/output_bias", vocab_rows=True))
    _copy_entries(e, model, "cls/copy", "/", False, "kernel", "bias")
    return e


def hf_entries(model, layout):
    """Entries in Hugging Face naming for ``layout`` in ``('bert', 'roberta', 'albert')``."""
    if layout not in HF_LAYOUTS:
        raise ValueError(f"unknown Hugging Face layout {layout!r}; known: {HF_LAYOUTS}")
    if model.family == "albert_brightmart":
        raise ValueError("brightmart ALBERT has no Hugging Face layout; save it in Google format")
    if (layout == "albert") != model.family.startswith("albert"):
        raise ValueError(f"a {model.family} model cannot use the Hugging Face {layout} layout")
    if (layout == "roformer") != (model.family == "roformer"):
        raise ValueError(f"a {model.family} model cannot use the Hugging Face {layout} layout")
    dense = lambda layer, name: _dense(e, layer, name, True, "weight", "bias", ".")  # noqa: E731
    norm = lambda layer, name: _norm(e, layer, name, "weight", "bias", ".")  # noqa: E731
    p = f"{layout}."
    e = []
    e.append(Entry(model.token_embedding.embeddings, p + "embeddings.word_embeddings.weight", vocab_rows=True))
    e.append(Entry(model.segment_embedding.embeddings, p + "embeddings.token_type_embeddings.weight"))
    # RoBERTa numbers positions from padding_idx + 1 = 2. RoFormer has no table (its
    # encoder.embed_positions is a fixed sinusoid buffer, written by the saver).
    if model.position_embedding is not None:
        e.append(Entry(model.position_embedding.embeddings, p + "embeddings.position_embeddings.weight",
                       row_offset=2 if layout == "roberta" else 0))
    norm(model.embedding_norm, p + "embeddings.LayerNorm")
    if model.embedding_mapping is not None:
        dense(model.embedding_mapping, p + ("embeddings_project" if layout == "roformer"
                                            else "encoder.embedding_hidden_mapping_in"))
    for i, block in enumerate(model.transformer_blocks):
        att = block.attention
        if layout == "albert":
            q = p + "encoder.albert_layer_groups.0.albert_layers.0."
            names = ("attention.", "attention.dense", "attention.LayerNorm", "ffn", "ffn_output",
                     "full_layer_layer_norm")
        else:
            q = p + f"encoder.layer.{i}."
            names = ("attention.self.", "attention.output.dense", "attention.output.LayerNorm",
                     "intermediate.dense", "output.dense", "output.LayerNorm")
        for proj in ("query", "key", "value"):
            dense(getattr(att, f"{proj}_dense"), q + names[0] + proj)
        dense(att.output_dense, q + names[1])
        norm(block.attention_norm, q + names[2])
        dense(block.intermediate_dense, q + names[3])
        dense(block.output_dense, q + names[4])
        norm(block.output_norm, q + names[5])
    if model.pooler_dense is not None:
        if layout == "roformer":
            raise ValueError("Hugging Face RoFormer checkpoints have no pooler; build with with_pool=False "
                             "or use a Google/bert4keras RoFormer checkpoint")
        dense(model.pooler_dense, p + ("pooler" if layout == "albert" else "pooler.dense"))
    if model.nsp_dense is not None:
        if layout in ("roberta", "roformer"):
            raise ValueError(f"Hugging Face {layout} checkpoints have no next-sentence head; build with with_nsp=False")
        dense(model.nsp_dense, "sop_classifier.classifier" if layout == "albert" else "cls.seq_relationship")
    if model.mlm_dense is not None:
        head = {"bert": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm", "cls.predictions.bias"),
                "roformer": ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                             "cls.predictions.bias"),
                "roberta": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias"),
                "albert": ("predictions.dense", "predictions.LayerNorm", "predictions.bias")}[layout]
        dense(model.mlm_dense, head[0])
        norm(model.mlm_norm, head[1])
        e.append(Entry(model.mlm_bias.bias, head[2], vocab_rows=True))
    _copy_entries(e, model, "cls.copy", ".", True, "weight", "bias")
    return e

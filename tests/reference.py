"""Test helpers: random Google checkpoints under real names, and the independent
reference (Hugging Face transformers on PyTorch) loaded with the same weights.

The Google -> Hugging Face name map here is written by hand from the published rule
(layer_N -> layer.N, kernel -> weight transposed, gamma/beta -> weight/bias, ...), on
purpose not reusing kerasnlp_plus' own mapping, so the two can disagree.
"""
import json
import os
import re

import numpy as np


def read_manifest(path):
    """``variables.tsv`` -> list of (name, dtype, shape)."""
    out = []
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        name, dtype, shape = line.rstrip("\n").split("\t")
        shape = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
        out.append((name, dtype, shape))
    return out


def scale_manifest(variables, dims):
    """Replace dimensions by ``dims`` (e.g. {768: 32, 3072: 64}) to keep tests small."""
    return [(n, d, [dims.get(s, s) for s in shape]) for n, d, shape in variables]


def write_google_checkpoint(variables, prefix, seed=0, std=0.2):
    """Random weights under exactly these names and shapes, via ``tf.raw_ops.SaveV2``.
    LayerNorm gammas are drawn around 1 so activations keep a healthy scale."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    names, tensors = [], []
    for name, dtype, shape in variables:
        if dtype.startswith("int"):
            value = np.array(12345, dtype=np.int64).reshape(shape)
        elif name.split("/")[-1] == "gamma" or "/gamma/" in name:
            value = (1.0 + std * rng.standard_normal(shape)).astype(np.float32)
        else:
            value = (std * rng.standard_normal(shape)).astype(np.float32)
        names.append(name)
        tensors.append(value)
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)
    with open(os.path.join(os.path.dirname(prefix), "checkpoint"), "w") as f:
        f.write(f'model_checkpoint_path: "{os.path.basename(prefix)}"\n')
    return dict(zip(names, tensors))


def write_config(path, **config):
    with open(path, "w") as f:
        json.dump(config, f)
    return path


def _google_to_hf_bert(name):
    n = name.replace("bert/", "bert.", 1) if name.startswith("bert/") else name
    n = re.sub(r"layer_(\d+)", r"layer.\1", n).replace("/", ".")
    n = n.replace(".gamma", ".weight").replace(".beta", ".bias").replace(".kernel", ".weight")
    n = n.replace("cls.predictions.output_bias", "cls.predictions.bias")
    n = n.replace("cls.seq_relationship.output_weights", "cls.seq_relationship.weight")
    n = n.replace("cls.seq_relationship.output_bias", "cls.seq_relationship.bias")
    n = n.replace(".embeddings.word_embeddings", ".embeddings.word_embeddings.weight")
    n = n.replace(".embeddings.token_type_embeddings", ".embeddings.token_type_embeddings.weight")
    n = n.replace(".embeddings.position_embeddings", ".embeddings.position_embeddings.weight")
    return n


ALBERT_RENAMES = [
    ("bert/embeddings/", "albert.embeddings."),
    ("bert/encoder/embedding_hidden_mapping_in/", "albert.encoder.embedding_hidden_mapping_in."),
    ("bert/encoder/transformer/group_0/inner_group_0/attention_1/self/", "albert.encoder.albert_layer_groups.0.albert_layers.0.attention."),
    ("bert/encoder/transformer/group_0/inner_group_0/attention_1/output/dense/", "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.dense."),
    ("bert/encoder/transformer/group_0/inner_group_0/LayerNorm_1/", "albert.encoder.albert_layer_groups.0.albert_layers.0.full_layer_layer_norm."),
    ("bert/encoder/transformer/group_0/inner_group_0/LayerNorm/", "albert.encoder.albert_layer_groups.0.albert_layers.0.attention.LayerNorm."),
    ("bert/encoder/transformer/group_0/inner_group_0/ffn_1/intermediate/output/dense/", "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn_output."),
    ("bert/encoder/transformer/group_0/inner_group_0/ffn_1/intermediate/dense/", "albert.encoder.albert_layer_groups.0.albert_layers.0.ffn."),
    ("bert/pooler/dense/", "albert.pooler."),
    ("cls/predictions/transform/dense/", "predictions.dense."),
    ("cls/predictions/transform/LayerNorm/", "predictions.LayerNorm."),
    ("cls/predictions/output_bias", "predictions.bias"),
    ("cls/seq_relationship/output_weights", "sop_classifier.classifier.weight"),
    ("cls/seq_relationship/output_bias", "sop_classifier.classifier.bias"),
]


def _google_to_hf_albert(name):
    for old, new in ALBERT_RENAMES:
        if name.startswith(old):
            n = new + name[len(old):].replace("/", ".")
            break
    else:
        return None
    n = n.replace("gamma", "weight").replace("beta", "bias").replace("kernel", "weight")
    for emb in ("word_embeddings", "token_type_embeddings", "position_embeddings"):
        if n.endswith(emb):
            n += ".weight"
    return n


def hf_reference(weights, config, kind="bert"):
    """A transformers ``BertForPreTraining`` / ``AlbertForPreTraining`` holding
    ``weights`` (Google names -> arrays), in eval mode."""
    import torch
    import transformers

    if kind == "bert":
        model = transformers.BertForPreTraining(transformers.BertConfig(**config))
        rename = _google_to_hf_bert
    else:
        model = transformers.AlbertForPreTraining(transformers.AlbertConfig(**config))
        rename = _google_to_hf_albert
    state = model.state_dict()
    loaded = set()
    for name, value in weights.items():
        hf = rename(name)
        if hf is None or hf not in state:
            continue
        value = np.asarray(value)
        if name.endswith("kernel"):
            value = value.T  # TF Dense (in, out) -> torch Linear (out, in); output_weights is already (out, in)
        state[hf] = torch.from_numpy(np.ascontiguousarray(value))
        loaded.add(hf)
    missing = [k for k in state if k not in loaded and "position_ids" not in k and "decoder" not in k
               and "token_type_ids" not in k]
    assert not missing, f"reference model weights not set: {missing}"
    model.load_state_dict(state)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.eval()


def additive_mask(visible):
    """bool (batch, q, k) -> transformers 5.x 4-D float additive mask (0 / finfo.min)."""
    import torch

    visible = torch.as_tensor(np.asarray(visible, dtype=bool))
    mask = torch.zeros(visible.shape, dtype=torch.float32)
    mask[~visible] = torch.finfo(torch.float32).min
    return mask[:, None]


def hf_forward(model, token_ids, segment_ids, visible, kind="bert"):
    """(sequence, pooled, mlm_logits, nsp_logits) as numpy, from the reference."""
    import torch

    with torch.no_grad():
        backbone = model.bert if kind == "bert" else model.albert
        out = backbone(
            input_ids=torch.as_tensor(np.asarray(token_ids, dtype=np.int64)),
            token_type_ids=torch.as_tensor(np.asarray(segment_ids, dtype=np.int64)),
            attention_mask=additive_mask(visible),
        )
        seq, pooled = out[0], out[1]
        if kind == "bert":
            mlm, nsp = model.cls(seq, pooled)
        else:
            mlm, nsp = model.predictions(seq), model.sop_classifier(pooled)
    return seq.numpy(), pooled.numpy(), mlm.numpy(), nsp.numpy()

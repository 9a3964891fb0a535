"""Runs bert4keras 0.11.5 (on tf_keras) on the inputs in ``argv[1]`` (an .npz) and
writes its outputs to ``argv[2]`` (an .npz). Started by tests/test_bert4keras_compat.py
in a separate process with ``TF_KERAS=1 TF_USE_LEGACY_KERAS=1`` and a PYTHONPATH that
holds bert4keras and tf_keras, so Keras 2 never meets the Keras 3 of the tests."""
import json
import sys

import numpy as np

from bert4keras.backend import K, batch_gather, keras, multilabel_categorical_crossentropy, piecewise_linear
from bert4keras.backend import sequence_masking, sparse_multilabel_categorical_crossentropy
from bert4keras.layers import ConditionalRandomField, LayerNormalization
from bert4keras.snippets import ViterbiDecoder, longest_common_subsequence, longest_common_substring
from bert4keras.snippets import sequence_padding, text_segmentate, truncate_sequences

inputs = dict(np.load(sys.argv[1]))
out = {}

# CRF: loss and accuracy with the given transitions on masked scores
scores, labels, mask = inputs["crf_scores"], inputs["crf_labels"], inputs["crf_mask"]
crf = ConditionalRandomField(lr_multiplier=1)
x = keras.layers.Input((None, scores.shape[-1]))
m = keras.layers.Masking(mask_value=0.0)(x)  # masks the all-zero (padded) rows
model = keras.models.Model(x, crf(m))
K.set_value(crf._trans, inputs["crf_trans"])
masked_scores = scores * mask[..., None]
y_pred = model.predict(masked_scores, verbose=0)
out["crf_y_pred"] = np.where(np.isinf(y_pred), -1e30, y_pred)
out["crf_sparse_loss"] = K.eval(crf.sparse_loss(K.constant(labels), K.constant(y_pred)))
out["crf_sparse_accuracy"] = K.eval(crf.sparse_accuracy(K.constant(labels), K.constant(y_pred)))
out["viterbi"] = np.array([
    ViterbiDecoder(inputs["crf_trans"], starts=[0], ends=[0]).decode(scores[b, : int(mask[b].sum())].copy())
    for b in range(1)
])

# conditional LayerNormalization with the given weights
ln = LayerNormalization(conditional=True, hidden_units=4, hidden_initializer="glorot_uniform")
xi, ci = keras.layers.Input((None, 6)), keras.layers.Input((5,))
ln_model = keras.models.Model([xi, ci], ln([xi, ci]))
ln.set_weights([inputs[f"ln_w{i}"] for i in range(len(ln.get_weights()))])
out["ln"] = ln_model.predict([inputs["ln_x"], inputs["ln_c"]], verbose=0)

# backend functions
out["sequence_masking"] = K.eval(sequence_masking(K.constant(inputs["sm_x"]), K.constant(inputs["sm_mask"]), -1e4, 1))
out["sequence_masking_axes"] = K.eval(
    sequence_masking(K.constant(inputs["sm_x3"]), K.constant(inputs["sm_mask"]), -1e4, [1, 2]))
out["piecewise_linear"] = np.array([
    K.eval(piecewise_linear(K.constant(float(t)), {1000: 1, 2000: 0.1})) for t in inputs["pl_t"]])
out["batch_gather"] = K.eval(batch_gather(K.constant(inputs["bg_params"]), K.constant(inputs["bg_idx"], "int32")))
out["mcce"] = K.eval(multilabel_categorical_crossentropy(K.constant(inputs["ml_true"]), K.constant(inputs["ml_pred"])))
out["smcce"] = K.eval(sparse_multilabel_categorical_crossentropy(
    K.constant(inputs["sml_true"], "int32"), K.constant(inputs["ml_pred"])))

# snippets
text = str(inputs["text"])
out["text_segmentate"] = np.array(json.dumps(text_segmentate(text, 12, "\n。！？，", "，")))
seqs = [[1, 2, 3, 4, 5], [6, 7, 8]]
out["truncate"] = np.array(json.dumps(truncate_sequences(5, -1, *[list(s) for s in seqs])))
out["lcs_substring"] = np.array(json.dumps(longest_common_substring("我爱北京天安门", "北京天安门广场")))
out["lcs_subsequence_len"] = np.array(longest_common_subsequence("科学技术是生产力", "科技是第一生产力")[0])
out["padding"] = sequence_padding([[1, 2, 3], [4]], length=2, mode="pre")

# GlobalPointer / EfficientGlobalPointer on masked inputs, with the given weights
from bert4keras.layers import EfficientGlobalPointer, GlobalAveragePooling1D, GlobalMaxPooling1D  # noqa: E402
from bert4keras.layers import GlobalPointer, MaximumEntropyMarkovModel, ScaleOffset  # noqa: E402


def masked_model(layer, x):
    xi = keras.layers.Input((None, x.shape[-1]))
    model = keras.models.Model(xi, layer(keras.layers.Masking(0.0)(xi)))
    return model


def finite(y):
    return np.where(np.isinf(y), np.sign(y) * 1e30, y)


gp_x = inputs["gp_x"]
for name, layer in (("gp", GlobalPointer(2, 4)), ("gp_norope", GlobalPointer(2, 4, RoPE=False, tril_mask=False)),
                    ("egp", EfficientGlobalPointer(2, 4))):
    model = masked_model(layer, gp_x)
    layer.set_weights([inputs[f"{name.split('_')[0]}_w{i}"] for i in range(len(layer.get_weights()))])
    out[name] = finite(model.predict(gp_x, verbose=0))

# MEMM (full and low-rank transitions): outputs, losses, accuracies
for name, memm, weights in (("memm", MaximumEntropyMarkovModel(lr_multiplier=1), [inputs["crf_trans"]]),
                            ("memm_lowrank", MaximumEntropyMarkovModel(lr_multiplier=2, hidden_dim=2),
                             [inputs["memm_l"], inputs["memm_r"]])):
    model = masked_model(memm, scores)
    memm.set_weights([w / memm.lr_multiplier for w in weights])
    y = model.predict(masked_scores, verbose=0)
    out[f"{name}_sparse_loss"] = K.eval(memm.sparse_loss(K.constant(labels), K.constant(y)))
    out[f"{name}_sparse_accuracy"] = K.eval(memm.sparse_accuracy(K.constant(labels), K.constant(y)))
    onehot = np.eye(scores.shape[-1])[labels.astype(int)]
    out[f"{name}_dense_loss"] = K.eval(memm.dense_loss(K.constant(onehot), K.constant(y)))

# masked poolings and ScaleOffset
out["gap"] = masked_model(GlobalAveragePooling1D(), gp_x).predict(gp_x, verbose=0)
out["gmp"] = masked_model(GlobalMaxPooling1D(), gp_x).predict(gp_x, verbose=0)
so = ScaleOffset()
so_model = masked_model(so, gp_x)
so.set_weights([inputs["so_beta"], inputs["so_gamma"]])
out["scale_offset"] = so_model.predict(gp_x, verbose=0)

# Embedding (lookup, its mask, mode='dense'), Concatenate1D's mask, sinusoidal positions, FeedForward
from bert4keras.layers import Concatenate1D, Embedding, FeedForward, SinusoidalPositionEmbedding  # noqa: E402

ids_in = keras.layers.Input((None,))
emb = Embedding(6, 4, mask_zero=True)
looked_up = emb(ids_in)
dense_out = emb(keras.layers.Input((None, 4)), mode="dense")
emb_model = keras.models.Model(ids_in, [looked_up, emb.compute_mask(ids_in)])
emb.set_weights([inputs["emb_table"]])
out["emb_lookup"], out["emb_mask"] = emb_model.predict(inputs["emb_ids"], verbose=0)
out["emb_dense"] = K.eval(emb(K.constant(inputs["fn_x"]), mode="dense"))
xa, xb = keras.layers.Input((None, 8)), keras.layers.Input((None, 8))
concat = Concatenate1D()
joined = concat([keras.layers.Masking(0.0)(xa), xb])
out["concat_mask"] = keras.models.Model([xa, xb], concat.compute_mask(
    [xa, xb], [keras.layers.Masking(0.0).compute_mask(xa), None])).predict([gp_x, gp_x[:, :2]], verbose=0)
for mode in ("add", "mul", "zero", "concat"):
    xi = keras.layers.Input((None, 4))
    out[f"sinusoidal_{mode}"] = keras.models.Model(xi, SinusoidalPositionEmbedding(4, mode)(xi)).predict(
        inputs["fn_x"], verbose=0)
for name, activation in (("ffn", "gelu"), ("ffn_glu", ["gelu", "linear"])):
    ffn = FeedForward(6, activation)
    xi = keras.layers.Input((None, 4))
    ffn_model = keras.models.Model(xi, ffn(xi))
    ffn.set_weights([inputs[f"{name}_w{i}"] for i in range(len(ffn.get_weights()))])
    out[name] = ffn_model.predict(inputs["fn_x"], verbose=0)

# more backend functions
from bert4keras.backend import align, attention_normalize, divisible_temporal_padding, flatten  # noqa: E402
from bert4keras.backend import gelu_erf, gelu_tanh, leaky_relu, pool1d, reshape, root_mean_square  # noqa: E402
from bert4keras.backend import Sinusoidal, swish  # noqa: E402

x4 = K.constant(inputs["fn_x"])  # (2, 6, 4)
out["align"] = K.eval(align(K.constant(inputs["fn_x"][0]), [0, 2], 4))
out["reshape"] = K.eval(reshape(x4, (3, 2), 1))
out["flatten"] = K.eval(flatten(K.constant(inputs["fn_x"].reshape(2, 3, 2, 4)), 1, 3))
out["pool1d_max"] = K.eval(pool1d(x4, 2, 2, padding="same"))
out["pool1d_avg"] = K.eval(pool1d(x4, 3, 1, pool_mode="avg"))
out["divisible_temporal_padding"] = K.eval(divisible_temporal_padding(x4, 4))
out["root_mean_square"] = K.eval(root_mean_square(x4, axis=-1, keepdims=True))
for fn in (gelu_erf, gelu_tanh, swish, leaky_relu):
    out[fn.__name__] = K.eval(fn(x4))
scores4 = K.constant(inputs["an_x"])  # (2, 3, 5): attention scores over 5 keys
for method in ("softmax", "squared_relu", "softmax_plus"):
    out[f"attention_normalize_{method}"] = K.eval(
        attention_normalize(scores4, K.constant(inputs["an_mask"]), -1, method, K.constant(inputs["an_bias"])))
out["sinusoidal_init"] = K.eval(Sinusoidal()((7, 6)))

# lazy optimization and Lion: three steps on a table whose rows 1 and 3 get no gradient
# bert4keras' optimizers subclass the optimizer_v2 API, which tf_keras 2.11+ keeps as
# ``optimizers.legacy`` (its ``Optimizer`` is the new API): point it there first.
keras.optimizers.Optimizer = keras.optimizers.legacy.Optimizer
from bert4keras.optimizers import Adam, Lion, extend_with_lazy_optimization  # noqa: E402
import tensorflow as tf  # noqa: E402

for name, optimizer in (
    ("lazy", extend_with_lazy_optimization(Adam)(learning_rate=0.1, include_in_lazy_optimization=["table"])),
    ("not_lazy", extend_with_lazy_optimization(Adam)(learning_rate=0.1, include_in_lazy_optimization=["other"])),
    ("lion", Lion(learning_rate=0.1)),
):
    var = tf.Variable(inputs["opt_init"], name="table")
    for grad in inputs["opt_grads"]:
        optimizer.apply_gradients([(tf.constant(grad), var)])
    out[f"opt_{name}"] = var.numpy()

# AdaFactor on a factored (130 x 128) and an unfactored (4,) variable, 3 steps
from bert4keras.optimizers import AdaFactor  # noqa: E402

for name, kwargs in (("adafactor", {}), ("adafactor_beta1", dict(learning_rate=None, beta1=0.9, beta2=0.99))):
    optimizer = AdaFactor(**kwargs)
    variables = [tf.Variable(inputs["af_matrix"], name="matrix"), tf.Variable(inputs["af_bias"], name="bias")]
    for step in range(3):
        optimizer.apply_gradients([(tf.constant(inputs["af_matrix_grads"][step]), variables[0]),
                                   (tf.constant(inputs["af_bias_grads"][step]), variables[1])])
    out[f"{name}_matrix"], out[f"{name}_bias"] = variables[0].numpy(), variables[1].numpy()

# pure-Python snippets
from bert4keras.snippets import convert_to_str, convert_to_unicode, is_one_of, orthogonally_resize  # noqa: E402
from bert4keras.snippets import parallel_apply_generator, softmax, string_matching  # noqa: E402

out["string_matching"] = np.array([string_matching("bert/encoder/layer_0", k) for k in
                                   (["layer_\\d"], ["pooler", "encoder"], ["^encoder"], [])])
out["is_one_of"] = np.array([is_one_of(1, [1.0, 2]), is_one_of(np.array(1), [1]), is_one_of("a", ["b"])])
out["orthogonally_resize"] = orthogonally_resize(inputs["or_a"], (6, 5))
out["softmax"] = softmax(inputs["fn_x"], axis=1)
out["convert"] = np.array(json.dumps([convert_to_unicode("中文".encode("utf-8")), convert_to_str("中文"),
                                      convert_to_unicode("abc")]))
out["parallel_apply_generator"] = np.array(sorted(parallel_apply_generator(
    lambda x: x * 3, range(7), 2, 3, dummy=True)))

# bert4keras' named layer outputs of BERT and ALBERT built from the same Google checkpoints
from bert4keras.models import build_transformer_model  # noqa: E402

for kind in ("bert", "albert"):
    if f"taps_{kind}_config" not in inputs:
        continue
    names = json.loads(str(inputs[f"taps_{kind}_names"]))  # [name, node index or -1 for .output]
    bert = build_transformer_model(str(inputs[f"taps_{kind}_config"]), str(inputs[f"taps_{kind}_checkpoint"]),
                                   model=kind, with_pool=True, with_nsp=True, with_mlm=True)
    tensors = [bert.get_layer(name).output if node < 0 else bert.get_layer(name).get_output_at(node)
               for name, node in names]
    values = keras.models.Model(bert.inputs, tensors).predict([inputs["taps_ids"], inputs["taps_segs"]], verbose=0)
    for (name, node), value in zip(names, values):
        out[f"taps_{kind}/{name}/{node}"] = value

np.savez(sys.argv[2], **out)

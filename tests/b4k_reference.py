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
np.savez(sys.argv[2], **out)

"""Loading the real checkpoint manifests, saving back (Google, Hugging Face, .keras),
keep_tokens, and errors that name the culprit."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from reference import read_manifest, scale_manifest, write_config, write_google_checkpoint

import kerasnlp_plus  # noqa: F401  (registers the classes for load_model)
from kerasnlp_plus.checkpoints import load_checkpoint, save_google_checkpoint, save_huggingface
from kerasnlp_plus.models import build_transformer_model

META = {
    "rbt3": ("chinese_rbt3_L-3_H-768_A-12", "bert_config.json", "bert_model.ckpt", "bert"),
    "albert_brightmart": ("albert_tiny_brightmart", "albert_config_tiny.json", "albert_model.ckpt", "albert"),
    "albert_google": ("albert_tiny_zh_google", "albert_config_tiny_g.json", "albert_model.ckpt", "albert"),
}
IDS = np.array([[101, 2769, 4263, 1266, 776, 102, 0, 0], [101, 1921, 2123, 102, 3300, 7481, 102, 0]], np.int32)
SEGS = np.array([[0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1, 1, 0]], np.int32)


@pytest.mark.parametrize("which", list(META))
def test_real_manifest_loads(shared_data, tmp_path, which):
    """Random weights under exactly the real names and shapes (optimizer slots,
    global_step and RBT3's extra pretraining heads included) load, and every weight of
    the model ends up equal to the checkpoint variable it maps to."""
    import tensorflow as tf

    folder, config_name, ckpt_name, model = META[which]
    meta = shared_data / "ckpt_meta" / folder
    weights = write_google_checkpoint(read_manifest(meta / "variables.tsv"), str(tmp_path / ckpt_name), std=0.02)
    shutil.copy(meta / config_name, tmp_path / config_name)
    m = build_transformer_model(tmp_path / config_name, tmp_path, model=model, with_pool=True, with_nsp=True,
                                with_mlm=True)
    expected_family = {"rbt3": "bert", "albert_brightmart": "albert_brightmart", "albert_google": "albert"}[which]
    assert m.family == expected_family
    word = weights["bert/embeddings/word_embeddings"]
    np.testing.assert_array_equal(m.get_layer("Embedding-Token").embeddings.numpy(), word)
    np.testing.assert_array_equal(m.get_layer("MLM-Bias").bias.numpy(), weights["cls/predictions/output_bias"])
    # every variable of the model came from the checkpoint: none kept its initial value
    used = {v.path for v in m.weights}
    loaded = 0
    reader = tf.train.load_checkpoint(str(tmp_path / ckpt_name))
    from kerasnlp_plus.checkpoints.mapping import google_entries

    for entry in google_entries(m):
        np.testing.assert_array_equal(entry.variable.numpy(), entry.to_model(reader.get_tensor(entry.name)))
        loaded += 1
    assert loaded == len(used), f"{len(used) - loaded} model weights are not covered by the mapping"
    probs = m.predict([IDS, SEGS], verbose=0)[-1]  # [pooled, nsp, mlm], as in bert4keras
    assert probs.shape == (2, 8, 21128) and np.allclose(probs.sum(-1), 1, atol=1e-4)


@pytest.fixture(scope="module")
def tiny_bert(shared_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_bert")
    manifest = scale_manifest(read_manifest(shared_data / "ckpt_meta/chinese_rbt3_L-3_H-768_A-12/variables.tsv"),
                              {768: 32, 3072: 64, 1536: 64, 512: 64})
    weights = write_google_checkpoint(manifest, str(folder / "bert_model.ckpt"), seed=5)
    raw = json.load(open(shared_data / "ckpt_meta/chinese_rbt3_L-3_H-768_A-12/bert_config.json"))
    raw.update(hidden_size=32, intermediate_size=64, num_attention_heads=4, max_position_embeddings=64)
    return write_config(folder / "bert_config.json", **raw), folder / "bert_model.ckpt", weights


def _outputs(model):
    return model.predict([IDS, SEGS], verbose=0)


def test_save_google_checkpoint_round_trip(tiny_bert, tmp_path):
    config, ckpt, _ = tiny_bert
    m = build_transformer_model(config, ckpt, with_pool=True, with_nsp=True, with_mlm=True)
    prefix = save_google_checkpoint(m, tmp_path / "out" / "bert_model.ckpt")
    assert sorted(os.listdir(tmp_path / "out")) == [
        "bert_config.json", "bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index", "checkpoint"]
    import tensorflow as tf

    names = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
    assert "bert/encoder/layer_2/attention/self/query/kernel" in names and "cls/predictions/output_bias" in names
    again = build_transformer_model(tmp_path / "out" / "bert_config.json", tmp_path / "out", with_pool=True,
                                    with_nsp=True, with_mlm=True)
    for a, b in zip(_outputs(m), _outputs(again)):
        np.testing.assert_array_equal(a, b)


def test_save_albert_google_checkpoint_round_trip(tmp_path):
    m = build_transformer_model(None, model="albert", vocab_size=50, embedding_size=8, hidden_size=16,
                                num_hidden_layers=3, num_attention_heads=2, intermediate_size=32, with_mlm=True)
    save_google_checkpoint(m, tmp_path / "albert_model.ckpt")
    again = build_transformer_model(tmp_path / "albert_config.json", tmp_path, model="albert", with_mlm=True)
    assert again.family == "albert"
    ids, segs = IDS % 50, SEGS
    np.testing.assert_array_equal(m.predict([ids, segs], verbose=0), again.predict([ids, segs], verbose=0))


def test_keras_file_round_trip_in_fresh_process(tiny_bert, tmp_path):
    """``keras.models.load_model`` restores the model with no custom objects (only
    ``import kerasnlp_plus``), in a process that never built it."""
    config, ckpt, _ = tiny_bert
    m = build_transformer_model(config, ckpt, application="unilm", with_mlm=True, with_pool=True)
    path = tmp_path / "model.keras"
    m.save(path)
    np.save(tmp_path / "expected.npy", _outputs(m)[-1])
    np.save(tmp_path / "ids.npy", IDS)
    np.save(tmp_path / "segs.npy", SEGS)
    code = (
        "import numpy as np, keras, kerasnlp_plus, sys; d = sys.argv[1];"
        "m = keras.models.load_model(d + '/model.keras');"
        "out = m.predict([np.load(d + '/ids.npy'), np.load(d + '/segs.npy')], verbose=0)[-1];"
        "assert m.application == 'unilm', m.application;"
        "np.testing.assert_array_equal(out, np.load(d + '/expected.npy')); print('OK')"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


def test_keras_file_saved_before_the_residual_dropout_rename_loads():
    """``TransformerBlock.attention_dropout`` (the residual dropout after attention) is
    now ``attention_residual_dropout``. The file was saved at commit f79a430, before the
    rename (2 layers, hidden_dropout_prob=0.2, with_mlm='linear'), with the MLM logits
    for the input below."""
    import keras

    data = os.path.join(os.path.dirname(__file__), "data")
    m = keras.models.load_model(os.path.join(data, "transformer_before_residual_dropout_rename.keras"))
    ids = np.array([[2, 5, 7, 9, 3, 0]], np.int32)
    expected = np.load(os.path.join(data, "transformer_before_residual_dropout_rename.npy"))
    np.testing.assert_array_equal(m.predict([ids, np.zeros_like(ids)], verbose=0), expected)
    assert [block.attention_residual_dropout.rate for block in m.transformer_blocks] == [0.2, 0.2]


def test_huggingface_round_trip_and_transformers_reads_it(tiny_bert, tmp_path):
    import torch
    import transformers

    config, ckpt, _ = tiny_bert
    m = build_transformer_model(config, ckpt, with_pool=True, with_nsp=True, with_mlm="linear")
    save_huggingface(m, tmp_path / "hf")
    again = build_transformer_model(None, tmp_path / "hf", with_pool=True, with_nsp=True, with_mlm="linear")
    for a, b in zip(_outputs(m), _outputs(again)):
        np.testing.assert_array_equal(a, b)
    ref = transformers.BertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        out = ref(input_ids=torch.tensor(IDS, dtype=torch.long), token_type_ids=torch.tensor(SEGS, dtype=torch.long),
                  attention_mask=torch.tensor(IDS != 0, dtype=torch.long))
    real = IDS != 0
    np.testing.assert_allclose(_outputs(m)[-1][real], out.prediction_logits.numpy()[real], atol=1e-5, rtol=1e-5)


def test_huggingface_albert_folder_from_transformers(tmp_path):
    """A folder written by transformers itself (AlbertForPreTraining.save_pretrained)."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.AlbertConfig(vocab_size=60, embedding_size=8, hidden_size=16, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                                    hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ref = transformers.AlbertForPreTraining(cfg).eval()
    ref.save_pretrained(tmp_path)
    m = build_transformer_model(None, tmp_path, model="albert", with_mlm="linear")
    ids = IDS % 60
    with torch.no_grad():
        logits = ref(input_ids=torch.tensor(ids, dtype=torch.long), token_type_ids=torch.tensor(SEGS, dtype=torch.long),
                     attention_mask=torch.tensor(ids != 0, dtype=torch.long)).prediction_logits.numpy()
    real = ids != 0
    np.testing.assert_allclose(m.predict([ids, SEGS], verbose=0)[real], logits[real], atol=1e-5, rtol=1e-5)


def test_roberta_huggingface_positions_offset(tmp_path):
    """HF RoBERTa numbers positions from 2; the loader drops the two reserved rows."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = transformers.RobertaConfig(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=34, type_vocab_size=1,
                                     hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ref = transformers.RobertaForMaskedLM(cfg).eval()
    ref.save_pretrained(tmp_path)
    m = build_transformer_model(None, tmp_path, model="roberta", with_mlm="linear")
    assert m.max_position == 32
    ids = np.array([[5, 7, 9, 11, 13, 2]], np.int32)
    with torch.no_grad():
        logits = ref(input_ids=torch.tensor(ids, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(m.predict([ids, np.zeros_like(ids)], verbose=0), logits, atol=1e-5, rtol=1e-5)


def test_keep_tokens_slices_embedding_and_bias(tiny_bert):
    config, ckpt, weights = tiny_bert
    keep = [0, 100, 101, 102, 103, 2769, 4263]
    m = build_transformer_model(config, ckpt, with_mlm="linear", keep_tokens=keep)
    assert m.vocab_size == len(keep)
    np.testing.assert_array_equal(m.get_layer("Embedding-Token").embeddings.numpy(),
                                  weights["bert/embeddings/word_embeddings"][keep])
    full = build_transformer_model(config, ckpt, with_mlm="linear")
    ids = np.array([[2, 5, 6, 3]], np.int32)  # new ids of [CLS] 我 爱 [SEP]
    old = np.array([[101, 2769, 4263, 102]], np.int32)
    np.testing.assert_allclose(m.predict([ids, np.zeros_like(ids)], verbose=0),
                               full.predict([old, np.zeros_like(old)], verbose=0)[..., keep], atol=1e-6)


# --- errors name the culprit ---------------------------------------------------------

def test_missing_variable_names_it_the_path_and_close_names(tiny_bert, tmp_path):
    import tensorflow as tf

    config, ckpt, _ = tiny_bert
    reader = tf.train.load_checkpoint(str(ckpt))
    names = [n for n in reader.get_variable_to_shape_map() if n != "bert/encoder/layer_1/output/dense/kernel"]
    tf.raw_ops.SaveV2(prefix=str(tmp_path / "broken.ckpt"), tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[reader.get_tensor(n) for n in names])
    with pytest.raises(KeyError) as err:
        build_transformer_model(config, tmp_path / "broken.ckpt")
    msg = str(err.value)
    assert "bert/encoder/layer_1/output/dense/kernel" in msg and "broken.ckpt" in msg
    assert "bert/encoder/layer_1/output/dense/bias" in msg  # a close name present


def test_shape_mismatch_names_both_shapes(tiny_bert):
    config, ckpt, _ = tiny_bert
    with pytest.raises(ValueError) as err:
        build_transformer_model(config, ckpt, intermediate_size=48)
    msg = str(err.value)
    assert "(32, 64)" in msg and "(32, 48)" in msg and "intermediate/dense/kernel" in msg


def test_unknown_model_lists_known_ones(tiny_bert):
    config, ckpt, _ = tiny_bert
    with pytest.raises(ValueError) as err:
        build_transformer_model(config, ckpt, model="electra")
    assert "electra" in str(err.value) and "'bert'" in str(err.value) and "'albert'" in str(err.value)


def test_config_missing_field_names_field_and_file(tmp_path):
    path = write_config(tmp_path / "bert_config.json", vocab_size=10, hidden_size=8, num_hidden_layers=1,
                        intermediate_size=16)
    with pytest.raises(ValueError) as err:
        build_transformer_model(path)
    assert "num_attention_heads" in str(err.value) and str(path) in str(err.value)


def test_missing_paths_are_named(tiny_bert, tmp_path):
    config, _, _ = tiny_bert
    with pytest.raises(FileNotFoundError, match="nowhere/bert_config.json"):
        build_transformer_model(tmp_path / "nowhere" / "bert_config.json")
    with pytest.raises(FileNotFoundError, match="nowhere/bert_model.ckpt"):
        build_transformer_model(config, tmp_path / "nowhere" / "bert_model.ckpt")
    m = build_transformer_model(config)
    with pytest.raises(FileNotFoundError, match="empty_dir"):
        os.makedirs(tmp_path / "empty_dir")
        load_checkpoint(m, tmp_path / "empty_dir")


def test_return_keras_model_false_gives_bert4keras_handle(tiny_bert):
    config, ckpt, _ = tiny_bert
    handle = build_transformer_model(config, ckpt, return_keras_model=False)
    import keras

    assert isinstance(handle.model, keras.Model) and handle.num_layers == 3


def test_saved_files_have_ordinary_permissions(tmp_path):
    m = build_transformer_model(None, vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=16)
    save_huggingface(m, tmp_path)
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.safetensors", "config.json"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]


# --- bad checkpoint inputs (issue 12, item 2): each error names the file and the variable ---
def _small(vocab_size=30, seed=0):
    import keras

    keras.utils.set_random_seed(seed)
    return build_transformer_model(None, vocab_size=vocab_size, hidden_size=8, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=16, with_mlm=True)


def _weights(model):
    return [w.copy() for w in model.get_weights()]


def _unchanged(model, before):
    return all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("naming", ["google", "huggingface"])
def test_bad_keep_tokens_are_named_and_leave_the_model_untouched(tmp_path, naming):
    source = _small()
    path = (save_google_checkpoint(source, tmp_path / "bert_model.ckpt") if naming == "google"
            else save_huggingface(source, tmp_path / "hf"))
    word = "bert/embeddings/word_embeddings" if naming == "google" else "bert.embeddings.word_embeddings.weight"
    target = _small(vocab_size=3, seed=1)
    before = _weights(target)
    cases = [
        ([0, -1, 2], r"keep_tokens\[1\] = -1 is negative"),
        ([0, 5, 30], rf"keep_tokens\[2\] = 30 is beyond the 30 rows of variable '{word}' in checkpoint "
                     rf".*{os.path.basename(str(path))}"),
        ([], r"keep_tokens is empty"),
        ([[0, 1, 2]], r"keep_tokens must be a flat list of token ids, got shape \(1, 3\)"),
        ([0.0, 1.0, 2.0], r"keep_tokens must hold int token ids, got dtype float64"),
    ]
    for keep, message in cases:
        with pytest.raises(ValueError, match=message):
            load_checkpoint(target, path, keep_tokens=keep)
        assert _unchanged(target, before), f"keep_tokens={keep} modified the model"


def test_duplicate_keep_tokens_share_a_row(tmp_path):
    """Allowed on purpose (documented): a repeated id starts two new ids from one row."""
    source = _small()
    prefix = save_google_checkpoint(source, tmp_path / "bert_model.ckpt")
    target = _small(vocab_size=4, seed=1)
    load_checkpoint(target, prefix, keep_tokens=[0, 7, 7, 3])
    rows = target.token_embedding.embeddings.numpy()
    full = source.token_embedding.embeddings.numpy()
    np.testing.assert_array_equal(rows, full[[0, 7, 7, 3]])


def _corrupt_float(model, name_part):
    """Set one value of the first weight whose path contains ``name_part`` to NaN."""
    variable = next(v for v in model.weights if name_part in v.path)
    value = variable.numpy()
    value.flat[3] = np.nan
    variable.assign(value)


def test_non_finite_values_are_refused_with_variable_and_file(tmp_path):
    source = _small()
    _corrupt_float(source, "intermediate")
    prefix = save_google_checkpoint(source, tmp_path / "g" / "bert_model.ckpt")
    save_huggingface(source, tmp_path / "hf")
    target = _small(seed=1)
    before = _weights(target)
    with pytest.raises(ValueError, match=r"variable 'bert/encoder/layer_0/intermediate/dense/kernel' in checkpoint "
                                         r".*g/bert_model.ckpt holds 1 non-finite values"):
        load_checkpoint(target, prefix)
    with pytest.raises(ValueError, match=r"variable 'bert.encoder.layer.0.intermediate.dense.weight' in checkpoint "
                                         r".*hf/model.safetensors holds 1 non-finite values"):
        load_checkpoint(target, tmp_path / "hf")
    assert _unchanged(target, before)


def test_overwritten_safetensors_bytes_are_refused(tmp_path):
    """Data bytes overwritten with 0xFF (NaN as float32) in the middle of the file."""
    save_huggingface(_small(), tmp_path)
    path = tmp_path / "model.safetensors"
    raw = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(raw[:8], "little")
    header_json = json.loads(raw[8:header])
    start, _ = header_json["bert.encoder.layer.0.output.dense.weight"]["data_offsets"]
    raw[header + start:header + start + 16] = b"\xff" * 16
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"variable 'bert.encoder.layer.0.output.dense.weight' in checkpoint "
                                         r".*model.safetensors holds 4 non-finite values"):
        load_checkpoint(_small(seed=1), tmp_path)


def test_truncated_google_data_file_names_the_variable_and_file(tmp_path):
    prefix = save_google_checkpoint(_small(), tmp_path / "bert_model.ckpt")
    data = tmp_path / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    target = _small(seed=1)
    before = _weights(target)
    with pytest.raises(ValueError, match=r"cannot read variable '[^']+' from checkpoint .*bert_model.ckpt "
                                         r"\(data files \['bert_model.ckpt.data-00000-of-00001'\]\): the data is "
                                         r"truncated or corrupt"):
        load_checkpoint(target, prefix)
    assert _unchanged(target, before)


def test_truncated_safetensors_names_the_file_and_a_missing_tensor(tmp_path):
    save_huggingface(_small(), tmp_path)
    path = tmp_path / "model.safetensors"
    raw = path.read_bytes()
    header = 8 + int.from_bytes(raw[:8], "little")
    offsets = json.loads(raw[8:header])
    last = max((k for k in offsets if k != "__metadata__"), key=lambda k: offsets[k]["data_offsets"][1])
    path.write_bytes(raw[:-10])
    with pytest.raises(ValueError, match=rf"cannot read Hugging Face weights .*model.safetensors \({len(raw) - 10} "
                                         rf"bytes\): truncated: 1 tensor\(s\) extend past the end of the file, "
                                         rf"first '{last}'"):
        load_checkpoint(_small(seed=1), tmp_path)
    path.write_bytes(raw[:header - 5])
    with pytest.raises(ValueError, match=r"model.safetensors .*truncated inside its \d+-byte JSON header"):
        load_checkpoint(_small(seed=1), tmp_path)

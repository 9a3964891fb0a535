"""TransformerConfig: the one place that knows config-file keys. It reads Google and
Hugging Face files (checked against files written by transformers itself), takes
overrides in either spelling, writes both formats, and names the file and key at fault."""
import json

import pytest

from kerasnlp_plus.models import FAMILIES, Transformer, TransformerConfig, build_transformer_model
from kerasnlp_plus.models.config import FILE_KEYS, file_key, field_name

GOOGLE_BERT = {  # the keys of Google's chinese_L-12_H-768_A-12/bert_config.json, smaller values
    "attention_probs_dropout_prob": 0.1, "directionality": "bidi", "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 24, "initializer_range": 0.02, "intermediate_size": 48,
    "max_position_embeddings": 40, "num_attention_heads": 4, "num_hidden_layers": 3,
    "pooler_fc_size": 768, "pooler_num_attention_heads": 12, "pooler_num_fc_layers": 3,
    "pooler_size_per_head": 128, "pooler_type": "first_token_transform", "type_vocab_size": 2,
    "vocab_size": 50,
}


def write_json(path, content):
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


# --- reading ---------------------------------------------------------------------------

def test_reads_google_bert_config(tmp_path):
    config = TransformerConfig.from_json_file(write_json(tmp_path / "bert_config.json", GOOGLE_BERT))
    assert (config.vocab_size, config.hidden_size, config.num_layers, config.num_heads,
            config.intermediate_size, config.max_position) == (50, 24, 3, 4, 48, 40)
    assert config.family is None  # a Google file does not say BERT, RoBERTa or RoFormer
    assert config.embedding_size is None and config.layer_norm_epsilon == 1e-12
    assert config.source == str(tmp_path / "bert_config.json")
    # a folder finds its config
    assert TransformerConfig.from_json_file(tmp_path) == config


def test_reads_google_and_brightmart_albert_configs(tmp_path):
    google = dict(GOOGLE_BERT, embedding_size=8, num_hidden_groups=1, inner_group_num=1)
    config = TransformerConfig.from_json_file(write_json(tmp_path / "albert_config.json", google))
    assert config.embedding_size == 8 and config.family is None
    brightmart = dict(GOOGLE_BERT, embedding_size=8, ln_type="postln")
    assert TransformerConfig.from_dict(brightmart).family == "albert_brightmart"
    with pytest.raises(ValueError, match=r"albert_config.json: ALBERT with inner_group_num=2"):
        TransformerConfig.from_json_file(write_json(tmp_path / "albert_config.json", dict(google, inner_group_num=2)))


def test_reads_huggingface_configs_written_by_transformers(tmp_path):
    import transformers

    sizes = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                 hidden_dropout_prob=0.05, attention_probs_dropout_prob=0.15, layer_norm_eps=1e-6)
    cases = {
        "bert": transformers.BertConfig(max_position_embeddings=40, **sizes),
        "roberta": transformers.RobertaConfig(max_position_embeddings=42, type_vocab_size=1, **sizes),
        "albert": transformers.AlbertConfig(embedding_size=8, max_position_embeddings=40, **sizes),
        "roformer": transformers.RoFormerConfig(embedding_size=8, max_position_embeddings=40, **sizes),
    }
    for model_type, hf in cases.items():
        hf.save_pretrained(tmp_path / model_type)
        config = TransformerConfig.from_json_file(tmp_path / model_type)
        assert config.family == model_type
        assert (config.vocab_size, config.hidden_size, config.num_layers, config.num_heads,
                config.intermediate_size) == (60, 16, 2, 2, 32)
        assert (config.dropout_rate, config.attention_dropout_rate, config.layer_norm_epsilon) == (0.05, 0.15, 1e-6)
        # HF RoBERTa reserves padding_idx + 1 = 2 position rows
        assert config.max_position == 40, model_type
        assert config.embedding_size == (8 if model_type in ("albert", "roformer") else None)
    assert TransformerConfig.from_json_file(tmp_path / "roberta").type_vocab_size == 1


def test_rotary_value_is_refused_naming_the_file(tmp_path):
    import transformers

    transformers.RoFormerConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, rotary_value=True).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"config.json: rotary_value=true"):
        TransformerConfig.from_json_file(tmp_path)


# --- overrides -------------------------------------------------------------------------

def test_overrides_in_either_spelling_are_the_same(tmp_path):
    config = TransformerConfig.from_dict(GOOGLE_BERT)
    for field, key in FILE_KEYS.items():
        value = {"num_layers": 5, "num_heads": 8, "max_position": 64, "dropout_rate": 0.25,
                 "attention_dropout_rate": 0.3, "layer_norm_epsilon": 1e-5}[field]
        by_field, by_key = config.replace(**{field: value}), config.replace(**{key: value})
        assert by_field == by_key and getattr(by_key, field) == value and by_key != config
        assert field_name(key) == field and file_key(field) == key
    assert config.replace(segment_vocab_size=3).type_vocab_size == 3  # bert4keras' keyword
    with pytest.raises(ValueError, match="num_layers given twice"):
        config.replace(num_layers=2, num_hidden_layers=2)
    with pytest.raises(TypeError, match="not config fields: \\['attention_scale'\\]"):
        config.replace(attention_scale="log_n")
    with pytest.raises(ValueError, match=r"override: dropout_rate must be a rate in \[0, 1\), got 1.5"):
        config.replace(hidden_dropout_prob=1.5)


def test_builder_takes_overrides_in_either_spelling_over_the_file(tmp_path):
    path = write_json(tmp_path / "bert_config.json", GOOGLE_BERT)
    bert4keras = build_transformer_model(path, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.3,
                                         num_hidden_layers=1, max_position_embeddings=16)
    ours = build_transformer_model(path, dropout_rate=0.2, attention_dropout_rate=0.3, num_layers=1,
                                   max_position=16)
    for model in (bert4keras, ours):
        assert (model.dropout_rate, model.attention_dropout_rate, model.num_layers, model.max_position) == \
            (0.2, 0.3, 1, 16)
        assert model.transformer_blocks[0].attention.attention_dropout == 0.3
        assert model.transformer_blocks[0].attention_residual_dropout.rate == 0.2
    assert bert4keras.get_config() == dict(ours.get_config(), name=bert4keras.name)
    # other Transformer arguments pass through beside the config's fields
    assert build_transformer_model(path, attention_scale="log_n").attention_scale == "log_n"


def test_no_file_needs_the_required_fields_in_either_spelling():
    with pytest.raises(ValueError, match=r"not passed: num_heads \(num_attention_heads\), intermediate_size"):
        build_transformer_model(None, vocab_size=10, hidden_size=8, num_layers=1)
    model = build_transformer_model(None, vocab_size=10, hidden_size=8, num_layers=1, num_attention_heads=2,
                                    intermediate_size=16)
    assert (model.num_layers, model.num_heads) == (1, 2)


# --- writing ---------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_written_configs_read_back_equal(tmp_path, family):
    embedding = 8 if family.startswith("albert") or family == "roformer" else None
    config = TransformerConfig(vocab_size=30, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                               embedding_size=embedding, max_position=40, type_vocab_size=3, dropout_rate=0.0,
                               attention_dropout_rate=0.2, layer_norm_epsilon=1e-7, family=family)
    config.write(tmp_path / "bert_config.json", format="google")
    google = TransformerConfig.from_json_file(tmp_path / "bert_config.json")
    # a Google file names only brightmart's layout; the rest is told by model=...
    expected_family = "albert_brightmart" if family == "albert_brightmart" else None
    assert google == dataclass_replace(config, family=expected_family,
                                       embedding_size=embedding if family.startswith("albert") else None)
    if family != "albert_brightmart":  # brightmart has no Hugging Face layout
        config.write(tmp_path / "config.json", format="huggingface")
        assert TransformerConfig.from_json_file(tmp_path / "config.json") == config
    with pytest.raises(ValueError, match="unknown config format 'xml'"):
        config.to_json_string(format="xml")


def dataclass_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


@pytest.mark.parametrize("layout", ["bert", "roberta", "albert", "roformer"])
def test_written_huggingface_config_is_what_transformers_reads(tmp_path, layout):
    import transformers

    config = TransformerConfig(vocab_size=30, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                               embedding_size=8, max_position=40, dropout_rate=0.05, attention_dropout_rate=0.2,
                               layer_norm_epsilon=1e-7, hidden_act="gelu_new", family=layout)
    config.write(tmp_path / "config.json", format="huggingface")
    hf = transformers.AutoConfig.from_pretrained(tmp_path)
    assert hf.model_type == layout
    assert (hf.vocab_size, hf.hidden_size, hf.num_hidden_layers, hf.num_attention_heads, hf.intermediate_size) == \
        (30, 16, 2, 2, 32)
    assert (hf.hidden_dropout_prob, hf.attention_probs_dropout_prob, hf.layer_norm_eps, hf.hidden_act) == \
        (0.05, 0.2, 1e-7, "gelu_new")
    assert hf.max_position_embeddings == (42 if layout == "roberta" else 40)
    if layout in ("albert", "roformer"):
        assert hf.embedding_size == 8


def test_config_of_a_built_model_round_trips(tmp_path):
    model = build_transformer_model(None, model="albert", vocab_size=30, hidden_size=16, num_hidden_layers=3,
                                    num_attention_heads=2, intermediate_size=32, embedding_size=8,
                                    hidden_dropout_prob=0.0)
    config = TransformerConfig.from_model(model)
    assert (config.family, config.num_layers, config.embedding_size, config.dropout_rate) == ("albert", 3, 8, 0.0)
    rebuilt = Transformer(family=config.family, **config.transformer_kwargs())
    assert rebuilt.get_config() == dict(model.get_config(), name=rebuilt.name)
    assert [w.shape for w in rebuilt.get_weights()] == [w.shape for w in model.get_weights()]


# --- errors name the file and the key ----------------------------------------------------

def test_missing_key_names_the_file_and_key(tmp_path):
    content = {k: v for k, v in GOOGLE_BERT.items() if k != "num_hidden_layers"}
    path = write_json(tmp_path / "bert_config.json", content)
    with pytest.raises(ValueError, match=rf"model config {path} is missing required field\(s\) "
                                         r"\['num_hidden_layers'\]"):
        TransformerConfig.from_json_file(path)
    with pytest.raises(ValueError, match=r"\['num_hidden_layers'\]"):  # null is as good as missing
        TransformerConfig.from_dict(dict(GOOGLE_BERT, num_hidden_layers=None))


@pytest.mark.parametrize("key,value,expected", [
    ("hidden_size", "768", r"hidden_size must be a positive int, got '768'"),
    ("num_hidden_layers", 0, r"num_hidden_layers \(num_layers\) must be a positive int, got 0"),
    ("num_attention_heads", 2.0, r"num_attention_heads \(num_heads\) must be a positive int, got 2.0"),
    ("hidden_dropout_prob", 1.0, r"hidden_dropout_prob \(dropout_rate\) must be a rate in \[0, 1\), got 1.0"),
    ("layer_norm_eps", -1e-12, r"layer_norm_eps \(layer_norm_epsilon\) must be a positive number"),
    ("hidden_act", "gelu_fast", r"hidden_act must be one of \[.*'gelu'.*\], got 'gelu_fast'"),
    ("type_vocab_size", True, r"type_vocab_size must be a positive int, got True"),
    ("num_attention_heads", 5, r"hidden_size 24 is not divisible by num_attention_heads 5"),
])
def test_bad_value_names_the_file_and_key(tmp_path, key, value, expected):
    path = write_json(tmp_path / "bert_config.json", dict(GOOGLE_BERT, **{key: value}))
    with pytest.raises(ValueError, match=rf"model config {path}: {expected}"):
        TransformerConfig.from_json_file(path)
    with pytest.raises(ValueError, match=str(path)):  # the builder passes the error on
        build_transformer_model(path)


def test_unreadable_files_are_named(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"model config {bad} is not valid JSON"):
        TransformerConfig.from_json_file(bad)
    write_json(bad, [1, 2])
    with pytest.raises(ValueError, match=rf"model config {bad} must hold a JSON object, got list"):
        TransformerConfig.from_json_file(bad)
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        TransformerConfig.from_json_file(tmp_path / "nowhere.json")


def test_one_tuple_of_families():
    from kerasnlp_plus.models import transformer

    assert transformer.FAMILIES is FAMILIES
    with pytest.raises(ValueError, match=r"unknown model 'gpt'; known: \('bert', 'roberta', 'albert', "
                                         r"'albert_brightmart', 'roformer'\)"):
        build_transformer_model(None, model="gpt", vocab_size=10, hidden_size=8, num_layers=1, num_heads=2,
                                intermediate_size=16)
    with pytest.raises(ValueError, match="family must be one of"):
        TransformerConfig(vocab_size=10, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
                          family="gpt")

#! -*- coding: utf-8 -*-
# Ported from bert4keras (https://github.com/bojone/bert4keras, commit c1ae0dc5eff66d329ab3c5c7ee369124ddbb6f87,
# examples/basic_masked_language_model.py), Copyright Jianlin Su, Apache License 2.0.
# Changes (and nothing else): imports bert4keras -> kerasnlp_plus; paths (the demo model
# and small real data written by tests/test_bert4keras_examples.py); sizes (marked
# "# size:"); Keras 3 file names (".weights.h5", ".keras").
# 测试代码可用性: MLM

import numpy as np
from _b4k_paths import DEMO_MODEL, DATA_DIR  # paths: the demo model and test data
from kerasnlp_plus.models import build_transformer_model
from kerasnlp_plus.tokenizers import Tokenizer
from kerasnlp_plus.snippets import to_array

config_path = DEMO_MODEL + '/config.json'
checkpoint_path = DEMO_MODEL + '/model.safetensors'
dict_path = DEMO_MODEL + '/vocab.txt'

tokenizer = Tokenizer(dict_path, do_lower_case=True)  # 建立分词器
model = build_transformer_model(
    config_path=config_path, checkpoint_path=checkpoint_path, with_mlm=True
)  # 建立模型，加载权重

token_ids, segment_ids = tokenizer.encode(u'科学技术是第一生产力')

# mask掉“技术”
token_ids[3] = token_ids[4] = tokenizer._token_mask_id
token_ids, segment_ids = to_array([token_ids], [segment_ids])

# 用mlm模型预测被mask掉的部分
probas = model.predict([token_ids, segment_ids])[0]
print(tokenizer.decode(probas[3:5].argmax(axis=1)))  # 结果正是“技术”

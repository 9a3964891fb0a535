"""kerasnlp_plus: a Keras 3 / TensorFlow toolkit for Chinese BERT-family models.

Every runtime dependency is listed with the reason it is needed.  TensorFlow itself
is an extra so that a CPU user is not forced to download the multi-GB GPU build:

    pip install -e .[cpu]      # tensorflow-cpu
    pip install -e .[gpu]      # tensorflow[and-cuda]
    pip install -e .[tpu]      # tensorflow (TPU VMs ship their own libtpu; see README)
    pip install -e .[cpu,test] # plus the independent reference used by the tests
"""
from setuptools import find_namespace_packages, setup

install_requires = [
    "keras>=3.6",          # the model code: keras.ops, layers, optimizers, callbacks, .keras files
    "numpy",               # host-side arrays (padding, checkpoints, beam bookkeeping)
    "jieba",               # word-level pre-tokenization and whole-word masking
    "sentencepiece",       # SpTokenizer over .model files
    "tokenizers",          # the fast WordPiece engine behind Tokenizer's batch path
    "safetensors",         # Hugging Face model.safetensors read/write without torch
    "marisa-trie",         # memory-efficient prefix trie for knowledge-base decoding
    "tqdm",                # progress bars in examples and data preparation
]

extras_require = {
    "cpu": ["tensorflow-cpu>=2.16"],
    "gpu": ["tensorflow[and-cuda]>=2.16"],
    "tpu": ["tensorflow>=2.16"],
    # pretraining/pretrain.py writes TensorBoard logs through keras.callbacks.TensorBoard.
    "pretraining": ["tensorboard"],
    # The examples score titles the way the published CSL figures were scored
    # (bert4keras: the `rouge` package on characters, nltk's BLEU with smoothing 1).
    "examples": ["rouge==1.0.1", "nltk"],
    # Test-only: the independent reference implementation (PyTorch + transformers)
    # that our numerics are pinned against, and the test runner.
    "test": ["pytest", "torch==2.13.0", "transformers>=4.40", "rouge==1.0.1", "nltk", "tensorboard"],
}

setup(
    name="kerasnlp_plus",
    version="0.1.0",
    description="Chinese BERT/RoBERTa/ALBERT for Keras 3: UniLM/LM/PLM masks, "
    "Google and Hugging Face checkpoints, cached trie-constrained decoding, pretraining.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # The demo model's folder holds data only; naming it a (namespace) package with its
    # files as package data ships it without setuptools' "importable but absent from
    # packages" warning wall on every install.
    packages=find_namespace_packages(include=["kerasnlp_plus", "kerasnlp_plus.*"],
                                     exclude=["*.__pycache__"]),
    package_data={"kerasnlp_plus.assets.demo_model": ["*"]},
    include_package_data=True,
    install_requires=install_requires,
    extras_require=extras_require,
)

"""Raw text -> sharded TFRecords (the engine behind ``pretraining/prepare_data.py``).

Documents are read in order, split into a training and a held-out stream (a stable
hash of the document's index decides), and grouped into shards of
``docs_per_shard`` documents. Each shard is processed independently with its own
random generator seeded by ``(seed, split, shard_index)``, so the output is
identical whatever the number of processes. Shards are written to a temporary name
and renamed when complete (with a small ``.json`` beside them holding their counts);
a rerun skips the shards that are already complete.
"""
import json
import logging
import os
import zlib

import numpy as np

from kerasnlp_plus.pretraining import records
from kerasnlp_plus.pretraining.masking import (
    MASK_RATE,
    mask_whole_words_np,
    plm_order_np,
    unilm_split_np,
)
from kerasnlp_plus.pretraining.packing import document_units, pack_documents
from kerasnlp_plus.pretraining.text import read_documents
from kerasnlp_plus.utils import atomic_path, atomic_write_text, file_sha256

logger = logging.getLogger("kerasnlp_plus.pretraining")

META_NAME = "meta.json"


def random_token_low(vocab):
    """Smallest id from which every token is an ordinary token (random replacements
    are drawn from ``[low, vocab_size)``)."""
    inv = sorted(vocab.items(), key=lambda kv: kv[1])
    low = 0
    for token, i in inv:
        if token.startswith("[") and token.endswith("]") or token in ("<S>", "<T>"):
            low = i + 1
    return low


def in_eval_split(doc_index, seed, eval_fraction):
    if eval_fraction <= 0:
        return False
    h = zlib.crc32(f"{seed}:{doc_index}".encode()) / 2**32
    return h < eval_fraction


# --------------------------------------------------------------------- worker side
_WORKER = {}


def _init_worker(config):
    import logging as _logging

    import jieba

    from kerasnlp_plus.tokenizers import Tokenizer, load_vocab

    jieba.setLogLevel(_logging.WARNING)
    vocab = load_vocab(os.path.join(config["output_dir"], "vocab.txt"))
    _WORKER["tokenizer"] = Tokenizer(vocab, do_lower_case=config["do_lower_case"])
    _WORKER["config"] = config


def shard_path(output_dir, split, index):
    return os.path.join(output_dir, f"{split}-{index:05d}.tfrecord")


def config_fingerprint(config):
    """Hash of the options that shape a shard's content (a rerun with other options
    rewrites the shards instead of skipping them)."""
    import hashlib

    keep = {k: v for k, v in config.items() if k != "output_dir"}
    return hashlib.sha1(json.dumps(keep, sort_keys=True).encode()).hexdigest()[:16]


def shard_done(path, fingerprint=None):
    """The counts of a finished shard written with the same options, else None.

    A shard counts as finished only when its size and SHA-256 match those recorded
    beside it: a truncated or overwritten shard is rewritten (with a warning)."""
    if not (os.path.exists(path) and os.path.exists(path + ".json")):
        return None
    try:
        with open(path + ".json", encoding="utf-8") as f:
            counts = json.load(f)
    except ValueError:
        logger.warning("%s.json is damaged: rewriting the shard", path)
        return None
    if fingerprint is not None and counts.get("fingerprint") != fingerprint:
        return None
    size = os.path.getsize(path)
    if size != counts.get("bytes") or file_sha256(path) != counts.get("sha256"):
        logger.warning("%s is damaged (%d bytes, %s recorded, or another checksum): rewriting it",
                       path, size, counts.get("bytes"))
        return None
    return counts


def examples_for_shard(texts, rng, config, tokenizer):
    """The records (dicts of int lists) of one shard."""
    task, seq_len = config["task"], config["seq_len"]
    if config.get("pairs"):
        return pair_examples(texts, config, tokenizer)
    whole_words = task == "mlm" and config["whole_word_masking"]
    units = document_units(tokenizer, texts, whole_words=whole_words)
    packed = pack_documents(units, seq_len, tokenizer.cls_id, tokenizer.sep_id)
    out = []
    for tokens, words in packed:
        tokens = np.asarray(records.pad(tokens, seq_len), dtype=np.int64)
        words = np.asarray(words + [-1] * (seq_len - len(words)), dtype=np.int64)
        segs = np.zeros(seq_len, dtype=np.int64)
        feats = {"token_ids": tokens, "segment_ids": segs}
        if task == "mlm":
            if config["dynamic_masking"]:
                feats["word_ids"] = words + 1
            else:
                masked, labels = mask_whole_words_np(
                    tokens, words, rng, config["mask_id"], config["vocab_size"],
                    config["random_token_low"], config["mask_rate"],
                )
                feats["token_ids"], feats["labels"] = masked, labels
        elif task == "unilm":
            feats["segment_ids"] = unilm_split_np(tokens, rng)
        elif task == "plm" and config["plm_static_order"]:
            feats["order"] = plm_order_np(tokens, rng)
        out.append(feats)
    return out


def pair_examples(texts, config, tokenizer):
    """UniLM seq2seq records of ``target<TAB>source`` lines: ``[CLS] source [SEP]
    target [SEP]`` with segment 1 on ``target [SEP]``; the target keeps at most a
    quarter of ``seq_len`` tokens and the source is cut to fit the rest."""
    seq_len = config["seq_len"]
    out = []
    for text in texts:
        target, source = text.split("\t")
        tgt_ids, _ = tokenizer.encode(target, maxlen=max(3, seq_len // 4))
        src_ids, _ = tokenizer.encode(source, maxlen=seq_len - len(tgt_ids) + 1)
        ids = list(src_ids) + list(tgt_ids[1:])  # the target's [CLS] is dropped
        segs = [0] * len(src_ids) + [1] * (len(tgt_ids) - 1)
        out.append({"token_ids": np.asarray(records.pad(ids, seq_len), dtype=np.int64),
                    "segment_ids": np.asarray(records.pad(segs, seq_len), dtype=np.int64)})
    return out


def process_shard(job):
    """Write one shard. ``job = (split, index, texts)``. Returns its counts."""
    import tensorflow as tf

    split, index, texts = job
    config, tokenizer = _WORKER["config"], _WORKER["tokenizer"]
    path = shard_path(config["output_dir"], split, index)
    fingerprint = config_fingerprint(config)
    done = shard_done(path, fingerprint)
    if done is not None:
        return done
    split_id = 0 if split == "train" else 1
    rng = np.random.default_rng([config["seed"], split_id, index])
    examples = examples_for_shard(texts, rng, config, tokenizer)
    with atomic_path(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as w:
            for feats in examples:
                w.write(records.serialize(feats))
    n_tokens = int(sum(int((f["token_ids"] != 0).sum()) for f in examples))
    counts = {"split": split, "shard": index, "documents": len(texts), "examples": len(examples),
              "tokens": n_tokens, "fingerprint": fingerprint,
              "bytes": os.path.getsize(path), "sha256": file_sha256(path)}
    atomic_write_text(path + ".json", json.dumps(counts))
    return counts


# ----------------------------------------------------------------------- main side
def _jobs(docs, docs_per_shard, seed, eval_fraction):
    buffers = {"train": [], "eval": []}
    index = {"train": 0, "eval": 0}
    for i, (_, text) in enumerate(docs):
        split = "eval" if in_eval_split(i, seed, eval_fraction) else "train"
        buffers[split].append(text)
        if len(buffers[split]) == docs_per_shard:
            yield split, index[split], buffers[split]
            buffers[split] = []
            index[split] += 1
    for split in ("train", "eval"):
        if buffers[split]:
            yield split, index[split], buffers[split]


def prepare(
    inputs,
    output_dir,
    vocab_path,
    task="mlm",
    seq_len=128,
    doc_format="lines",
    simplified_vocab=False,
    do_lower_case=True,
    whole_word_masking=True,
    dynamic_masking=False,
    plm_static_order=False,
    mask_rate=MASK_RATE,
    docs_per_shard=1000,
    eval_fraction=0.0,
    processes=1,
    seed=0,
    progress=True,
    on_bad_line=None,
):
    """Write the shards and ``meta.json`` into ``output_dir``; returns the meta dict.

    See ``pretraining/prepare_data.py --help`` for the arguments.
    """
    from kerasnlp_plus.tokenizers import load_vocab, save_vocab

    if task not in records.TASKS:
        raise ValueError(f"task must be one of {records.TASKS}, got {task!r}")
    for p in inputs:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"input file not found: {p}")
    os.makedirs(output_dir, exist_ok=True)
    startswith = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if simplified_vocab:
        vocab, keep_tokens = load_vocab(vocab_path, simplified=True, startswith=startswith)
    else:
        vocab, keep_tokens = load_vocab(vocab_path), None
    for token in startswith:
        if token not in vocab:
            raise ValueError(f"vocab {vocab_path} has no {token} token")
    save_vocab(os.path.join(output_dir, "vocab.txt"), vocab)

    config = {
        "task": task,
        "seq_len": int(seq_len),
        "output_dir": os.fspath(output_dir),
        "do_lower_case": bool(do_lower_case),
        "whole_word_masking": bool(whole_word_masking),
        "dynamic_masking": bool(dynamic_masking and task == "mlm"),
        "plm_static_order": bool(plm_static_order and task == "plm"),
        "mask_rate": float(mask_rate),
        "mask_id": vocab["[MASK]"],
        "vocab_size": len(vocab),
        "random_token_low": random_token_low(vocab),
        "seed": int(seed),
    }
    if doc_format == "pairs":
        if task != "unilm":
            raise ValueError(f"doc_format 'pairs' (target<TAB>source) needs task 'unilm', got {task!r}")
        config["pairs"] = True  # in the fingerprint: pair shards are never mixed with packed ones
    bad_lines = []

    def report(bad):
        bad_lines.append(str(bad))
        (on_bad_line or (lambda b: logger.warning("%s", b)))(bad)

    docs = read_documents(inputs, doc_format=doc_format, on_bad_line=report)
    jobs = _jobs(docs, int(docs_per_shard), int(seed), float(eval_fraction))
    from tqdm import tqdm

    bar = tqdm(desc=f"prepare {task}", unit="shard", disable=not progress)
    results = []
    if processes <= 1:
        _init_worker(config)
        for job in jobs:
            results.append(process_shard(job))
            bar.update(1)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # no forked TF state
        with ctx.Pool(processes, initializer=_init_worker, initargs=(config,)) as pool:
            for counts in pool.imap(process_shard, jobs):
                results.append(counts)
                bar.update(1)
    bar.close()

    meta = {
        "task": task,
        "application": records.APPLICATION[task],
        "seq_len": int(seq_len),
        "features": records.feature_names(task, config["dynamic_masking"], config["plm_static_order"]),
        "vocab": "vocab.txt",
        "vocab_source": os.path.abspath(vocab_path),
        "vocab_size": len(vocab),
        "simplified_vocab": bool(simplified_vocab),
        "keep_tokens": "keep_tokens.json" if keep_tokens is not None else None,
        "do_lower_case": bool(do_lower_case),
        "whole_word_masking": config["whole_word_masking"] if task == "mlm" else None,
        "dynamic_masking": config["dynamic_masking"],
        "plm_static_order": config["plm_static_order"],
        "mask_rate": float(mask_rate),
        "mask_id": config["mask_id"],
        "random_token_low": config["random_token_low"],
        "seed": int(seed),
        "eval_fraction": float(eval_fraction),
        "doc_format": doc_format,
        "inputs": [os.path.abspath(p) for p in inputs],
        "counts": {},
        "bad_lines": bad_lines[:1000],
    }
    for split in ("train", "eval"):
        rs = sorted((r for r in results if r["split"] == split), key=lambda r: r["shard"])
        meta["counts"][split] = {
            "shards": len(rs),
            "documents": sum(r["documents"] for r in rs),
            "examples": sum(r["examples"] for r in rs),
            "tokens": sum(r["tokens"] for r in rs),
            "files": [os.path.basename(shard_path(output_dir, split, r["shard"])) for r in rs],
            # Checked by the pipeline before training (a damaged shard is named, not hit mid-run).
            "manifest": {os.path.basename(shard_path(output_dir, split, r["shard"])):
                         {"records": r["examples"], "bytes": r.get("bytes"), "sha256": r.get("sha256")}
                         for r in rs},
        }
    meta["counts"]["bad_lines"] = len(bad_lines)
    if keep_tokens is not None:
        atomic_write_text(os.path.join(output_dir, "keep_tokens.json"), json.dumps(keep_tokens))
    atomic_write_text(os.path.join(output_dir, META_NAME), json.dumps(meta, ensure_ascii=False, indent=1))
    return meta


def load_keep_tokens(data_dir, meta):
    """``keep_tokens`` of a simplified-vocab dataset (original id of each new id), or None."""
    if not meta.get("keep_tokens"):
        return None
    import tensorflow as tf  # tf.io.gfile: the data may be on gs:// (TPU)

    with tf.io.gfile.GFile(os.path.join(data_dir, meta["keep_tokens"]), "r") as f:
        return json.loads(f.read())


def load_meta(data_dir):
    path = os.path.join(data_dir, META_NAME)
    if "://" in os.fspath(data_dir):  # gs:// and other tf.io.gfile file systems (TPU)
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path} not found: is {data_dir} a folder written by prepare_data.py?")
        with tf.io.gfile.GFile(path, "r") as f:
            return json.loads(f.read())
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {data_dir} a folder written by prepare_data.py?")
    with open(path, encoding="utf-8") as f:
        return json.load(f)

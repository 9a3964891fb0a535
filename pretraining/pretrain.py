#!/usr/bin/env python
"""Pretrain a BERT-family model on records written by prepare_data.py (Keras fit
under tf.distribute).

Strategy: --tpu NAME -> TPUStrategy (data and output on gs://); TF_CONFIG set ->
MultiWorkerMirroredStrategy; several GPUs -> MirroredStrategy; --replicas N on a
machine without GPUs -> N logical CPU devices + MirroredStrategy (testing);
otherwise the default strategy.

Examples:

    # a small model from scratch on the CPU
    python pretraining/pretrain.py --data data/mlm --output runs/small \\
        --hidden-size 256 --num-layers 4 --num-heads 4 --intermediate-size 1024 \\
        --steps 2000 --batch-size 32 --learning-rate 5e-4 --checkpoint-every 200

    # continued pretraining from a Google checkpoint, 8 GPUs, fp16
    python pretraining/pretrain.py --data data/mlm --output runs/cont \\
        --config chinese_L-12_H-768_A-12/bert_config.json \\
        --init-checkpoint chinese_L-12_H-768_A-12/bert_model.ckpt \\
        --steps 100000 --batch-size 256 --mixed-precision

    # TPU
    python pretraining/pretrain.py --tpu my-tpu --data gs://bucket/mlm \\
        --output gs://bucket/run --config bert_config.json --batch-size 1024 \\
        --optimizer lamb --mixed-precision

Kill it at any moment and rerun the same command to resume at the last saved state
(every --checkpoint-every steps: weights, optimizer, data position, dropout seeds).
The run folder remembers its options (run_options.json): a rerun with other data,
batch size, schedule or model size refuses and lists the differences; --force-new
deletes the old run and starts over, --resume insists on a state to resume.
A full disk stops the run with exit status 74 and the last state intact; free
space and rerun. Bad input, damaged state or shards: exit status 2 with a message.
Exports OUTPUT/export/: bert_model.ckpt + bert_config.json, model.keras, vocab.txt
(and hf/ with --export-huggingface).
"""
import argparse
import json
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--data", required=True, help="folder written by prepare_data.py")
    p.add_argument("--output", required=True, help="run folder: backup/, checkpoints/, logs/, export/")
    p.add_argument("--tpu", default=None, help="TPU name (or 'local' on a TPU VM)")
    p.add_argument("--replicas", type=int, default=None, help="logical CPU replicas (testing)")
    p.add_argument("--config", default=None, help="bert_config.json / config.json")
    p.add_argument("--init-checkpoint", default=None, help="Google or HF checkpoint to start from")
    p.add_argument("--family", "--model", dest="family", default="bert",
                   choices=["bert", "roberta", "albert", "roformer"],
                   help="the architecture (--model: bert4keras' name for it)")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--num-heads", type=int, default=4)
    p.add_argument("--intermediate-size", type=int, default=1024)
    p.add_argument("--max-position", type=int, default=512)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--steps", type=int, required=True, help="training steps (multiple of --checkpoint-every)")
    p.add_argument("--batch-size", type=int, default=32, help="global batch size per step")
    p.add_argument("--optimizer", choices=["adamw", "lamb"], default="adamw")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="peak learning rate")
    p.add_argument("--warmup-steps", type=int, default=None, help="default: 10%% of --steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--adam-epsilon", type=float, default=1e-6)
    p.add_argument("--clipnorm", type=float, default=1.0, help="global norm clipping (0: off)")
    p.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps")
    p.add_argument("--mixed-precision", action="store_true",
                   help="bfloat16 on TPU and CPU, float16 on GPU (with loss scaling)")
    p.add_argument("--checkpoint-every", type=int, default=1000)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--shuffle-buffer", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--deterministic", action="store_true", help="tf.config.experimental.enable_op_determinism")
    p.add_argument("--export-huggingface", action="store_true")
    p.add_argument("--hf-dtype", default=None, help="e.g. float16 for a half-size model.safetensors")
    p.add_argument("--stop-after-steps", type=int, default=None, help=argparse.SUPPRESS)  # test hook
    p.add_argument("--gather-positions", action="store_true",
                   help="run the MLM head only at the scored positions (same loss, faster step)")
    p.add_argument("--mix-data", default=None,
                   help="a second prepare_data.py folder read in alternate batches (e.g. mlm with unilm)")
    p.add_argument("--copy", action="store_true",
                   help="add the copy mechanism (a pointer over the source tokens; UniLM seq2seq data)")
    p.add_argument("--verbose", type=int, default=2)
    p.add_argument("--steps-per-execution", type=int, default=1,
                   help="training steps per compiled call (a TPU wants e.g. 100; must divide --checkpoint-every)")
    p.add_argument("--cluster-timeout", type=float, default=300,
                   help="multi-worker: seconds to wait for every worker to join before stopping with an error, "
                        "and for each all-reduce once training runs (a dead worker stops the others)")
    choice = p.add_mutually_exclusive_group()
    choice.add_argument("--force-new", action="store_true",
                        help="delete the run already in --output (state, checkpoints, logs, export) and start over")
    choice.add_argument("--resume", action="store_true",
                        help="fail unless --output holds a saved state of a run with the same options")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    # The strategy first: MultiWorkerMirroredStrategy and logical CPU devices must be
    # set up before any other TF op runs.
    from kerasnlp_plus.pretraining.strategy import StartupWatchdog, select_strategy

    watchdog = None
    if os.environ.get("TF_CONFIG") and not args.tpu:
        watchdog = StartupWatchdog(args.cluster_timeout, f"the cluster of TF_CONFIG={os.environ['TF_CONFIG']}")
    strategy, kind = select_strategy(tpu=args.tpu, replicas=args.replicas, collective_timeout=args.cluster_timeout)
    args.watchdog = watchdog
    policy = None
    if args.mixed_precision:
        policy = "mixed_float16" if kind.startswith("gpu") or (kind == "multi_worker" and _has_gpu()) \
            else "mixed_bfloat16"
    from kerasnlp_plus.pretraining.training import run_pretraining

    from kerasnlp_plus.pretraining.state import DiskFullError, StateError

    try:
        summary = _run(args, strategy, policy, run_pretraining)
    except DiskFullError as e:
        print(f"pretrain.py: error: {e.strerror}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Not sys.exit: h5py objects left half-written by the failed save segfault when
        # the interpreter tears them down (HDF5 retries the write on close). Every file
        # that matters is already closed or renamed into place.
        os._exit(74)  # EX_IOERR
    except (StateError, ValueError, FileNotFoundError) as e:
        if os.environ.get("KERASNLP_PLUS_TRACEBACK"):
            raise
        print(f"pretrain.py: error: {e}", file=sys.stderr, flush=True)
        sys.exit(2)
    print(f"strategy {kind} ({summary['replicas']} replicas); " + json.dumps(
        {k: v for k, v in summary.items() if k != "history"}), flush=True)


def _run(args, strategy, policy, run_pretraining):
    size = None
    if args.config is None:
        # TransformerConfig field names: the config object alone knows the file's keys
        size = dict(hidden_size=args.hidden_size, num_layers=args.num_layers, num_heads=args.num_heads,
                    intermediate_size=args.intermediate_size, max_position=args.max_position)
    _, summary = run_pretraining(
        args.data, args.output, strategy, steps=args.steps, batch_size=args.batch_size,
        checkpoint_every=args.checkpoint_every, config_path=args.config,
        init_checkpoint=args.init_checkpoint, family=args.family, size=size, dropout_rate=args.dropout,
        optimizer=args.optimizer, learning_rate=args.learning_rate, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay, global_clipnorm=args.clipnorm,
        gradient_accumulation_steps=args.grad_accum, epsilon=args.adam_epsilon, mixed_precision=policy, seed=args.seed,
        deterministic=args.deterministic, shuffle_buffer=args.shuffle_buffer, log_every=args.log_every,
        export_huggingface=args.export_huggingface, hf_dtype=args.hf_dtype,
        stop_after_steps=args.stop_after_steps, verbose=args.verbose,
        force_new=args.force_new, resume=args.resume,
        on_cluster_joined=args.watchdog.disarm if args.watchdog else None,
        steps_per_execution=args.steps_per_execution,
        gather_positions=args.gather_positions, mix_data_dir=args.mix_data, with_copy=args.copy,
    )
    return summary


def _has_gpu():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


if __name__ == "__main__":
    main()

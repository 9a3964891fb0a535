"""The BERT family as one Keras functional model: BERT, RoBERTa, ALBERT (Google and
brightmart layouts) and RoFormer (rotary positions), with the attention mask chosen by ``application``."""
import keras
from keras import ops

from kerasnlp_plus import masks
from kerasnlp_plus.layers import (
    BiasAdd,
    CopyMechanism,
    FactorizedMapping,
    PositionEmbedding,
    SegmentEmbedding,
    TakeFirstToken,
    TokenEmbedding,
    TransformerBlock,
    get_activation,
)
from kerasnlp_plus.models.config import FAMILIES


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class ConstantTokens(keras.layers.Layer):
    """Token ids all equal to ``token_id`` (the permutation-LM query stream reads the
    [MASK] embedding plus its position, never the token it predicts)."""

    def __init__(self, token_id, **kwargs):
        super().__init__(**kwargs)
        self.token_id = int(token_id)

    def call(self, token_ids):
        return ops.full_like(token_ids, self.token_id)

    def get_config(self):
        return {**super().get_config(), "token_id": self.token_id}


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class SequenceMask(keras.layers.Layer):
    """Passes ``x`` through and gives it the Keras mask ``token_ids != 0``, as
    bert4keras' sequence outputs carry: a ``Loss`` layer's ``compute_loss(inputs, mask)``
    and a ``ConditionalRandomField`` read it to leave padding out. Its name makes a
    bert4keras layer name (``Transformer-%d-FeedForward-Norm``) reachable with
    ``model.get_layer(name).output``. Call with ``[x, token_ids]``; further inputs
    (the block's named steps) are ignored, which keeps them on the model's path."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return inputs[0]

    def compute_mask(self, inputs, mask=None):
        return ops.not_equal(inputs[1], 0)

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(inputs[0].shape, dtype=inputs[0].dtype)


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class PoolerTakeFirstToken(TakeFirstToken):
    """``x[:, 0]`` for the pooler; the sequence mask ends here (the [CLS] vector has
    no sequence axis)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class GatherPositions(keras.layers.Layer):
    """``x[b, positions[b, p]]``: the rows of ``x`` (batch, length, ...) at the int
    ``positions`` (batch, P), as (batch, P, ...). The sequence's padding mask ends
    here: the gathered rows are the scored positions, weighted by the caller."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_mask(self, inputs, mask=None):
        return None

    def call(self, inputs):
        x, positions = inputs
        index = ops.expand_dims(ops.cast(positions, "int32"), -1)
        return ops.take_along_axis(x, index, axis=1)

    def compute_output_spec(self, inputs):
        x, positions = inputs
        return keras.KerasTensor(tuple(positions.shape[:2]) + tuple(x.shape[2:]), dtype=x.dtype)


class HostCheckedInputs:
    """Keras entry points whose inputs are checked on the host.

    Under XLA (jit_compile=True, Keras' default on GPU) the embeddings' own range
    checks are compiled away and an out-of-range id becomes a NaN row (or, for token
    ids, a clamped one). Keras feeds the compiled step from the host, so the data is
    checked there: arrays at once, tf.data / generators / PyDatasets batch by batch.
    A model class mixes this in before ``keras.Model`` and defines ``_input_check()``
    (an :class:`~kerasnlp_plus.generation.validation.InputRangeCheck`).
    """

    def fit(self, *args, **kwargs):
        import inspect

        check = self._input_check()
        # Keras' own signature, so that x and validation_data are found however passed
        bound = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs)
        if "x" in bound.arguments:
            bound.arguments["x"] = check.wrap(bound.arguments["x"])
        if "validation_data" in bound.arguments:
            bound.arguments["validation_data"] = check.wrap_validation_data(bound.arguments["validation_data"])
        return super().fit(*bound.args[1:], **bound.kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        if not kwargs.get("_use_cached_eval_dataset"):  # fit's validation data: checked by fit
            x = self._input_check().wrap(x)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        return super().predict(self._input_check().wrap(x), *args, **kwargs)

    def train_on_batch(self, x, *args, **kwargs):
        self._input_check().check(x)
        return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs):
        self._input_check().check(x)
        return super().test_on_batch(x, *args, **kwargs)

    def predict_on_batch(self, x):
        self._input_check().check(x)
        return super().predict_on_batch(x)



class LossPositionsModel(HostCheckedInputs, keras.Model):
    """The training view :meth:`Transformer.loss_positions_model` returns: a functional
    model over the transformer's layers, with the transformer's host-side input checks
    (its extra ``Input-Positions`` input is not an id of any table)."""

    def __init__(self, transformer, inputs, outputs, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        from kerasnlp_plus.generation.validation import InputRangeCheck

        self._range_check = InputRangeCheck(transformer, extra_inputs=["Input-Positions"])

    def _input_check(self):
        return self._range_check


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class Transformer(HostCheckedInputs, keras.Model):
    """A BERT-family encoder with optional pooler, NSP and MLM heads.

    Inputs (a list, in this order): ``token_ids`` and ``segment_ids`` (``(batch,
    length)``, 0 = padding; float32 like bert4keras', so ``loss * segment_ids`` works,
    and int arrays are accepted); with ``application='plm'`` the factorization ``order``
    (int ``(batch, length)``: ``order[b, i]`` is the step at which position ``i`` is
    predicted, e.g. ``argsort`` of a permutation); with ``custom_position_ids`` the
    position ids; with ``custom_attention_mask`` a 0/1 ``(batch, length, length)`` mask
    that is ANDed with the application's mask.

    Outputs follow bert4keras exactly. The list is ``[sequence output, pooled [CLS]
    vector if with_pool, NSP probabilities if with_nsp, MLM probabilities
    (with_mlm=True) or logits (with_mlm='linear') if with_mlm]``; the model returns its
    one element if there is one, the second alone if there are two, and all but the
    first if there are more. ``application='lm'``/``'unilm'`` imply ``with_mlm=True``
    (as in bert4keras). Sequence outputs carry the Keras mask ``token_ids != 0``.
    bert4keras' layer names reach the same tensors as there with
    ``model.get_layer(name).output``: ``Transformer-%d-MultiHeadSelfAttention`` and its
    ``-Dropout``, ``-Add``, ``-Norm``, ``Transformer-%d-FeedForward`` and its ``-Dropout``,
    ``-Add``, ``-Norm`` (the layer's output), for ALBERT too (one name per depth where
    bert4keras reuses one layer: its ``get_output_at(i)``), ``Embedding-Token``,
    ``-Segment``, ``-Norm``, ``-Dropout``, ``-Mapping``, ``Pooler``, ``Pooler-Dense``,
    ``NSP-Proba``, ``MLM-Dense``, ``MLM-Norm``, ``MLM-Bias``, ``MLM-Activation``.
    ``Embedding-Position`` holds the position table and outputs its rows; bert4keras'
    output of that name (the sum of token, segment and position embeddings) is
    ``model.get_layer('Embedding-Norm').input``.

    ``application``:
        ``'encoder'`` bidirectional; ``'lm'`` causal; ``'unilm'`` segment 0
        bidirectional, segment 1 causal; ``'plm'`` permutation LM. With ``lm``/``unilm``
        and ``with_mlm``, position ``t`` predicts token ``t+1``.

    Permutation LM (``'plm'``) uses XLNet's two streams over the same weights: the
    content stream is BERT over the tokens with mask ``order[j] <= order[i]``; the query
    stream starts from the [MASK] token embedding plus position and segment and, in
    every layer, attends over the previous layer's content stream with the strict mask
    ``order[j] < order[i]``. The MLM head reads the query stream, so the prediction at
    ``i`` depends on the tokens earlier in the order and on ``i``'s position only, never
    on its own token. A pretrained BERT works as-is: the query stream is a masked LM.

    ``with_copy`` (``'unilm'`` with MLM probabilities): mix a pointer over the source
    tokens into the MLM output (:class:`kerasnlp_plus.layers.CopyMechanism`, See et al.
    2017 with CopyNet's selective read); :meth:`output_probabilities` and
    :meth:`copy_context` are how the training view and the decoders apply it.

    Build it with :func:`kerasnlp_plus.models.build_transformer_model`, which parses the
    checkpoint's config and loads its weights.
    """

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_layers,
        num_heads,
        intermediate_size,
        family="bert",
        embedding_size=None,
        max_position=512,
        type_vocab_size=2,
        hidden_act="gelu",
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
        layer_norm_epsilon=1e-12,
        initializer_range=0.02,
        application="encoder",
        with_pool=False,
        with_nsp=False,
        with_mlm=False,
        hierarchical_position=None,
        attention_scale="standard",
        training_length=512,
        custom_position_ids=False,
        custom_attention_mask=False,
        mask_token_id=103,
        with_copy=False,
        dtype=None,
        **kwargs,
    ):
        if family not in FAMILIES:
            raise ValueError(f"unknown model family {family!r}; known: {FAMILIES}")
        if application not in masks.APPLICATIONS:
            raise ValueError(f"unknown application {application!r}; known: {masks.APPLICATIONS}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_heads}")
        if application in ("lm", "unilm"):
            with_mlm = with_mlm or True  # bert4keras: LM and UniLM always predict tokens
        if with_copy and (application != "unilm" or with_mlm not in (True, "softmax")):
            raise ValueError(
                "with_copy (a pointer over the source tokens) needs application='unilm' and MLM "
                f"probabilities (with_mlm=True), got application={application!r}, with_mlm={with_mlm!r}"
            )
        albert = family.startswith("albert")
        # RoFormer: no position table; every layer rotates queries and keys instead.
        rotary = family == "roformer"
        if rotary and hierarchical_position:
            raise ValueError("hierarchical_position does not apply to RoFormer (it has no position table)")
        embedding_size = int(embedding_size or hidden_size)
        init = keras.initializers.TruncatedNormal(stddev=initializer_range)
        # brightmart maps tokens to hidden size before adding positions; Google ALBERT
        # adds and normalizes at embedding size, then maps.
        sum_dim = hidden_size if family == "albert_brightmart" else embedding_size

        # === Layers ===
        self.token_embedding = TokenEmbedding(
            vocab_size, embedding_size, embeddings_initializer=init, dtype=dtype, name="Embedding-Token"
        )
        self.token_mapping = None
        if family == "albert_brightmart":
            self.token_mapping = FactorizedMapping(
                embedding_size, hidden_size, kernel_initializer=init, dtype=dtype, name="Embedding-Mapping-Token"
            )
        self.segment_embedding = SegmentEmbedding(  # refuses ids >= type_vocab_size
            type_vocab_size, sum_dim, embeddings_initializer=init, dtype=dtype, name="Embedding-Segment"
        )
        self.position_embedding = None if rotary else PositionEmbedding(
            max_position,
            sum_dim,
            hierarchical=hierarchical_position,
            embeddings_initializer=init,
            dtype=dtype,
            name="Embedding-Position",
        )
        self.embedding_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="Embedding-Norm"
        )
        self.embedding_dropout = keras.layers.Dropout(dropout_rate, dtype=dtype, name="Embedding-Dropout")
        self.embedding_mapping = None
        if sum_dim != hidden_size:
            self.embedding_mapping = keras.layers.Dense(
                hidden_size, kernel_initializer=init, dtype=dtype, name="Embedding-Mapping"
            )
        block_args = dict(
            num_heads=num_heads,
            head_size=hidden_size // num_heads,
            hidden_size=hidden_size,
            intermediate_size=intermediate_size,
            hidden_act=hidden_act,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            layer_norm_epsilon=layer_norm_epsilon,
            attention_scale=attention_scale,
            training_length=training_length,
            kernel_initializer=init,
            rotary=rotary,
            dtype=dtype,
        )
        if albert:  # one block, applied num_layers times
            self.transformer_blocks = [TransformerBlock(**block_args, name="Transformer")]
        else:
            self.transformer_blocks = [
                TransformerBlock(**block_args, name=f"Transformer-{i}") for i in range(num_layers)
            ]
        self.pooler_dense = self.nsp_dense = None
        if with_pool or with_nsp:
            self.pooler_dense = keras.layers.Dense(
                hidden_size, activation="tanh", kernel_initializer=init, dtype=dtype, name="Pooler-Dense"
            )
        if with_nsp:
            self.nsp_dense = keras.layers.Dense(
                2, activation="softmax", kernel_initializer=init, dtype=dtype, name="NSP-Proba"
            )
        self.mlm_dense = self.mlm_norm = self.mlm_bias = self.mlm_activation = None
        if with_mlm:
            self.mlm_dense = keras.layers.Dense(
                hidden_size if family == "albert_brightmart" else embedding_size,
                activation=get_activation(hidden_act),
                kernel_initializer=init,
                dtype=dtype,
                name="MLM-Dense",
            )
            self.mlm_norm = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, dtype=dtype, name="MLM-Norm")
            self.mlm_bias = BiasAdd(dtype=dtype, name="MLM-Bias")
            # Probabilities in float32 even under mixed precision.
            activation = "softmax" if with_mlm is True else with_mlm
            self.mlm_activation = keras.layers.Activation(activation, dtype="float32", name="MLM-Activation")

        # Pointer-generator over the source tokens (layers/copy.py); checkpoints keep it
        # under cls/copy (optional: a standard checkpoint leaves it freshly initialized).
        self.copy_mechanism = None
        if with_copy:
            # float32 like the MLM activation: it mixes probabilities, which a
            # mixed-precision policy would otherwise round to 16 bits on the way in
            self.copy_mechanism = CopyMechanism(hidden_size, initializer_range=initializer_range, dtype="float32",
                                                name="Copy")
            self.copy_mechanism.build((None, None, hidden_size))

        # === Functional model ===
        self._num_layers = int(num_layers)
        self._family = family
        self._application = application
        self._with_mlm = with_mlm
        # float32 like bert4keras' inputs (scripts multiply losses by segment ids);
        # the embeddings cast them to int.
        token_ids = keras.Input((None,), dtype="float32", name="Input-Token")
        segment_ids = keras.Input((None,), dtype="float32", name="Input-Segment")
        inputs = [token_ids, segment_ids]
        order = position_ids = custom_mask = None
        if application == "plm":
            order = keras.Input((None,), dtype="float32", name="Input-Order")
            inputs.append(order)
        if custom_position_ids:
            position_ids = keras.Input((None,), dtype="float32", name="Input-Position")
            inputs.append(position_ids)
        if custom_attention_mask:
            custom_mask = keras.Input((None, None), dtype="float32", name="Input-Mask")
            inputs.append(custom_mask)

        x = self.embed(token_ids, segment_ids, position_ids)
        attention_mask = masks.AttentionMask(application, name="Attention-Mask")(
            token_ids, segment_ids, order, custom_mask
        )
        if application == "plm":
            query_mask = masks.AttentionMask("plm", strict=True, name="Attention-Mask-Query")(
                token_ids, segment_ids, order, custom_mask
            )
            query_tokens = ConstantTokens(mask_token_id, name="Query-Tokens")(token_ids)
            g = self.embed(query_tokens, segment_ids, position_ids)
        # The mask travels through the blocks into the taps and the outputs; the
        # layers it passes through only carry it (attention reads ``attention_mask``).
        for layer in [self.token_embedding, self.token_mapping] + [
            inner for block in self.transformer_blocks for inner in block._flatten_layers(include_self=True)
        ]:
            if layer is not None:
                layer.supports_masking = True
        for depth, block in enumerate(self.blocks_by_depth):
            if application == "plm":
                # every call of a block returns the same structure: Keras' graph check
                # sizes each call's outputs by the block's first call
                g, _ = block(g, value=x, attention_mask=query_mask, position_ids=position_ids,
                             return_intermediates=True)
            x, steps = block(x, attention_mask=attention_mask, position_ids=position_ids, return_intermediates=True)
            # bert4keras' layer names for the block's steps: pass-through layers that
            # feed the layer's output tap, so they lie on the model's path
            taps = [SequenceMask(dtype=dtype, name=f"Transformer-{depth}-{step}")([t, token_ids])
                    for step, t in zip(TransformerBlock.INTERMEDIATES, steps)]
            x = SequenceMask(dtype=dtype, name=f"Transformer-{depth}-FeedForward-Norm")([x, token_ids] + taps)
        sequence = g if application == "plm" else x
        # Kept for loss_positions_model (the head run at chosen positions only).
        self._sequence_output = sequence

        outputs = [sequence]
        if self.pooler_dense is not None:
            pooled = self.pooler_dense(PoolerTakeFirstToken(name="Pooler")(x))
            if with_pool:
                outputs.append(pooled)
            if with_nsp:
                outputs.append(self.nsp_dense(pooled))
        if with_mlm:
            # float32 like the MLM activation (probabilities under mixed precision)
            probs = self.mlm_head(sequence)
            if with_copy:
                # keys=False: the layer computes them in its call (a variable read by a
                # plain op here would be frozen into the functional graph)
                context = self.copy_context(sequence, token_ids, segment_ids, keys=False)
                probs = self.copy_mechanism(sequence, probs, *context, context[1])
            outputs.append(SequenceMask(dtype="float32", name="MLM-Output")([probs, token_ids]))
        # bert4keras' rule: one output -> it; two -> the second; more -> all but the first
        if len(outputs) == 1:
            outputs = outputs[0]
        elif len(outputs) == 2:
            outputs = outputs[1]
        else:
            outputs = outputs[1:]
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        # === Config ===
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(hidden_size)
        self.num_heads = int(num_heads)
        self.intermediate_size = int(intermediate_size)
        self.embedding_size = embedding_size
        self.max_position = int(max_position)
        self.type_vocab_size = int(type_vocab_size)
        self.hidden_act = hidden_act
        self.dropout_rate = float(dropout_rate)
        self.attention_dropout_rate = float(attention_dropout_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.initializer_range = float(initializer_range)
        self.with_pool = with_pool
        self.with_nsp = with_nsp
        self.hierarchical_position = None if rotary else self.position_embedding.hierarchical
        self.attention_scale = attention_scale
        self.training_length = int(training_length)
        self.custom_position_ids = bool(custom_position_ids)
        self.custom_attention_mask = bool(custom_attention_mask)
        self.mask_token_id = int(mask_token_id)
        self.with_copy = bool(with_copy)
        # bert4keras attributes read by scripts
        self.initializer = init
        self.keep_tokens = None  # set by build_transformer_model; reused by load_weights_from_checkpoint

    # --- read-only structure -------------------------------------------------------
    @property
    def family(self):
        return self._family

    @property
    def application(self):
        return self._application

    @property
    def with_mlm(self):
        return self._with_mlm

    @property
    def num_layers(self):
        return self._num_layers

    @property
    def blocks_by_depth(self):
        """The block applied at each depth (ALBERT repeats its one shared block)."""
        if len(self.transformer_blocks) == 1 and self._num_layers > 1:
            return self.transformer_blocks * self._num_layers
        return list(self.transformer_blocks)

    # --- pieces shared by the functional graph and the cached decoder ----------------
    def embed(self, token_ids, segment_ids, position_ids=None, training=None):
        """Token + segment + position embeddings, normalized (and mapped for ALBERT)."""
        x = self.token_embedding(token_ids)
        if self.token_mapping is not None:
            x = self.token_mapping(x)
        x = x + self.segment_embedding(segment_ids)
        if self.position_embedding is not None:  # RoFormer rotates in attention instead
            x = x + self.position_embedding(x, position_ids=position_ids)
        x = self.embedding_dropout(self.embedding_norm(x), training=training)
        if self.embedding_mapping is not None:
            x = self.embedding_mapping(x)
        return x

    def mlm_head(self, x, output_kernel=None):
        """Transform, normalize, project on the (tied) token embedding, add the bias.

        ``output_kernel``: :meth:`mlm_output_kernel`, computed once by a caller that
        runs the head many times (a decoder): a product with the embedding stored
        transposed is ~2x faster on CPU for a few rows than one with ``E^T``
        (``bench/decode.py``)."""
        x = self.mlm_norm(self.mlm_dense(x))
        if self.token_mapping is not None:
            x = self.token_mapping(x, reverse=True)
        if output_kernel is None:
            x = self.token_embedding(x, reverse=True)
        else:
            x = ops.matmul(x, ops.cast(output_kernel, x.dtype))
        return self.mlm_activation(self.mlm_bias(x))

    def mlm_output_kernel(self):
        """The tied output projection ``E^T`` ``(embedding_size, vocab)`` as a tensor
        (a copy: compute it again after the weights change)."""
        return ops.transpose(ops.cast(self.token_embedding.embeddings, self.token_embedding.compute_dtype))

    def copy_context(self, hidden, token_ids, segment_ids, keys=True):
        """``(source_keys, source_ids, source_mask)`` for :attr:`copy_mechanism`: the
        keys of every position's hidden state (``keys=False``: the hidden states
        themselves, for the layer's ``call``), its token id, and whether it may be
        copied (a source token: segment 0, not padding). A decoder computes this once
        per source.
        """
        token_ids = ops.cast(token_ids, "int32")
        source = ops.logical_and(ops.not_equal(token_ids, 0), ops.equal(ops.cast(segment_ids, "int32"), 0))
        return (self.copy_mechanism.keys(hidden) if keys else hidden), token_ids, source

    def output_probabilities(self, hidden, copy_context=None, query_ids=None, output_kernel=None):
        """The MLM output at ``hidden`` ``(batch, P, hidden)``: :meth:`mlm_head`, mixed
        with the copy distribution over ``copy_context`` (see :meth:`copy_context`)
        when the model has a copy mechanism; ``query_ids`` ``(batch, P)`` are the token
        ids at those positions (the tokens just written); ``output_kernel``: see
        :meth:`mlm_head`."""
        probs = self.mlm_head(hidden, output_kernel)
        if self.copy_mechanism is None:
            return probs
        if copy_context is None or query_ids is None:
            raise ValueError("this model has a copy mechanism (with_copy=True): its output needs the "
                             "source's copy_context and the query_ids")
        return self.copy_mechanism.mix(hidden, probs, *copy_context, query_ids)

    def loss_positions_model(self):
        """A training view of this model that runs the MLM head only where the loss
        is counted (Google BERT's ``masked_lm_positions``).

        The returned functional model shares every layer (and weight) with this one.
        Its inputs are this model's inputs plus ``Input-Positions`` (int, ``(batch,
        P)``: the positions to predict at, padded with any valid index and given a 0
        sample weight); its output is the MLM output at those positions only,
        ``(batch, P, vocab)``, equal to ``model(inputs)`` gathered at ``positions``.
        The head (a ``hidden x vocab`` projection) dominates the cost of a small
        model, and seq2seq or MLM losses count a few positions out of the sequence,
        so training through this view is several times cheaper. This model itself,
        its outputs and the cached decoder are unchanged.
        """
        if not self._with_mlm:
            raise ValueError("loss_positions_model needs a model built with with_mlm")
        positions = keras.Input((None,), dtype="int32", name="Input-Positions")
        picked = GatherPositions(name="Gather-Positions")([self._sequence_output, positions])
        if self.copy_mechanism is not None:
            token_ids, segment_ids = self.inputs[0], self.inputs[1]
            context = self.copy_context(self._sequence_output, token_ids, segment_ids, keys=False)
            picked_ids = ops.take_along_axis(context[1], ops.cast(positions, "int32"), axis=1)
            head = self.copy_mechanism(picked, self.mlm_head(picked), *context, picked_ids)
        else:
            head = self.mlm_head(picked)
        return LossPositionsModel(
            self, inputs=list(self.inputs) + [positions], outputs=head,
            name=f"{self.name}_at_positions",
        )

    # --- key/value cache -----------------------------------------------------------
    def init_cache(self, batch_size, max_length):
        """Zeros of shape ``(num_layers, batch, 2, max_length, heads, head_size)``."""
        block = self.transformer_blocks[0]
        return ops.zeros(
            (self._num_layers, batch_size, 2, max_length, block.num_heads, block.head_size),
            dtype=self.compute_dtype,
        )

    def call_with_cache(
        self,
        token_ids,
        segment_ids,
        cache,
        cache_update_index,
        attention_mask,
        position_ids=None,
        return_hidden=False,
        source_cache=None,
        output_positions=None,
    ):
        """Run ``token_ids`` (the new tokens only) against the cache.

        Args:
            token_ids, segment_ids: int ``(batch, new_length)``.
            cache: from :meth:`init_cache` (or a previous call), or a list of its
                per-layer tensors (then a list is returned).
            cache_update_index: where the new tokens' keys/values are written.
            attention_mask: bool ``(batch, new_length, max_length)`` over the cache slots;
                it must hide unwritten slots and padding (see ``masks.visibility``).
            position_ids: int ``(batch, new_length)``; defaults to
                ``cache_update_index + arange(new_length)``.
            return_hidden: return the last layer's hidden states instead of the MLM
                output (a decoder's prefill needs the head at one position only).
            source_cache: a lean decoder's shared source keys/values: per layer
                ``(keys, values)``, each head-major ``(sources, heads, source_len,
                head_size)`` (a prefilled :meth:`init_cache`, transposed); then
                ``cache`` holds per layer ``(keys, values)`` of the generated slots of
                the ``batch`` rows (the beams of each source consecutive), each
                ``(batch, heads, max_length, head_size)``, and ``attention_mask``
                covers ``source_len + max_length`` slots (see ``MultiHeadAttention``).
            output_positions: int ``(batch,)``: return the output at this one new
                token of each row only, ``(batch, 1, ...)`` (a decoder's prefill: the
                last source token). The last layer then computes its keys and values
                for every token but its queries, attention output and feed-forward
                for these tokens only (a quarter of a 3-layer prefill's work); a
                rotary model runs its last layer on every token and picks the
                output afterwards.

        Returns:
            ``(output, cache)``: the MLM output (or hidden states without an MLM head,
            or with ``return_hidden``) for the new tokens, and the updated cache. Equal
            to the full forward pass on the whole sequence.
        """
        if self._application == "plm":
            raise ValueError("call_with_cache supports 'encoder', 'lm' and 'unilm' models, not 'plm'")
        if position_ids is None:
            length = ops.shape(token_ids)[1]
            position_ids = cache_update_index + ops.arange(length, dtype="int32")[None, :]
        x = self.embed(token_ids, segment_ids, position_ids)
        caches = []
        blocks = self.blocks_by_depth
        pick = None if output_positions is None else ops.cast(output_positions, "int32")[:, None, None]
        # Rotary attention rotates queries and keys at one shared position_ids, so a
        # rotary last layer runs on every token and the output is picked afterwards.
        trim = pick is not None and bool(blocks) and not blocks[-1].attention.rotary
        for depth, block in enumerate(blocks):
            extra = {} if source_cache is None else {"source_cache": source_cache[depth]}
            query, mask = x, attention_mask
            if trim and depth == len(blocks) - 1:  # queries at the output positions only
                query = ops.take_along_axis(x, pick, axis=1)
                mask = None if attention_mask is None else ops.take_along_axis(attention_mask, pick, axis=1)
            x, layer_cache = block(
                query, value=x, attention_mask=mask, cache=cache[depth], cache_update_index=cache_update_index,
                position_ids=position_ids, **extra,
            )
            caches.append(layer_cache)
        if pick is not None and not trim:
            x = ops.take_along_axis(x, pick, axis=1)
        if self._with_mlm and not return_hidden and self.copy_mechanism is not None:
            raise ValueError("call_with_cache: a model with a copy mechanism needs return_hidden=True and "
                             "output_probabilities(hidden, copy_context) (the source's keys are not cached)")
        output = self.mlm_head(x) if self._with_mlm and not return_hidden else x
        # A list in, a list out: a decoder that keeps one tensor per layer updates
        # only those (stacking copied the whole cache every step).
        return output, (caches if isinstance(cache, (list, tuple)) else ops.stack(caches, axis=0))

    def _input_check(self):
        from kerasnlp_plus.generation.validation import InputRangeCheck

        return InputRangeCheck(self)

    # --- weights -------------------------------------------------------------------
    def load_weights_from_checkpoint(self, checkpoint_path, keep_tokens=None, naming=None):
        """Load a Google TF checkpoint or a Hugging Face folder/file (bert4keras name).
        ``keep_tokens`` defaults to the one the model was built with."""
        from kerasnlp_plus.checkpoints import load_checkpoint

        if keep_tokens is None:
            keep_tokens = self.keep_tokens

        load_checkpoint(self, checkpoint_path, keep_tokens=keep_tokens, naming=naming)

    def get_config(self):
        return {
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_layers": self._num_layers,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "family": self._family,
            "embedding_size": self.embedding_size,
            "max_position": self.max_position,
            "type_vocab_size": self.type_vocab_size,
            "hidden_act": self.hidden_act,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_range": self.initializer_range,
            "application": self._application,
            "with_pool": self.with_pool,
            "with_nsp": self.with_nsp,
            "with_mlm": self._with_mlm,
            "hierarchical_position": self.hierarchical_position,
            "attention_scale": self.attention_scale,
            "training_length": self.training_length,
            "custom_position_ids": self.custom_position_ids,
            "custom_attention_mask": self.custom_attention_mask,
            "mask_token_id": self.mask_token_id,
            "with_copy": self.with_copy,
            "name": self.name,
            "trainable": self.trainable,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

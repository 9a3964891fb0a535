"""The post-LayerNorm BERT block: attention -> add & norm -> feed-forward -> add & norm."""
import keras

from kerasnlp_plus.layers.attention import MultiHeadAttention

ACTIVATIONS = {
    # BERT's "gelu" is the exact erf form; "gelu_new"/"gelu_pytorch_tanh" the tanh one.
    "gelu": lambda x: keras.activations.gelu(x, approximate=False),
    "gelu_new": lambda x: keras.activations.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: keras.activations.gelu(x, approximate=True),
    "relu": keras.activations.relu,
    "swish": keras.activations.silu,
    "silu": keras.activations.silu,
    "tanh": keras.activations.tanh,
}


def get_activation(name):
    """An activation by its BERT config name (``hidden_act``)."""
    if callable(name):
        return name
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown hidden_act {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class TransformerBlock(keras.layers.Layer):
    """One BERT encoder layer (post-LN), sharable across depths (ALBERT).

    Call arguments mirror :class:`MultiHeadAttention`: ``attention_mask`` (bool),
    ``attention_bias`` (float), ``value`` (another stream to attend over: the
    permutation-LM query stream attends over the content stream), ``cache`` and
    ``cache_update_index`` (returns ``(output, cache)`` when a cache is given),
    ``position_ids`` (read only by a ``rotary`` block: RoFormer) and
    ``return_intermediates`` (returns ``(output, [the outputs named INTERMEDIATES])``,
    which the model exposes under bert4keras' layer names).
    """

    def __init__(
        self,
        num_heads,
        head_size,
        hidden_size,
        intermediate_size,
        hidden_act="gelu",
        dropout_rate=0.1,
        attention_dropout_rate=0.1,
        layer_norm_epsilon=1e-12,
        attention_scale="standard",
        training_length=512,
        kernel_initializer="glorot_uniform",
        rotary=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.rotary = bool(rotary)
        self.num_heads = int(num_heads)
        self.head_size = int(head_size)
        self.hidden_size = int(hidden_size)
        self.intermediate_size = int(intermediate_size)
        self.hidden_act = hidden_act
        self.dropout_rate = float(dropout_rate)
        self.attention_dropout_rate = float(attention_dropout_rate)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.attention_scale = attention_scale
        self.training_length = int(training_length)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        policy = self.dtype_policy
        self.attention = MultiHeadAttention(
            self.num_heads,
            self.head_size,
            self.hidden_size,
            attention_dropout=self.attention_dropout_rate,
            attention_scale=attention_scale,
            training_length=training_length,
            kernel_initializer=self.kernel_initializer,
            rotary=self.rotary,
            dtype=policy,
            name="attention",
        )
        # Dropout on the attention branch before the residual add (``dropout_rate``); the
        # attention probabilities' dropout (``attention_dropout_rate``) is inside
        # ``self.attention``. The attribute was ``attention_dropout`` until it was renamed
        # for that reason: it holds no variables, so older .keras files still load.
        self.attention_residual_dropout = keras.layers.Dropout(self.dropout_rate, dtype=policy)
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="attention_norm"
        )
        self.intermediate_dense = keras.layers.Dense(
            self.intermediate_size,
            activation=get_activation(hidden_act),
            kernel_initializer=self.kernel_initializer,
            dtype=policy,
            name="intermediate",
        )
        self.output_dense = keras.layers.Dense(
            self.hidden_size, kernel_initializer=self.kernel_initializer, dtype=policy, name="output"
        )
        self.output_dropout = keras.layers.Dropout(self.dropout_rate, dtype=policy)
        self.output_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=policy, name="output_norm"
        )

    def build(self, input_shape, *args, **kwargs):
        self.attention.build(input_shape)
        self.attention_norm.build(input_shape)
        self.intermediate_dense.build(input_shape)
        self.output_dense.build(tuple(input_shape[:-1]) + (self.intermediate_size,))
        self.output_norm.build(input_shape)
        self.built = True

    def call(
        self,
        x,
        value=None,
        attention_mask=None,
        attention_bias=None,
        cache=None,
        cache_update_index=None,
        training=None,
        position_ids=None,
        source_cache=None,
        return_intermediates=False,
    ):
        if return_intermediates and cache is not None:
            raise ValueError("return_intermediates is for the full forward pass, not with a cache")
        extra = {} if source_cache is None else {"source_cache": source_cache}  # lean decoding cache
        attended = self.attention(
            x,
            value=value,
            attention_mask=attention_mask,
            attention_bias=attention_bias,
            cache=cache,
            cache_update_index=cache_update_index,
            training=training,
            position_ids=position_ids,
            **extra,
        )
        if cache is not None:
            attended, cache = attended
        attended_dropped = self.attention_residual_dropout(attended, training=training)
        attended_sum = x + attended_dropped
        x = self.attention_norm(attended_sum)
        ffn = self.output_dense(self.intermediate_dense(x))
        ffn_dropped = self.output_dropout(ffn, training=training)
        ffn_sum = x + ffn_dropped
        out = self.output_norm(ffn_sum)
        if return_intermediates:  # bert4keras' per-layer outputs, in INTERMEDIATES order
            return out, [attended, attended_dropped, attended_sum, x, ffn, ffn_dropped, ffn_sum]
        return out if cache is None else (out, cache)

    # What ``return_intermediates=True`` returns besides the output (the last
    # ``-FeedForward-Norm``), named as bert4keras names its layers' outputs.
    INTERMEDIATES = (
        "MultiHeadSelfAttention", "MultiHeadSelfAttention-Dropout", "MultiHeadSelfAttention-Add",
        "MultiHeadSelfAttention-Norm", "FeedForward", "FeedForward-Dropout", "FeedForward-Add",
    )

    def compute_output_spec(self, x, cache=None, return_intermediates=False, **kwargs):
        out = keras.KerasTensor(x.shape, dtype=self.compute_dtype)
        if return_intermediates:
            return out, [keras.KerasTensor(x.shape, dtype=self.compute_dtype) for _ in self.INTERMEDIATES]
        return out if cache is None else (out, keras.KerasTensor(cache.shape, dtype=cache.dtype))

    def get_config(self):
        if callable(self.hidden_act):
            raise ValueError("a TransformerBlock with a callable hidden_act cannot be serialized")
        return {
            **super().get_config(),
            "num_heads": self.num_heads,
            "head_size": self.head_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "dropout_rate": self.dropout_rate,
            "attention_dropout_rate": self.attention_dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "attention_scale": self.attention_scale,
            "training_length": self.training_length,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "rotary": self.rotary,
        }

"""Keras' Adam, AdamW and Lamb with exact updates for embedding gradients.

The gradient of an embedding lookup is a ``tf.IndexedSlices`` in which a row appears
once per occurrence of its token in the batch (and, after a MirroredStrategy
all-reduce, once per replica). Keras 3's TensorFlow optimizers apply such slices one
by one, so a repeated row's second moment gets ``sum(g_i**2)`` instead of
``(sum g_i)**2``: the update differs from the dense one, and 1 and N replicas
disagree. TF 1's optimizers summed duplicate indices first; these classes make the
slices dense before the update, which is exact (and cheap at BERT's vocabulary
sizes). Use them wherever Keras' own would be used::

    from kerasnlp_plus.optimizers import AdamW
    model.compile(optimizer=AdamW(1e-5, weight_decay=0.01), ...)
"""
import keras


class DenseGradientsMixin:
    """Converts ``tf.IndexedSlices`` gradients to dense tensors before ``apply``."""

    def apply(self, grads, trainable_variables=None):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return super().apply(grads, trainable_variables)


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class Adam(DenseGradientsMixin, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with exact embedding updates and bert4keras' arguments
    (``epsilon`` defaults to 1e-6 as there; ``bias_correction`` must stay True)."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6, bias_correction=True, **kwargs):
        if not bias_correction:
            raise ValueError("Adam(bias_correction=False) is not supported: Keras' Adam always corrects the bias")
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, **kwargs)


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class AdamW(DenseGradientsMixin, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with exact embedding updates."""


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class Lamb(DenseGradientsMixin, keras.optimizers.Lamb):
    """``keras.optimizers.Lamb`` with exact embedding updates."""


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class Lion(DenseGradientsMixin, keras.optimizers.Lion):
    """``keras.optimizers.Lion`` (the same update as bert4keras' ``Lion``) with exact
    embedding updates and bert4keras' defaults."""

    def __init__(self, learning_rate=3e-4, beta_1=0.95, beta_2=0.98, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, **kwargs)


LionV2 = Lion  # bert4keras' tf.keras implementation of the same optimizer

__all__ = ["Adam", "AdamW", "DenseGradientsMixin", "Lamb", "Lion", "LionV2"]


# --- bert4keras 0.11.5's optimizer API -----------------------------------------------
# bert4keras builds optimizers by extension: ``extend_with_weight_decay(Adam)`` returns
# a class with the extra arguments. Where Keras 3 has the feature (weight decay,
# gradient accumulation, EMA, learning-rate schedules) the extension maps the
# bert4keras argument onto it; the others (lookahead, layer adaptation, parameter-wise
# learning rates, lazy optimization) wrap Keras' per-variable ``update_step``.
import functools  # noqa: E402
import re  # noqa: E402

import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

def _matches(name, patterns):
    return any(re.search(p, name) for p in patterns)


def _variable_name(variable):
    return getattr(variable, "path", None) or variable.name


def _pop(kwargs, name, default):
    return kwargs.pop(name) if name in kwargs else default


def _named_subclass(base, name, body):
    cls = type(f"{name}{base.__name__}", (base,), body)
    cls.__module__ = __name__
    return cls


def export_to_custom_objects(base_extend_with):
    """bert4keras' decorator of the ``extend_with_*`` functions: the returned function
    takes an optional ``name`` for the new class (``extend_with_piecewise_linear_lr(Adam,
    name='AdamLR')``) and registers the class in Keras' custom objects under it, so a
    compiled model saved with it loads again."""

    @functools.wraps(base_extend_with)
    def new_extend_with(BaseOptimizer, name=None):
        NewOptimizer = base_extend_with(BaseOptimizer)
        if isinstance(name, str):
            NewOptimizer.__name__ = NewOptimizer.__qualname__ = name
        keras.saving.get_custom_objects()[NewOptimizer.__name__] = NewOptimizer
        return NewOptimizer

    return new_extend_with


@export_to_custom_objects
def extend_with_weight_decay(BaseOptimizer):
    """Adds ``weight_decay_rate`` and ``exclude_from_weight_decay`` (regexes searched in
    the variable path, e.g. ``['Norm', 'bias']``): Keras' decoupled weight decay,
    ``w -= lr * rate * w``, as bert4keras' ``AdamW``."""

    def __init__(self, *args, **kwargs):
        rate = _pop(kwargs, "weight_decay_rate", 0.01)
        exclude = list(_pop(kwargs, "exclude_from_weight_decay", []))
        BaseOptimizer.__init__(self, *args, weight_decay=rate, **kwargs)
        self.weight_decay_rate = rate
        self.exclude_from_weight_decay_patterns = exclude

    def _use_weight_decay(self, variable):
        if _matches(_variable_name(variable), self.exclude_from_weight_decay_patterns):
            return False
        return BaseOptimizer._use_weight_decay(self, variable)

    def get_config(self):
        config = BaseOptimizer.get_config(self)
        config.pop("weight_decay", None)
        return {**config, "weight_decay_rate": self.weight_decay_rate,
                "exclude_from_weight_decay": self.exclude_from_weight_decay_patterns}

    return _named_subclass(BaseOptimizer, "WeightDecay", {
        "__init__": __init__, "_use_weight_decay": _use_weight_decay, "get_config": get_config})


class PiecewiseLinearSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """``base * piecewise_linear(step, schedule)`` (bert4keras' ``lr_schedule``)."""

    def __init__(self, base, schedule):
        self.base = float(base)
        self.schedule = {int(k): float(v) for k, v in schedule.items()}

    def __call__(self, step):
        from kerasnlp_plus.backend import piecewise_linear

        return self.base * piecewise_linear(step, self.schedule)

    def get_config(self):
        return {"base": self.base, "schedule": self.schedule}


@export_to_custom_objects
def extend_with_piecewise_linear_lr(BaseOptimizer):
    """Adds ``lr_schedule={step: multiplier}``: the learning rate is multiplied by the
    piecewise-linear function of the step (``{1000: 1, 2000: 0.1}``: warm up over
    1,000 steps, then decay to 0.1 at 2,000), as a Keras learning-rate schedule."""

    def __init__(self, *args, **kwargs):
        schedule = dict(_pop(kwargs, "lr_schedule", {0: 1}))
        learning_rate = kwargs.pop("learning_rate", args[0] if args else 0.001)
        args = args[1:]
        BaseOptimizer.__init__(self, PiecewiseLinearSchedule(learning_rate, schedule), *args, **kwargs)
        self.lr_schedule = schedule

    return _named_subclass(BaseOptimizer, "PiecewiseLinearLr", {"__init__": __init__})


@export_to_custom_objects
def extend_with_gradient_accumulation(BaseOptimizer):
    """Adds ``grad_accum_steps``: Keras' ``gradient_accumulation_steps`` (the update is
    applied every ``grad_accum_steps`` batches with the mean gradient)."""

    def __init__(self, *args, **kwargs):
        steps = int(_pop(kwargs, "grad_accum_steps", 2))
        BaseOptimizer.__init__(self, *args, gradient_accumulation_steps=steps if steps > 1 else None, **kwargs)
        self.grad_accum_steps = steps

    return _named_subclass(BaseOptimizer, "GradientAccumulation", {"__init__": __init__})


@export_to_custom_objects
def extend_with_exponential_moving_average(BaseOptimizer):
    """Adds ``ema_momentum``: Keras' ``use_ema``. ``apply_ema_weights()`` puts the
    averages into the model's variables (keeping the current values) and
    ``reset_old_weights()`` puts the kept values back, as in bert4keras. Keras' average
    starts from the weights themselves (bert4keras' from zeros with bias correction),
    so ``bias_correction`` is accepted and has nothing to correct."""

    def __init__(self, *args, **kwargs):
        momentum = float(_pop(kwargs, "ema_momentum", 0.999))
        BaseOptimizer.__init__(self, *args, use_ema=True, ema_momentum=momentum, **kwargs)
        self._old_weights = None

    def apply_ema_weights(self, bias_correction=True):
        variables = self._trainable_variables
        self._old_weights = [ops.convert_to_numpy(v) for v in variables]
        for variable, average in zip(variables, self._model_variables_moving_average):
            if average is not None:
                variable.assign(average)
        return self._old_weights

    def reset_old_weights(self):
        if self._old_weights is None:
            raise ValueError("reset_old_weights() called before apply_ema_weights()")
        for variable, value in zip(self._trainable_variables, self._old_weights):
            variable.assign(value)

    return _named_subclass(BaseOptimizer, "ExponentialMovingAverage", {
        "__init__": __init__, "apply_ema_weights": apply_ema_weights, "reset_old_weights": reset_old_weights})


@export_to_custom_objects
def extend_with_lookahead(BaseOptimizer):
    """Adds Lookahead (``steps_per_slow_update=5``, ``slow_step_size=0.5``): every
    ``k`` steps the slow weights move ``alpha`` of the way to the fast ones and the fast
    weights are reset to them."""

    def __init__(self, *args, **kwargs):
        steps = int(_pop(kwargs, "steps_per_slow_update", 5))
        step_size = float(_pop(kwargs, "slow_step_size", 0.5))
        BaseOptimizer.__init__(self, *args, **kwargs)
        self.steps_per_slow_update, self.slow_step_size = steps, step_size

    def build(self, variables):
        BaseOptimizer.build(self, variables)
        self._slow_weights = []
        for variable in variables:
            slow = self.add_variable_from_reference(variable, name="slow")
            slow.assign(variable)
            self._slow_weights.append(slow)

    def update_step(self, gradient, variable, learning_rate):
        BaseOptimizer.update_step(self, gradient, variable, learning_rate)
        slow = self._slow_weights[self._get_variable_index(variable)]
        sync = ops.equal((self.iterations + 1) % self.steps_per_slow_update, 0)
        new_slow = ops.where(sync, slow + self.slow_step_size * (variable - slow), slow)
        slow.assign(new_slow)
        variable.assign(ops.where(sync, new_slow, variable))

    def get_config(self):
        return {**BaseOptimizer.get_config(self), "steps_per_slow_update": self.steps_per_slow_update,
                "slow_step_size": self.slow_step_size}

    return _named_subclass(BaseOptimizer, "Lookahead", {
        "__init__": __init__, "build": build, "update_step": update_step, "get_config": get_config})


@export_to_custom_objects
def extend_with_layer_adaptation(BaseOptimizer):
    """Adds LAMB's layer adaptation: each variable's update is scaled by
    ``||w|| / ||update||`` (1 when either is 0); ``exclude_from_layer_adaptation``
    regexes leave variables out. Weight decay (Keras') is applied outside the ratio."""

    def __init__(self, *args, **kwargs):
        exclude = list(_pop(kwargs, "exclude_from_layer_adaptation", []))
        BaseOptimizer.__init__(self, *args, **kwargs)
        self.exclude_from_layer_adaptation = exclude

    def update_step(self, gradient, variable, learning_rate):
        if _matches(_variable_name(variable), self.exclude_from_layer_adaptation):
            return BaseOptimizer.update_step(self, gradient, variable, learning_rate)
        old = ops.convert_to_tensor(variable) * 1
        BaseOptimizer.update_step(self, gradient, variable, learning_rate)
        update = variable - old
        w_norm, u_norm = ops.norm(old), ops.norm(update)
        ratio = ops.where((w_norm > 0) & (u_norm > 0), w_norm / ops.maximum(u_norm, 1e-30), 1.0)
        variable.assign(old + update * ratio)

    def get_config(self):
        return {**BaseOptimizer.get_config(self), "exclude_from_layer_adaptation": self.exclude_from_layer_adaptation}

    return _named_subclass(BaseOptimizer, "LayerAdaptation", {
        "__init__": __init__, "update_step": update_step, "get_config": get_config})


@export_to_custom_objects
def extend_with_parameter_wise_lr(BaseOptimizer):
    """Adds ``paramwise_lr_schedule={name: multiplier}``: the update of a variable whose
    path contains ``name`` is multiplied by ``multiplier`` (all matching entries)."""

    def __init__(self, *args, **kwargs):
        schedule = dict(_pop(kwargs, "paramwise_lr_schedule", {}))
        BaseOptimizer.__init__(self, *args, **kwargs)
        self.paramwise_lr_schedule = schedule

    def update_step(self, gradient, variable, learning_rate):
        multiplier = 1.0
        for key, value in self.paramwise_lr_schedule.items():
            if key in _variable_name(variable):
                multiplier *= value
        if multiplier == 1.0:
            return BaseOptimizer.update_step(self, gradient, variable, learning_rate)
        old = ops.convert_to_tensor(variable) * 1
        BaseOptimizer.update_step(self, gradient, variable, learning_rate)
        variable.assign(old + (variable - old) * multiplier)

    def get_config(self):
        return {**BaseOptimizer.get_config(self), "paramwise_lr_schedule": self.paramwise_lr_schedule}

    return _named_subclass(BaseOptimizer, "ParameterWiseLr", {
        "__init__": __init__, "update_step": update_step, "get_config": get_config})


@export_to_custom_objects
def extend_with_lazy_optimization(BaseOptimizer):
    """Adds lazy updates: rows of the variables matched by
    ``include_in_lazy_optimization`` (regexes) whose gradient is all zero keep their
    value (embeddings of tokens absent from the batch do not drift under Adam)."""

    def __init__(self, *args, **kwargs):
        include = list(_pop(kwargs, "include_in_lazy_optimization", []))
        BaseOptimizer.__init__(self, *args, **kwargs)
        self.include_in_lazy_optimization = include

    def update_step(self, gradient, variable, learning_rate):
        if not _matches(_variable_name(variable), self.include_in_lazy_optimization):
            return BaseOptimizer.update_step(self, gradient, variable, learning_rate)
        old = ops.convert_to_tensor(variable) * 1
        BaseOptimizer.update_step(self, gradient, variable, learning_rate)
        gradient = ops.convert_to_tensor(gradient)
        # as bert4keras: a slice along the last axis (an embedding row) is touched when
        # any of its gradients is nonzero
        nonzero = ops.not_equal(gradient, 0)
        touched = ops.any(nonzero, axis=-1, keepdims=True) if len(gradient.shape) else nonzero
        variable.assign(ops.where(touched, variable, old))

    def get_config(self):
        return {**BaseOptimizer.get_config(self), "include_in_lazy_optimization": self.include_in_lazy_optimization}

    return _named_subclass(BaseOptimizer, "LazyOptimization", {
        "__init__": __init__, "update_step": update_step, "get_config": get_config})


# bert4keras' ``_v2`` variants are its tf.keras implementations of the same extensions.
extend_with_weight_decay_v2 = extend_with_weight_decay
extend_with_layer_adaptation_v2 = extend_with_layer_adaptation
extend_with_piecewise_linear_lr_v2 = extend_with_piecewise_linear_lr
extend_with_gradient_accumulation_v2 = extend_with_gradient_accumulation
extend_with_lookahead_v2 = extend_with_lookahead
extend_with_lazy_optimization_v2 = extend_with_lazy_optimization
extend_with_exponential_moving_average_v2 = extend_with_exponential_moving_average
extend_with_parameter_wise_lr_v2 = extend_with_parameter_wise_lr

class _AdaFactorDefaultLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """AdaFactor's learning rate when none is given: ``min(1/sqrt(step + 1), 0.01)``,
    times 0.05 without parameter scaling."""

    def __init__(self, multiply_by_parameter_scale=True):
        self.multiply_by_parameter_scale = multiply_by_parameter_scale

    def __call__(self, step):
        rate = ops.minimum(1.0 / ops.sqrt(ops.cast(step, "float32") + 1.0), 0.01)
        return rate if self.multiply_by_parameter_scale else rate * 0.05

    def get_config(self):
        return {"multiply_by_parameter_scale": self.multiply_by_parameter_scale}


@keras.saving.register_keras_serializable(package="kerasnlp_plus")
class AdaFactor(keras.optimizers.Optimizer):
    """bert4keras' AdaFactor (arXiv 1804.04235, after mesh_tensorflow) on Keras 3, with
    its arguments: the second moment of a variable whose two largest dimensions are at
    least ``min_dim_size_to_factor`` is kept factored (row and column means); the
    update is clipped to RMS ``clipping_threshold``, smoothed by ``beta1`` if > 0, and
    scaled by ``max(rms(variable), epsilon2)`` (``multiply_by_parameter_scale``, except
    for variables matching ``exclude_from_parameter_scale``). ``beta2=None`` means
    ``1 - step**-0.8``; ``learning_rate=None`` means ``min(1/sqrt(step), 0.01)``.
    (Keras' own ``keras.optimizers.Adafactor`` differs: no ``beta1``, always factored.)"""

    def __init__(self, learning_rate=1e-3, beta1=0.0, beta2=None, epsilon1=1e-30, epsilon2=1e-3,
                 multiply_by_parameter_scale=True, clipping_threshold=1.0, min_dim_size_to_factor=128,
                 exclude_from_parameter_scale=None, name="AdaFactor", **kwargs):
        if learning_rate is None:
            learning_rate = _AdaFactorDefaultLearningRate(multiply_by_parameter_scale)
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon1 = epsilon1
        self.epsilon2 = epsilon2
        self.multiply_by_parameter_scale = multiply_by_parameter_scale
        self.clipping_threshold = clipping_threshold
        self.min_dim_size_to_factor = min_dim_size_to_factor
        self.exclude_from_parameter_scale = list(exclude_from_parameter_scale or [])

    def factored_shape(self, shape):
        """``(row shape, row axis, column shape, column axis)`` or None (not factored)."""
        if len(shape) < 2:
            return None
        shape = np.array(shape)
        indices = shape.argpartition(-2)
        if shape[indices[-2]] < self.min_dim_size_to_factor:
            return None
        shape1, shape2 = np.array(shape), np.array(shape)
        shape1[indices[-1]] = 1
        shape2[indices[-2]] = 1
        return tuple(shape1), int(indices[-1]), tuple(shape2), int(indices[-2])

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._m, self._v, self._vr, self._vc = [], [], [], []
        for variable in variables:
            self._m.append(self.add_variable_from_reference(variable, "m") if self.beta1 > 0 else None)
            factored = self.factored_shape(tuple(variable.shape))
            if factored is None:
                self._v.append(self.add_variable_from_reference(variable, "v"))
                self._vr.append(None)
                self._vc.append(None)
            else:
                self._v.append(None)
                self._vr.append(self.add_variable(factored[0], dtype=variable.dtype, name="vr"))
                self._vc.append(self.add_variable(factored[2], dtype=variable.dtype, name="vc"))

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        learning_rate = ops.cast(learning_rate, variable.dtype)
        step = ops.cast(self.iterations + 1, variable.dtype)
        beta2 = 1.0 - ops.power(step, -0.8) if self.beta2 is None else self.beta2
        g2 = ops.square(gradient) + self.epsilon1
        factored = self.factored_shape(tuple(variable.shape))
        if factored is None:
            v = self._v[index]
            self.assign(v, beta2 * v + (1.0 - beta2) * g2)
            v_t = v
        else:
            _, row_axis, _, column_axis = factored
            vr, vc = self._vr[index], self._vc[index]
            self.assign(vr, beta2 * vr + (1.0 - beta2) * ops.mean(g2, axis=row_axis, keepdims=True))
            self.assign(vc, beta2 * vc + (1.0 - beta2) * ops.mean(g2, axis=column_axis, keepdims=True))
            v_t = vr * vc / ops.mean(vr, axis=column_axis, keepdims=True)
        u = gradient / ops.sqrt(v_t + self.epsilon1)
        if self.clipping_threshold is not None:
            u = u / ops.maximum(1.0, _rms(u) / self.clipping_threshold)
        if self.beta1 > 0.0:
            m = self._m[index]
            self.assign(m, self.beta1 * m + (1.0 - self.beta1) * u)
            u = m
        if self.multiply_by_parameter_scale and not _matches(_variable_name(variable),
                                                             self.exclude_from_parameter_scale):
            u = u * ops.maximum(_rms(variable), self.epsilon2)
        self.assign_sub(variable, learning_rate * u)

    def get_config(self):
        config = super().get_config()
        if isinstance(self._learning_rate, _AdaFactorDefaultLearningRate):
            config["learning_rate"] = None
        return {**config, "beta1": self.beta1, "beta2": self.beta2, "epsilon1": self.epsilon1,
                "epsilon2": self.epsilon2, "multiply_by_parameter_scale": self.multiply_by_parameter_scale,
                "clipping_threshold": self.clipping_threshold, "min_dim_size_to_factor": self.min_dim_size_to_factor,
                "exclude_from_parameter_scale": self.exclude_from_parameter_scale}


def _rms(x):
    return ops.sqrt(ops.mean(ops.square(x)))


# bert4keras' base class and its two implementations (Keras 2 / tf.keras) are this one class
AdaFactorBase = AdaFactorV1 = AdaFactorV2 = AdaFactor

# bert4keras' ``custom_objects`` for ``load_model``; Keras 3 finds these registered
# classes (and the ``extend_with_*`` ones, registered under their names) anyway.
custom_objects = {"Adam": Adam, "AdamW": AdamW, "Lamb": Lamb, "Lion": Lion, "AdaFactor": AdaFactor}

__all__ += [
    "AdaFactor", "AdaFactorBase", "AdaFactorV1", "AdaFactorV2", "PiecewiseLinearSchedule", "custom_objects", "export_to_custom_objects",
    "extend_with_exponential_moving_average", "extend_with_exponential_moving_average_v2",
    "extend_with_gradient_accumulation", "extend_with_gradient_accumulation_v2",
    "extend_with_layer_adaptation", "extend_with_layer_adaptation_v2",
    "extend_with_lazy_optimization", "extend_with_lazy_optimization_v2",
    "extend_with_lookahead", "extend_with_lookahead_v2",
    "extend_with_parameter_wise_lr", "extend_with_parameter_wise_lr_v2",
    "extend_with_piecewise_linear_lr", "extend_with_piecewise_linear_lr_v2",
    "extend_with_weight_decay", "extend_with_weight_decay_v2",
]

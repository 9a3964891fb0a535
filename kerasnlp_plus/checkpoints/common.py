"""Assigning checkpoint arrays to variables, with errors that name the culprit."""
import difflib

import numpy as np


def check_keep_tokens(keep_tokens):
    """``keep_tokens`` as a 1-D int64 array, or None.

    It must be a non-empty list of token ids >= 0 (each id selects a row of the
    checkpoint's vocabulary; the upper bound is checked against the checkpoint in
    :func:`assign_entries`). Duplicates are allowed on purpose: a repeated id gives two
    ids of the new vocabulary the same starting row (the way to start added tokens
    from an existing one), as indexing with it did in bert4keras.
    """
    if keep_tokens is None:
        return None
    try:
        ids = np.asarray(keep_tokens)
    except (TypeError, ValueError):
        raise ValueError(f"keep_tokens must be a list of token ids, got {type(keep_tokens).__name__}") from None
    if ids.ndim != 1:
        raise ValueError(f"keep_tokens must be a flat list of token ids, got shape {ids.shape}")
    if ids.size == 0:
        raise ValueError("keep_tokens is empty: it must list the checkpoint row of every id of the new vocabulary")
    if not np.issubdtype(ids.dtype, np.integer) or ids.dtype == bool:
        raise ValueError(f"keep_tokens must hold int token ids, got dtype {ids.dtype}")
    negative = np.flatnonzero(ids < 0)
    if negative.size:
        i = int(negative[0])
        raise ValueError(
            f"keep_tokens[{i}] = {int(ids[i])} is negative ({negative.size} negative ids in all); "
            "token ids count from 0 (a negative id would silently select a row from the end)"
        )
    return ids.astype(np.int64)


def check_finite(value, name, source):
    """Raise if a floating-point checkpoint array holds NaN or infinity (corrupt bytes
    or a diverged run), naming the variable, the file and the first bad index."""
    if np.issubdtype(value.dtype, np.floating):
        finite = np.isfinite(value)
        if not finite.all():
            bad = np.argwhere(~finite)[0]
            raise ValueError(
                f"variable {name!r} in checkpoint {source} holds {int((~finite).sum())} non-finite values "
                f"(first at index {tuple(int(i) for i in bad)}: {value[tuple(bad)]}); the file is corrupt "
                "or was saved from a diverged run"
            )


def assign_entries(entries, get_array, names, source, keep_tokens=None, aliases=None):
    """Assign every entry from ``get_array(name)``.

    Args:
        entries: :class:`~kerasnlp_plus.checkpoints.mapping.Entry` list.
        get_array: name -> numpy array.
        names: the names present in the checkpoint (for lookups and suggestions).
        source: the checkpoint path, quoted in errors.
        aliases: optional ``name -> [alternative names]`` tried in order.

    Raises ``KeyError`` for a missing variable (its name, the path, the closest names
    present) and ``ValueError`` for a shape mismatch (both shapes), bad ``keep_tokens``
    (see :func:`check_keep_tokens`; an id beyond the checkpoint's vocabulary names the
    variable) or non-finite values, before any variable is modified, so a failed load
    leaves the model untouched.
    """
    keep_tokens = check_keep_tokens(keep_tokens)
    names = set(names)
    values = []
    for entry in entries:
        candidates = [entry.name] + list((aliases or (lambda n: []))(entry.name))
        found = next((c for c in candidates if c in names), None)
        if found is None and entry.optional:
            continue
        if found is None:
            close = difflib.get_close_matches(entry.name, sorted(names), n=5, cutoff=0.5)
            raise KeyError(
                f"variable {entry.name!r} (needed by {entry.variable.path}) not found in checkpoint "
                f"{source}; closest names present: {close}"
            )
        array = get_array(found)
        if entry.vocab_rows and keep_tokens is not None:
            rows = np.shape(array)[0]
            beyond = np.flatnonzero(keep_tokens >= rows)
            if beyond.size:
                i = int(beyond[0])
                raise ValueError(
                    f"keep_tokens[{i}] = {int(keep_tokens[i])} is beyond the {rows} rows of variable {found!r} "
                    f"in checkpoint {source} ({beyond.size} such ids; the checkpoint's vocabulary has ids 0..{rows - 1})"
                )
        value = entry.to_model(array, keep_tokens=keep_tokens)
        check_finite(value, found, source)
        expected = tuple(entry.variable.shape)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"variable {found!r} in checkpoint {source} has shape {tuple(value.shape)} after "
                f"conversion, but {entry.variable.path} expects {expected}"
                + (" (check keep_tokens)" if entry.vocab_rows else "")
            )
        values.append((entry, value))
    for entry, value in values:
        entry.variable.assign(value.astype(np.dtype(entry.variable.dtype)))

"""Assigning checkpoint arrays to variables, with errors that name the culprit."""
import difflib

import numpy as np


def assign_entries(entries, get_array, names, source, keep_tokens=None, aliases=None):
    """Assign every entry from ``get_array(name)``.

    Args:
        entries: :class:`~kerasnlp_plus.checkpoints.mapping.Entry` list.
        get_array: name -> numpy array.
        names: the names present in the checkpoint (for lookups and suggestions).
        source: the checkpoint path, quoted in errors.
        aliases: optional ``name -> [alternative names]`` tried in order.

    Raises ``KeyError`` for a missing variable (its name, the path, the closest names
    present) and ``ValueError`` for a shape mismatch (both shapes), before any variable
    is modified, so a failed load leaves the model untouched.
    """
    names = set(names)
    values = []
    for entry in entries:
        candidates = [entry.name] + list((aliases or (lambda n: []))(entry.name))
        found = next((c for c in candidates if c in names), None)
        if found is None:
            close = difflib.get_close_matches(entry.name, sorted(names), n=5, cutoff=0.5)
            raise KeyError(
                f"variable {entry.name!r} (needed by {entry.variable.path}) not found in checkpoint "
                f"{source}; closest names present: {close}"
            )
        value = entry.to_model(get_array(found), keep_tokens=keep_tokens)
        expected = tuple(entry.variable.shape)
        if tuple(value.shape) != expected:
            raise ValueError(
                f"variable {found!r} in checkpoint {source} has shape {tuple(value.shape)} after "
                f"conversion, but {entry.variable.path} expects {expected}"
                + (" (check keep_tokens)" if entry.vocab_rows else "")
            )
        values.append(value)
    for entry, value in zip(entries, values):
        entry.variable.assign(value.astype(np.dtype(entry.variable.dtype)))

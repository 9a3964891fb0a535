"""Where the shared real data lives: ``$KERASNLP_PLUS_SHARED_DATA``, else
``shared/data`` beside the repository (the layout CI and the developers use)."""
import os
import pathlib

ENV_VAR = "KERASNLP_PLUS_SHARED_DATA"
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def shared_data_dir(*parts, required=False):
    """The shared data folder (or a path inside it).

    Args:
        *parts: path components inside the folder, e.g. ``("kgclue", "dev.json")``.
        required: raise ``FileNotFoundError`` naming the place looked at, and the
            variable that overrides it, when the path does not exist.
    """
    root = pathlib.Path(os.environ.get(ENV_VAR) or REPO_ROOT.parent / "shared" / "data")
    path = root.joinpath(*parts)
    if required and not path.exists():
        raise FileNotFoundError(f"shared data not found at {path}; set {ENV_VAR} to the folder that holds it")
    return path

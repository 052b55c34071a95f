"""Push and pull through huggingface_hub against a local Hub-compatible server (HF_ENDPOINT on 127.0.0.1).

huggingface_hub reads HF_ENDPOINT / HF_HUB_OFFLINE / HF_HOME when it is imported, so each client runs in a child
process with its own environment (the test process itself stays offline).
"""

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from wren_testing.hub import chat_prompt, greedy_tokens, run_python, subprocess_env
from wrenlm.cli import main as wren
from wrenlm.hub.model_card import CARD_MARKER

# The endpoints the server implements: a client calling anything else would get a 404 and fail.
SERVED = ("/api/repos/create", "/api/validate-yaml", "/preupload/main", "/commit/main", "/resolve/", "/api/models/")


def _local_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def _server_files(server, repo_id: str) -> dict[str, bytes]:
    return {name: server.file_bytes(repo_id, name) for name in server.repo_files(repo_id)}


def _anonymous_status(server, path: str) -> int:
    try:
        with urllib.request.urlopen(server.endpoint + path) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_push_to_hub_then_pull_and_from_pretrained_round_trip(
    save_model, hub_tokenizer, hub_server, hub_env, tmp_path
):
    model, folder = save_model("moe")
    saved = tmp_path / "saved-and-pushed"
    pushed = run_python(
        f"""
        import json
        from transformers import AutoModelForCausalLM, AutoTokenizer
        import wrenlm  # registers model_type "wren"
        model = AutoModelForCausalLM.from_pretrained({str(folder)!r})
        info = model.push_to_hub("wren-api")  # no namespace: the token's user, as on the Hub
        AutoTokenizer.from_pretrained({str(folder)!r}).push_to_hub("tester/wren-api")
        model.save_pretrained({str(saved)!r}, push_to_hub=True, repo_id="tester/wren-saved")
        print(json.dumps(info.repo_url.repo_id))
        """,
        hub_env,
        cwd=tmp_path,
    )
    assert pushed == "tester/wren-api"
    # save_pretrained(push_to_hub=True) uploads exactly the folder it wrote, Wren card (named after the repo) included.
    assert _server_files(hub_server, "tester/wren-saved") == _local_files(saved)
    saved_card = ModelCard((saved / "README.md").read_text())
    assert CARD_MARKER in saved_card.content and "# tester/wren-saved" in saved_card.text
    assert {p.name for p in saved.glob("*.py")} == {p.name for p in folder.glob("*.py")} - {"tokenization_wren.py"}
    remote = _server_files(hub_server, "tester/wren-api")
    local = _local_files(folder)
    assert set(remote) == set(local)
    # The card is named after the repo now; a reloaded tokenizer's config also records how it was loaded.
    assert {name for name in local if remote[name] != local[name]} <= {"README.md", "tokenizer_config.json"}
    remote_config, local_config = (json.loads(files["tokenizer_config.json"]) for files in (remote, local))
    assert {k: v for k, v in remote_config.items() if k in local_config} == local_config
    assert set(remote_config) - set(local_config) <= {"is_local", "local_files_only"}
    card = ModelCard(remote["README.md"].decode())
    assert CARD_MARKER in card.content and "# tester/wren-api" in card.text
    assert card.data.library_name == "transformers" and "moe" in card.data.tags
    assert all(any(part in path for part in SERVED) for _, path in hub_server.requests)

    out = tmp_path / "pulled"
    pulled = run_python(
        f"""
        import json, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from wrenlm.cli import main  # importing wrenlm registers model_type "wren"
        assert main(["pull", "tester/wren-api", "--out", {str(out)!r}]) == 0
        model = AutoModelForCausalLM.from_pretrained("tester/wren-api").eval()
        tokenizer = AutoTokenizer.from_pretrained("tester/wren-api")
        ids = tokenizer.apply_chat_template([{{"role": "user", "content": "shall we walk the garden"}}],
                                            add_generation_prompt=True)["input_ids"]
        with torch.no_grad():
            tokens = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):]
        print(json.dumps(tokens.tolist()))
        """,
        hub_env,
        cwd=tmp_path,
    )
    assert _local_files(out) == remote  # identical bytes
    assert pulled == greedy_tokens(model, chat_prompt(hub_tokenizer))


def test_wren_push_uploads_exactly_the_repository_files(save_model, hub_server, hub_env, tmp_path):
    _, folder = save_model("dense", max_shard_size="20KB")
    (folder / "metrics.jsonl").write_text(json.dumps({"step": 5, "train/loss": 4.5}) + "\n")
    (folder / "checkpoint-5").mkdir()
    (folder / "checkpoint-5" / "optimizer.bin").write_bytes(b"not for the Hub")
    (folder / ".cache").mkdir()
    out = tmp_path / "pulled"
    result = run_python(
        f"""
        import contextlib, io, json
        from wrenlm.cli import main
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            rc = main(["push", {str(folder)!r}, "--repo", "tester/wren-cli", "--private", "--license", "mit"])
            rc_pull = main(["pull", "tester/wren-cli", "--out", {str(out)!r}])
        print(json.dumps([rc, rc_pull, stdout.getvalue()]))
        """,
        hub_env,
        cwd=tmp_path,
    )
    rc, rc_pull, printed = result
    assert rc == 0 and rc_pull == 0
    assert "Not pushed (sub-folders are not part of the repository): checkpoint-5" in printed
    local = _local_files(folder)  # the push refreshed the folder's own card: named after the repo
    assert "checkpoint-5/optimizer.bin" not in hub_server.repo_files("tester/wren-cli")
    assert _server_files(hub_server, "tester/wren-cli") == local == _local_files(out)
    assert len([name for name in local if name.startswith("model-")]) > 2
    card = ModelCard(local["README.md"].decode())
    assert (
        card.data.license == "mit" and "# tester/wren-cli" in card.text and "| last training loss | 4.5 |" in card.text
    )
    assert _anonymous_status(hub_server, "/api/models/tester/wren-cli") == 404  # private


def test_no_token_fails_clearly_before_any_request(save_model, hub_server, tmp_path):
    _, folder = save_model("dense")
    env = subprocess_env(tmp_path, HF_ENDPOINT=hub_server.endpoint)  # no HF_TOKEN, an empty HF_HOME
    result = run_python(
        f"""
        import contextlib, io, json
        from transformers import AutoModelForCausalLM
        from wrenlm.cli import main  # importing wrenlm registers model_type "wren"
        try:
            AutoModelForCausalLM.from_pretrained({str(folder)!r}).push_to_hub("tester/nope")
            api_error = None
        except ValueError as error:
            api_error = str(error)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            rc = main(["push", {str(folder)!r}, "--repo", "tester/nope"])
        print(json.dumps([api_error, rc, stderr.getvalue()]))
        """,
        env,
        cwd=tmp_path,
    )
    api_error, rc, printed = result
    assert api_error.startswith("No Hugging Face token") and "hf auth login" in api_error
    assert rc == 1 and printed.startswith("wren push: error: No Hugging Face token")
    assert hub_server.requests == []


def test_wrong_token_is_a_permission_error(save_model, hub_server, tmp_path, capsys):
    _, folder = save_model("dense")
    env = subprocess_env(tmp_path, HF_ENDPOINT=hub_server.endpoint, HF_TOKEN="hf_not_the_right_one")
    printed = run_python(
        f"""
        import contextlib, io, json
        from wrenlm.cli import main
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            rc = main(["push", {str(folder)!r}, "--repo", "tester/nope"])
        print(json.dumps([rc, stderr.getvalue()]))
        """,
        env,
        cwd=tmp_path,
    )
    assert printed[0] == 1 and "refused to let this token write to tester/nope" in printed[1]
    assert hub_server.repos == {}


def test_unreachable_endpoint_is_one_line(save_model, tmp_path):
    import socket

    with socket.socket() as probe:  # a port nothing listens on once the probe closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _, folder = save_model("dense")
    env = subprocess_env(tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_TOKEN="hf_x")
    printed = run_python(
        f"""
        import contextlib, io, json
        from wrenlm.cli import main
        results = []
        for argv in (["push", {str(folder)!r}, "--repo", "tester/x"], ["pull", "tester/x", "--out", "pulled"]):
            stderr = io.StringIO()
            with contextlib.redirect_stderr(stderr):
                rc = main(argv)
            results.append([rc, stderr.getvalue()])
        print(json.dumps(results))
        """,
        env,
        cwd=tmp_path,
    )
    (push_rc, push_err), (pull_rc, pull_err) = printed
    assert push_rc == 1 and push_err.count("\n") == 1, push_err
    assert push_err.startswith(f"wren push: error: cannot reach http://127.0.0.1:{port} (ConnectError")
    # pull names the connection failure too (not the empty folder snapshot_download would fall back to)
    assert pull_rc == 1 and pull_err.count("\n") == 1, pull_err
    assert pull_err.startswith(f"wren pull: error: cannot reach http://127.0.0.1:{port} (ConnectError"), pull_err
    assert not (tmp_path / "pulled").exists()


@pytest.mark.parametrize("how", ["missing", "corrupt"])
def test_wren_push_checks_the_folder_first(save_model, capsys, how):
    _, folder = save_model("dense", max_shard_size="20KB")
    shard = sorted(folder.glob("model-*.safetensors"))[0]
    if how == "missing":
        shard.unlink()
    else:
        shard.write_bytes(shard.read_bytes()[:100])
    capsys.readouterr()  # drop the save's progress bar
    assert wren(["push", str(folder), "--repo", "tester/broken", "--token", "hf_x"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("wren push: error:") and shard.name in error
    assert ("Missing weight file" if how == "missing" else "Corrupt safetensors file") in error


def test_wren_push_refuses_folders_that_are_not_repositories(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert wren(["push", str(tmp_path / "empty"), "--repo", "tester/x", "--token", "hf_x"]) == 1
    assert "neither a model folder (config.json) nor an adapter folder" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    assert wren(["push", str(tmp_path / "bad"), "--repo", "tester/x", "--token", "hf_x"]) == 1
    assert "Unreadable config.json" in capsys.readouterr().err


def test_missing_code_file_is_named(save_model, capsys):
    _, folder = save_model("dense")
    (folder / "moe.py").unlink()
    capsys.readouterr()
    assert wren(["push", str(folder), "--repo", "tester/x", "--token", "hf_x"]) == 1
    assert "lacks the code file(s) its auto_map needs: moe.py" in capsys.readouterr().err


def _lora_adapter(base_folder: Path, adapter_folder: Path):
    base = AutoModelForCausalLM.from_pretrained(base_folder)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, config)
    torch.manual_seed(1)
    with torch.no_grad():  # LoRA's B starts at zero; a trained adapter changes the output
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(adapter_folder)
    return peft_model.eval()


def test_adapter_push_points_at_the_base_on_the_hub(save_model, hub_tokenizer, hub_server, hub_env, tmp_path, capsys):
    model, base_folder = save_model("dense", name="wren-base")
    adapter_folder = tmp_path / "wren-lora"
    peft_model = _lora_adapter(base_folder, adapter_folder)
    assert json.loads((adapter_folder / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        base_folder
    )
    # Its base is a local folder nobody can download: the push asks for the base's repo, before any upload.
    capsys.readouterr()
    assert wren(["push", str(adapter_folder), "--repo", "tester/wren-lora", "--token", "hf_x"]) == 1
    assert "pass its repo id with --base-model" in capsys.readouterr().err

    pushed = run_python(
        f"""
        import json
        from wrenlm.cli import main
        rcs = [main(["push", {str(base_folder)!r}, "--repo", "tester/wren-base"]),
               main(["push", {str(adapter_folder)!r}, "--repo", "tester/wren-lora",
                     "--base-model", "tester/wren-base"])]
        print(json.dumps(rcs))
        """,
        hub_env,
        cwd=tmp_path,
    )
    assert pushed == [0, 0]
    # Loaded from the Hub where wrenlm is not installed: base and adapter come from the server, the code from the repo.
    result = run_python(
        """
        import importlib.util, json, torch
        assert importlib.util.find_spec("wrenlm") is None
        from peft import AutoPeftModelForCausalLM
        from transformers import AutoTokenizer
        model = AutoPeftModelForCausalLM.from_pretrained("tester/wren-lora", trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained("tester/wren-base", trust_remote_code=True)
        ids = tokenizer.apply_chat_template([{"role": "user", "content": "shall we walk the garden"}],
                                            add_generation_prompt=True)["input_ids"]
        with torch.no_grad():
            tokens = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0, len(ids):]
        print(json.dumps(tokens.tolist()))
        """,
        hub_env,
        cwd=tmp_path,
        hide_wrenlm=True,
    )
    prompt = chat_prompt(hub_tokenizer)
    assert result == greedy_tokens(peft_model, prompt) != greedy_tokens(model, prompt)
    remote = _server_files(hub_server, "tester/wren-lora")
    assert set(remote) == {"adapter_config.json", "adapter_model.safetensors", "README.md"}
    assert remote["adapter_model.safetensors"] == (adapter_folder / "adapter_model.safetensors").read_bytes()
    assert json.loads(remote["adapter_config.json"])["base_model_name_or_path"] == "tester/wren-base"
    local_config = json.loads((adapter_folder / "adapter_config.json").read_text())
    assert local_config["base_model_name_or_path"] == str(base_folder)  # the local folder still works offline
    card = ModelCard(remote["README.md"].decode())
    assert card.data.base_model == "tester/wren-base" and card.data.base_model_relation == "adapter"
    assert card.data.library_name == "peft" and {"lora", "wren"} <= set(card.data.tags)

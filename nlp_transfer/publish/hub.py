"""Publish a trained output folder to the Hugging Face Hub, strategy-aware.

    nlp-transfer push outputs/bbc --repo-id alice/bbc-frozen [--private] [--revision v2] [--merge] [--overwrite]
    result.push_to_hub("alice/bbc-frozen")           # Python, after train()
    hub.push=true hub.repo_id=alice/bbc-frozen       # in a recipe: push at the end of training

What is uploaded is the strategy's to say (:mod:`nlp_transfer.strategies`: ``Strategy.weight_files``,
``prepare_push``, ``needs_base_model``), and depends on ``merge=True`` / ``--merge``:

- ``full`` / ``partial``: the encoder (``model.safetensors``) + ``head.safetensors`` (merge changes nothing).
- ``frozen``: ``head.safetensors`` + an exact reference to the base model; merged: the base encoder
  weights are stored next to the head, so loading needs no base model.
- ``lora``: the PEFT adapter (``adapter_model.safetensors`` + ``adapter_config.json``, the head inside via
  ``modules_to_save``) + the base reference; merged: ``merge_and_unload`` encoder + head.
- any registered strategy: its ``weight_files`` (+ the base reference when it needs the base model); merged:
  the model rebuilt by :func:`nlp_transfer.predict.rebuild.rebuild_model`, saved as encoder + head.

Always: the tokenizer, ``config.json`` (with ``id2label``/``label2id``/``num_labels``), the resolved
``recipe.yaml``, ``metrics.json``, ``nlp_transfer.json`` and a model card (``README.md`` +
``training_curves.png``, see :mod:`nlp_transfer.publish.card`). Everything is staged in a temporary folder: the
user's output folder is never modified. Local absolute paths are reduced to their last component and the
active token is checked to appear in no uploaded file.

**The base-model reference** (frozen/lora without merge) must let someone else rebuild the model, so it
is a Hub id pinned to a commit, plus the sha256 of the weights the head was trained on::

    "base_model": {"name": "sentence-transformers/all-MiniLM-L6-v2", "revision": "<commit>", "sha256": "<...>"}

The Hub id is, in this order: ``base_model_id=`` / ``--base-model-id`` (when training used a local copy of a
Hub model); the recipe's ``model.name`` when it is a Hub id (the embedded all-MiniLM-L6-v2 is recorded under
its Hub id); the repo id of a Hugging Face cache path (``.../models--org--name/snapshots/<commit>``). The
push then checks on the Hub that this repo holds exactly those weights (LFS sha256 of its safetensors files)
and records the commit it checked; a missing repo or different weights is an error, and a purely local base
model needs ``--base-model-id`` or ``--merge``.

**Nothing is pushed unless every check passes**, in this order: the folder is a complete nlp_transfer output;
the repo id (and ``--revision`` branch name) is valid; Hub offline mode is off; a token is available
(``HF_TOKEN`` or ``hf auth login``), accepted by the Hub and allowed to write (not read-only, the repo's
namespace is the user's or one of their organisations); the target repo is new, or ``--overwrite`` /
a new ``--revision`` branch is given; the base model reference is verified; merged exports are checked to
keep the head, ``num_labels``/``id2label`` and the predictions. Only then is the repo (and branch) created
and one commit made, which also deletes files left from an earlier push at that revision. The token is never
printed, logged or written anywhere.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nlp_transfer.errors import ConfigError, EnvironmentSetupError, ModelError, NLPTransferError
from nlp_transfer.predict.rebuild import needs_base_model, strategy_of
from nlp_transfer.registry import TASKS

logger = logging.getLogger(__name__)

#: Files every pushable output folder has (metrics.json is written last: its presence marks a finished run).
REQUIRED_FILES = ("nlp_transfer.json", "metrics.json", "recipe.yaml", "config.json")
#: Tokenizer files copied when present (transformers 5 writes tokenizer.json + tokenizer_config.json).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "chat_template.jinja")
#: Texts the merged export is checked on (any text works: the check compares two computations).
PROBE_TEXTS = ["The first text to classify.", "another, longer example about markets, goals and software 42",
               "x"]

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?"
_REPO_ID_RE = re.compile(rf"^(?:({_NAME})/)?({_NAME})$")
_BRANCH_RE = re.compile(r"^(?!refs/)(?!/)[A-Za-z0-9._-]+(?:/[A-Za-z0-9._-]+)*$")
_CACHE_PATH_RE = re.compile(r"models--([A-Za-z0-9._-]+?)--([A-Za-z0-9._-]+)[/\\]snapshots[/\\]([0-9a-f]{40})")
_WRITE_ROLES_IN_ORG = (None, "admin", "write", "contributor")


class PushResult(str):
    """What :func:`push_to_hub` returns: the commit URL (a ``str``) with the details as attributes.

    Attributes: ``repo_id``, ``revision`` (branch), ``commit`` (sha), ``repo_url``, ``strategy``,
    ``merged``, ``files`` (path -> bytes uploaded), ``seconds`` (wall time of the whole push),
    ``base_model`` (the reference written into the pushed nlp_transfer.json, or None).
    """

    repo_id: str
    revision: str
    commit: str
    repo_url: str
    strategy: str
    merged: bool
    files: dict[str, int]
    seconds: float
    base_model: dict[str, Any] | None

    def __new__(cls, url: str, **attrs: Any) -> "PushResult":
        obj = super().__new__(cls, url)
        obj.__dict__.update(attrs)
        return obj

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


@dataclass
class _Target:
    """Where the commit goes and what is there now."""
    repo_id: str
    branch: str
    repo_exists: bool
    branch_exists: bool
    parent_commit: str | None
    remote_files: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- public API

def push_to_hub(output_dir: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                merge: bool = False, overwrite: bool = False, token: str | None = None,
                commit_message: str | None = None, base_model_id: str | None = None,
                onnx: bool = False) -> PushResult:
    """Push a finished output folder to the Hub as ``repo_id`` and return the commit URL.

    Args:
        output_dir: the ``output.dir`` of a finished training run (``metrics.json`` present).
        repo_id: ``user/name`` or ``org/name`` (a bare ``name`` goes to the token owner's namespace).
        private: create the repo private (ignored when it exists already).
        revision: a branch to push to (created from ``main`` when new). Needed to push into an existing repo
            without replacing its ``main``.
        merge: frozen -> upload the base encoder weights next to the head; lora -> merge the adapters into
            the encoder (``merge_and_unload``). The result loads without the base model.
        overwrite: replace the content of an existing branch (files of the earlier push are deleted).
        token: a Hub token; default ``HF_TOKEN`` or the ``hf auth login`` token. Never printed or stored.
        commit_message: the commit title (default: what was pushed).
        base_model_id: the Hub id of the base model when training used a local copy of it (frozen/lora).
        onnx: also upload the checked ONNX export (``onnx/``: model.onnx, tokenizer, config; see
            :func:`nlp_transfer.export.onnx.export_onnx`), for any strategy.

    Raises:
        NLPTransferError subclasses with a one-line message, before anything is created on the Hub.
    """
    t0 = time.time()
    out, meta, metrics, recipe = check_output_dir(output_dir)
    strategy = meta["strategy"]
    cls = strategy_of(meta, out)
    needs_base = needs_base_model(meta, cls)
    merged = bool(merge) and needs_base
    if merge and not merged:
        logger.info("strategy %s already stores the whole model: --merge changes nothing", strategy)
    namespace, name = validate_repo_id(repo_id)
    if revision is not None:
        validate_branch(revision)
    if base_model_id is not None and not _looks_like_hub_id(base_model_id):
        raise ConfigError("base_model_id", expected="a Hub model id 'org/name'", found=repr(base_model_id),
                          fix="pass the id of the Hub repo that holds the base model's weights, e.g. "
                              "--base-model-id sentence-transformers/all-MiniLM-L6-v2")

    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE:
        raise EnvironmentSetupError("Hub offline mode", expected="online access to push",
                                    found="HF_HUB_OFFLINE=1", fix="unset HF_HUB_OFFLINE (and TRANSFORMERS_OFFLINE)")
    tok, source = _resolve_token(token)
    api = HfApi(token=tok)
    with _scrubbed(tok):
        who = _whoami(api, tok, source)
        repo_id = f"{namespace or who['name']}/{name}"
        _check_write_access(repo_id, who, source)
        target = _inspect_target(api, repo_id, revision, overwrite)
        base_ref = resolve_base_reference(api, meta, recipe, base_model_id=base_model_id,
                                          required=needs_base and not merged)
        with tempfile.TemporaryDirectory(prefix="nlp-transfer-push-") as tmp:
            stage = Path(tmp)
            stage_output(out, stage, meta, metrics, recipe, base_ref, merged=merged, repo_id=repo_id)
            if onnx:
                stage_onnx(out, stage)
            _assert_no_token(stage, tok)
            files = {n: (stage / n).stat().st_size for n in staged_files(stage)}
            commit = _commit(api, target, stage, private=private,
                             message=commit_message or _default_message(cls, merged, out))
    seconds = round(time.time() - t0, 2)
    logger.info("pushed %s to %s@%s (%d files, %d bytes) in %.1f s", out, repo_id, target.branch, len(files),
                sum(files.values()), seconds)
    return PushResult(commit.commit_url, repo_id=repo_id, revision=target.branch, commit=commit.oid,
                      repo_url=commit.repo_url, strategy=strategy, merged=merged, files=files, seconds=seconds,
                      base_model=base_ref if needs_base and not merged else None)


def check_output_dir(output_dir: str | Path) -> tuple[Path, dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The folder, its nlp_transfer.json, metrics.json and recipe.yaml; ModelError if not a complete output."""
    out = Path(output_dir).expanduser()
    fix = "pass the output.dir of a training run that finished (it writes metrics.json last)"
    if not out.is_dir():
        raise ModelError(f"output folder {out}", expected="an nlp_transfer output folder", found="no such folder",
                         fix=fix)
    if not (out / "nlp_transfer.json").is_file():
        shown = sorted(p.name for p in out.iterdir())[:8]
        raise ModelError(f"folder {out}", expected="an nlp_transfer output folder (with nlp_transfer.json)",
                         found=f"files {shown}" if shown else "an empty folder", fix=fix)
    meta = _read_json(out / "nlp_transfer.json")
    strategy = meta.get("strategy")
    cls = strategy_of(meta, out)
    if meta.get("merged"):
        raise ModelError(f"folder {out}", expected="a training output folder",
                         found="an already merged export (downloaded from the Hub?)",
                         fix="push the original output folder, or upload this one as is with huggingface_hub")
    wanted = list(REQUIRED_FILES) + list(cls.weight_files(out))
    missing = [n for n in wanted if not (out / n).is_file()]
    if not any((out / n).is_file() for n in TOKENIZER_FILES):
        missing.append("tokenizer files")
    if missing:
        raise ModelError(f"output folder {out}", expected=f"a complete {strategy} output "
                         f"({', '.join(wanted[:4])}, weights, tokenizer)", found=f"no {', no '.join(missing)}",
                         fix=fix)
    metrics = _read_json(out / "metrics.json")
    try:
        recipe = yaml.safe_load((out / "recipe.yaml").read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ModelError(f"recipe.yaml in {out}", expected="valid YAML", found=type(e).__name__, fix=fix) from None
    return out, meta, metrics, recipe if isinstance(recipe, dict) else {}


def validate_repo_id(repo_id: str) -> tuple[str | None, str]:
    """(namespace or None, name) of a Hub model repo id; ConfigError if the Hub would refuse it."""
    s = repo_id if isinstance(repo_id, str) else ""
    m = _REPO_ID_RE.match(s)
    if not m or "--" in s or ".." in s or s.endswith(".git"):
        raise ConfigError("--repo-id", expected="'user/name' or 'org/name' (letters, digits, '-', '_', '.'; "
                          "at most 96 characters each; no '--' or '..')", found=repr(repo_id),
                          fix="pass e.g. --repo-id alice/bbc-news-frozen")
    return m.group(1), m.group(2)


def validate_branch(revision: str) -> str:
    """A branch name the Hub accepts (tags and commit ids cannot be pushed to)."""
    if not isinstance(revision, str) or not _BRANCH_RE.match(revision) or ".." in revision \
            or re.fullmatch(r"[0-9a-f]{40}", revision):
        raise ConfigError("--revision", expected="a branch name (e.g. v2 or experiments/lora-r16)",
                          found=repr(revision), fix="pass a branch name; it is created from main when new")
    return revision


# --------------------------------------------------------------------------- token and access

def _resolve_token(token: str | None) -> tuple[str, str]:
    """(token, where it came from). The token value itself is never shown."""
    if token:
        return token, "the token= argument"
    from huggingface_hub import get_token

    tok = get_token()
    if not tok:
        raise EnvironmentSetupError("Hugging Face token", expected="a token with write access",
                                    found="none (HF_TOKEN is unset and you are not logged in)",
                                    fix="run `hf auth login` (or set HF_TOKEN) with a write token from "
                                        "https://huggingface.co/settings/tokens")
    if os.environ.get("HF_TOKEN") == tok or os.environ.get("HUGGING_FACE_HUB_TOKEN") == tok:
        return tok, "HF_TOKEN"
    return tok, "the `hf auth login` token"


def _whoami(api: Any, token: str, source: str) -> dict[str, Any]:
    try:
        who = api.whoami(token=token)
    except Exception as e:  # noqa: BLE001 - mapped to a one-line error below
        status = _status(e)
        if status == 401:
            raise EnvironmentSetupError("Hugging Face token", expected="a token the Hub accepts",
                                        found=f"a token from {source} that {api.endpoint} rejects (invalid or "
                                              "expired)",
                                        fix="create a write token at https://huggingface.co/settings/tokens and "
                                            "run `hf auth login` (or set HF_TOKEN)") from None
        raise _unreachable(api.endpoint, e) from None
    return who


def _check_write_access(repo_id: str, who: dict[str, Any], source: str) -> None:
    user = who.get("name")
    role = ((who.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise EnvironmentSetupError("Hugging Face token", expected="a token with write access",
                                    found=f"a read-only token for '{user}' (from {source})",
                                    fix="create a write token at https://huggingface.co/settings/tokens and run "
                                        "`hf auth login` (or set HF_TOKEN)")
    namespace = repo_id.split("/")[0]
    orgs = {o.get("name"): o.get("roleInOrg") for o in who.get("orgs") or [] if isinstance(o, dict)}
    if namespace == user or (namespace in orgs and orgs[namespace] in _WRITE_ROLES_IN_ORG):
        return
    allowed = [user] + [o for o, r in orgs.items() if r in _WRITE_ROLES_IN_ORG]
    raise EnvironmentSetupError(f"repo {repo_id}", expected=f"a repo under a namespace you can write to "
                                f"({', '.join(repr(a) for a in allowed)})",
                                found=f"namespace '{namespace}', owned by someone else",
                                fix=f"push to --repo-id {user}/{repo_id.split('/')[1]}, or ask the owner of "
                                    f"'{namespace}' for write access")


def _inspect_target(api: Any, repo_id: str, revision: str | None, overwrite: bool) -> _Target:
    """Refuse to replace an existing model unless asked; collect what the commit must delete."""
    from huggingface_hub.errors import RepositoryNotFoundError

    branch = revision or "main"
    try:
        api.repo_info(repo_id)
    except RepositoryNotFoundError:
        return _Target(repo_id, branch, repo_exists=False, branch_exists=False, parent_commit=None)
    except Exception as e:  # noqa: BLE001
        raise _unreachable(api.endpoint, e) from None
    refs = api.list_repo_refs(repo_id)
    branches = {b.name: b.target_commit for b in refs.branches}
    tags = {t.name for t in refs.tags}
    if revision is not None and revision not in branches and revision in tags:
        raise ConfigError(f"--revision {revision}", expected=f"a branch of {repo_id}", found="a tag",
                          fix="pass a branch name (new branches are created from main)")
    if revision is None and not overwrite:
        raise ConfigError(f"Hub repo {repo_id}", expected="a new repo (a push never silently replaces a model)",
                          found=f"an existing repo (main at {branches.get('main', '?')[:12]})",
                          fix="pass --overwrite to replace its main branch, or --revision <new-branch> to push "
                              "next to it (Python: overwrite=True / revision=...)")
    exists = branch in branches
    if revision is not None and exists and not overwrite:
        raise ConfigError(f"branch '{revision}' of {repo_id}", expected="a new branch",
                          found=f"an existing branch (at {branches[branch][:12]})",
                          fix="pass --overwrite to replace its content, or choose another --revision")
    start = branch if exists else "main"
    remote = api.list_repo_files(repo_id, revision=start) if start in branches else []
    return _Target(repo_id, branch, repo_exists=True, branch_exists=exists,
                   parent_commit=branches.get(branch), remote_files=list(remote))


# --------------------------------------------------------------------------- base model reference

def resolve_base_reference(api: Any, meta: dict[str, Any], recipe: dict[str, Any], *,
                           base_model_id: str | None = None, required: bool = True) -> dict[str, Any]:
    """The base-model reference written into the pushed nlp_transfer.json (no local paths).

    ``required``: the upload needs the base from the Hub (frozen/lora, not merged): a missing Hub id, a
    missing repo or different weights raise :class:`ModelError`. Otherwise (full, partial, merged) the
    reference is informative: detection is best effort, unless ``base_model_id`` was given explicitly.
    """
    ref = dict(meta.get("base_model") or {})
    model_rev = (recipe.get("model") or {}).get("revision") if isinstance(recipe.get("model"), dict) else None
    local = _local_base_dir(ref, model_rev)
    sha = ref.get("sha256") or (_weights_sha(local) if local else None)
    hub_id, rev_hint, how = _hub_id_candidate(ref, base_model_id)
    strict = required or base_model_id is not None
    fallback = {"name": hub_id or _last_component(str(ref.get("name") or "unknown")), "sha256": sha}
    if ref.get("embedded"):
        fallback["embedded"] = True
    if hub_id is None:
        if required:
            raise ModelError(f"base model of this {meta.get('strategy')} output",
                             expected="a Hub model id others can download (the upload holds only the "
                                      "trained part)",
                             found=f"the local folder '{_last_component(str(ref.get('name')))}'",
                             fix="pass --base-model-id org/name (the Hub repo with these exact weights; Python: "
                                 "base_model_id=...), or --merge to upload the whole model")
        return fallback
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    revision = rev_hint or model_rev
    try:
        info = api.model_info(hub_id, revision=revision, files_metadata=True)
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        if not strict:
            logger.info("base model %s not found on the Hub: recorded by name only", hub_id)
            return fallback
        what = "revision " + str(revision) if isinstance(e, RevisionNotFoundError) else "repo"
        raise ModelError(f"base model '{hub_id}' (from {how})", expected="a model repo on the Hub that others "
                         "can download", found=f"no such {what} at {api.endpoint}",
                         fix="pass --base-model-id with the Hub repo holding the base weights, or --merge to "
                             "upload the whole model") from None
    except Exception as e:  # noqa: BLE001
        if not strict:
            return fallback
        raise _unreachable(api.endpoint, e) from None
    remote = {s.rfilename: (s.lfs.sha256 if getattr(s, "lfs", None) else None)
              for s in info.siblings or [] if "/" not in s.rfilename and s.rfilename.endswith(".safetensors")}
    verdict, found = _compare_weights(local, sha, remote)
    if verdict == "mismatch":
        if strict:
            raise ModelError(f"base model '{hub_id}' (from {how})",
                             expected=f"the weights this model was trained from (sha256 {str(sha)[:12]}…)",
                             found=f"{found} at revision {info.sha[:12]}",
                             fix="pass --base-model-id with the repo holding the exact training weights, or "
                                 "--merge to upload the whole model")
        logger.info("base model %s on the Hub has different weights: recorded by name only", hub_id)
        return {**fallback, "name": _last_component(str(ref.get("name") or hub_id))}
    if verdict == "unknown":
        warnings.warn(f"could not verify that {hub_id}@{info.sha[:12]} holds the weights this model was trained "
                      f"from ({found}); recording that commit anyway", stacklevel=3)
    pushed: dict[str, Any] = {"name": hub_id, "revision": info.sha,
                              "sha256": sha or (next(iter(remote.values())) if len(remote) == 1 else None)}
    if ref.get("embedded"):
        pushed["embedded"] = True
    return pushed


def _local_base_dir(ref: dict[str, Any], model_rev: str | None) -> Path | None:
    """A local folder holding the base weights: the recorded path, the embedded copy, or the HF cache."""
    from nlp_transfer.model import EMBEDDED_ALIASES, embedded_model_path

    path = ref.get("path")
    if path and Path(path).is_dir():
        return Path(path)
    name = str(ref.get("name") or "")
    if name in EMBEDDED_ALIASES:
        emb = embedded_model_path()
        if emb is not None and emb.is_dir():
            return emb
    if _looks_like_hub_id(name):
        from huggingface_hub import try_to_load_from_cache
        try:
            hit = try_to_load_from_cache(name, "config.json", revision=model_rev)
        except Exception:  # noqa: BLE001 - cache lookups are best effort
            hit = None
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def _hub_id_candidate(ref: dict[str, Any], base_model_id: str | None) -> tuple[str | None, str | None, str]:
    """(Hub id, commit hint, how it was found)."""
    if base_model_id:
        return base_model_id, None, "base_model_id"
    name = str(ref.get("name") or "")
    if _looks_like_hub_id(name):
        return name, None, "the recipe's model.name"
    for s in (ref.get("path"), name):
        m = _CACHE_PATH_RE.search(str(s or ""))
        if m:
            return f"{m.group(1)}/{m.group(2)}", m.group(3), "its Hugging Face cache path"
    return None, None, ""


def _compare_weights(local: Path | None, sha: str | None, remote: dict[str, str | None]) -> tuple[str, str]:
    """("match" | "mismatch" | "unknown", what the Hub holds) for the trained-from weights vs the Hub's."""
    if not remote:
        return "mismatch", "no safetensors weights"
    if any(v is None for v in remote.values()):
        return "unknown", "weights stored without LFS hashes"
    if len(remote) == 1:
        (fname, oid), = remote.items()
        if sha:
            return ("match", "") if oid == sha else ("mismatch", f"{fname} with sha256 {oid[:12]}…")
    if local is not None:
        files = sorted(local.glob("*.safetensors"))
        if sha and _weights_sha(local) != sha:
            return "unknown", "the local base folder changed since training"
        mine = {f.name: _file_sha(f) for f in files}
        if mine == remote:
            return "match", ""
        return "mismatch", f"files {sorted(remote)} with other hashes"
    return "unknown", "sharded weights and no local copy to compare"


# --------------------------------------------------------------------------- staging

def stage_output(out: Path, stage: Path, meta: dict[str, Any], metrics: dict[str, Any], recipe: dict[str, Any],
                 base_ref: dict[str, Any], *, merged: bool, repo_id: str) -> None:
    """Write into ``stage`` exactly what the Hub repo will hold (``out`` is only read)."""
    for n in TOKENIZER_FILES:
        if (out / n).is_file():
            shutil.copy2(out / n, stage / n)
    pushed_meta = {k: v for k, v in meta.items()}
    pushed_meta["base_model"] = base_ref
    if merged:
        pushed_meta["weights"] = _merge_into(out, stage, meta, base_ref)
        pushed_meta["merged"] = True
    else:
        cls = strategy_of(meta, out)
        for n in cls.weight_files(out):
            (stage / n).parent.mkdir(parents=True, exist_ok=True)  # encoder/ of a pooled-head folder
            shutil.copy2(out / n, stage / n)
        shutil.copy2(out / "config.json", stage / "config.json")
        cls.prepare_push(stage, meta, base_ref)  # e.g. lora: the adapter carries the head and names the base
    _fix_config_labels(stage / "config.json", meta)
    _write_json(stage / "nlp_transfer.json", _strip_local_paths(pushed_meta))
    _write_json(stage / "metrics.json", _strip_local_paths(metrics))
    pushed_recipe = _strip_local_paths(recipe)
    if isinstance(pushed_recipe.get("model"), dict):
        pushed_recipe["model"]["name"] = base_ref.get("name")
        if base_ref.get("revision"):
            pushed_recipe["model"]["revision"] = base_ref["revision"]
    (stage / "recipe.yaml").write_text(yaml.safe_dump(pushed_recipe, sort_keys=False), encoding="utf-8")
    _write_card(stage, meta, base_ref, merged=merged, repo_id=repo_id)
    if merged:
        verify_merged_export(out, stage, meta, base_ref)


def stage_onnx(out: Path, stage: Path) -> None:
    """``onnx/``: the checked ONNX export of ``out`` (fp32), its metadata without local paths, and a line
    in the staged model card saying how to serve it."""
    from nlp_transfer.export.onnx import export_onnx

    report = export_onnx(out, stage / "onnx")
    meta_path = stage / "onnx" / "nlp_transfer.json"
    _write_json(meta_path, _strip_local_paths(_read_json(meta_path)))
    checks = report.get("checks") or {}
    readme = stage / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8").rstrip() + "\n\n## ONNX\n\n`onnx/model.onnx` holds the "
                      "whole model (pooling and head included; inputs from the tokenizer beside it, output `logits`), "
                      "checked at export against the trained model" + (f" (max |Δlogit| {checks['fp32']['max_abs_logit_delta']:.1e})"
                      if isinstance(checks.get("fp32"), dict) and "max_abs_logit_delta" in checks["fp32"] else "")
                      + ". Serve it with onnxruntime, or `nlp_transfer.load(snapshot_download(repo) + \"/onnx\")`.\n",
                      encoding="utf-8")


def _write_card(stage: Path, meta: dict[str, Any], base_ref: dict[str, Any], *, merged: bool, repo_id: str) -> None:
    from nlp_transfer.publish.card import scrub_secrets, write_model_card

    base = str(base_ref.get("name") or "unknown")
    overrides: dict[str, Any] = {"merged": merged, "base_model": base}
    if base_ref.get("revision"):
        overrides["base_model_revision"] = base_ref["revision"]
    readme = write_model_card(stage, repo_id=repo_id, **overrides)  # the strategy words what merged means
    readme.write_text(scrub_secrets(readme.read_text(encoding="utf-8")), encoding="utf-8")


def _merge_into(out: Path, stage: Path, meta: dict[str, Any], base_ref: dict[str, Any]) -> dict[str, str]:
    """The model with what the strategy trained merged in, saved as the model saves itself: a native
    task model as a plain transformers folder, a pooled one as ``encoder/`` + ``head.safetensors``."""
    model = _build_model(out, meta, base_ref, merge=True)
    return model.save_weights(stage)


def _build_model(out: Path, meta: dict[str, Any], base_ref: dict[str, Any], *, merge: bool) -> Any:
    """The trained model of the output folder on CPU, eval mode (:func:`~nlp_transfer.predict.rebuild.rebuild_model`),
    its base encoder from the local copy when there is one, else from the verified Hub reference."""
    import transformers

    from nlp_transfer.predict.rebuild import rebuild_model

    transformers.utils.logging.disable_progress_bar()  # per-tensor loading bars are noise here
    local = _local_base_dir(dict(meta.get("base_model") or {}), None)
    source, revision = (str(local), None) if local else (str(base_ref["name"]), base_ref.get("revision"))
    model, _, _, _ = rebuild_model(out, device="cpu", trust_remote_code=bool(meta.get("trust_remote_code")),
                                   merge=merge, base_model=source, base_revision=revision)
    return model


def verify_merged_export(out: Path, stage: Path, meta: dict[str, Any], base_ref: dict[str, Any]) -> None:
    """The merged folder keeps the head, num_labels/id2label, and predicts like the unmerged model."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    from nlp_transfer.predict import Predictor, load_model

    def fail(found: str) -> ModelError:
        return ModelError("merged export", expected="the trained head, labels and predictions of the output "
                          "folder", found=found, fix="report this as a bug; push without --merge meanwhile")

    cfg = _read_json(stage / "config.json")
    labels = meta.get("label_names")
    if labels and [cfg.get("id2label", {}).get(str(i)) for i in range(len(labels))] != list(labels):
        raise fail(f"id2label {cfg.get('id2label')}")
    if cfg.get("num_labels") != meta["head"]["num_outputs"]:
        raise fail(f"num_labels {cfg.get('num_labels')}")
    # The head: the trained tensors (as the strategy saved them), not a fresh one. A native task
    # model carries its head inside; the prediction check below covers it.
    if (stage / "head.safetensors").is_file():
        head = load_file(str(stage / "head.safetensors"))
        trained = strategy_of(meta, out).trained_head(out)
        if set(head) != set(trained) or any(not torch.equal(head[k], trained[k]) for k in head):
            raise fail("a head that differs from the trained one")
    # Predictions: the exported folder through the normal loader vs the unmerged computation.
    reference = _build_model(out, meta, base_ref, merge=False)
    exported, tokenizer, emeta, _ = load_model(stage, device="cpu")
    pairs = list(reversed(PROBE_TEXTS)) if meta.get("text_pair") else None
    with torch.inference_mode():
        want = Predictor(reference, tokenizer, meta, out).logits(PROBE_TEXTS, pairs)
        got = Predictor(exported, tokenizer, emeta, stage).logits(PROBE_TEXTS, pairs)
    if want.shape != got.shape or not np.allclose(want, got, atol=1e-4, rtol=1e-4):
        raise fail(f"logits differing by up to {float(np.abs(want - got).max()):.2e}")


def _fix_config_labels(path: Path, meta: dict[str, Any]) -> None:
    """config.json says how many outputs the head has and what they are called."""
    cfg = _read_json(path)
    n = int(meta["head"]["num_outputs"])
    labels = meta.get("label_names")
    names = list(labels) if labels and len(labels) == n else [f"LABEL_{i}" for i in range(n)]
    cfg["id2label"] = {str(i): name for i, name in enumerate(names)}
    cfg["label2id"] = {name: i for i, name in enumerate(names)}
    cfg["num_labels"] = n
    spec = TASKS.get(str(meta.get("task")))
    if spec is not None and spec.problem_type:
        cfg["problem_type"] = spec.problem_type
    cfg.pop("_name_or_path", None)
    _write_json(path, cfg)


# --------------------------------------------------------------------------- the commit

def _commit(api: Any, target: _Target, stage: Path, *, private: bool, message: str) -> Any:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    created_repo = created_branch = False
    try:
        if not target.repo_exists:
            api.create_repo(target.repo_id, private=private, exist_ok=False)
            created_repo = True
            target.remote_files = [".gitattributes"]
        if target.branch != "main" and not target.branch_exists:
            api.create_branch(target.repo_id, branch=target.branch)
            created_branch = True
        staged = staged_files(stage)
        ops: list[Any] = [CommitOperationDelete(path_in_repo=p) for p in target.remote_files
                          if p not in staged and p != ".gitattributes"]
        ops += [CommitOperationAdd(path_in_repo=n, path_or_fileobj=str(stage / n)) for n in staged]
        return api.create_commit(target.repo_id, ops, commit_message=message, revision=target.branch,
                                 parent_commit=target.parent_commit if target.branch_exists else None)
    except Exception as e:  # noqa: BLE001 - undo what this push created, then one clear line
        try:
            if created_repo:
                api.delete_repo(target.repo_id)
            elif created_branch:
                api.delete_branch(target.repo_id, branch=target.branch)
        except Exception:  # noqa: BLE001
            pass
        status = _status(e)
        if status in (401, 403):
            raise EnvironmentSetupError(f"push to {target.repo_id}", expected="write access",
                                        found=f"HTTP {status}: {_first_line(e)}",
                                        fix="use a token with write access to this namespace") from None
        if status == 412:
            raise ConfigError(f"push to {target.repo_id}@{target.branch}", expected="no concurrent change",
                              found="a commit landed while pushing", fix="run the push again") from None
        if status is None and not isinstance(e, OSError):
            raise
        raise EnvironmentSetupError(f"push to {target.repo_id}", expected="the Hub to accept the upload",
                                    found=f"{type(e).__name__}: {_first_line(e)}",
                                    fix="check your network and the repo, then run the push again") from None


def _default_message(cls: type, merged: bool, out: Path) -> str:
    return f"Upload {cls.push_description(merged)} trained with nlp_transfer ({out.resolve().name})"


# --------------------------------------------------------------------------- helpers

class _scrubbed:
    """Re-raise NLPTransferErrors with the token masked (belt and braces: messages never contain it)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, NLPTransferError) and self.token and self.token in str(exc):
            for attr in ("what", "expected", "found", "fix"):
                v = getattr(exc, attr, None)
                if isinstance(v, str):
                    setattr(exc, attr, v.replace(self.token, "***"))
            exc.args = (str(exc.args[0]).replace(self.token, "***"),)
        return False


def staged_files(stage: Path) -> list[str]:
    """Paths (``/``-separated, relative) of every file staged for upload, subfolders included
    (a pooled head's ``encoder/``)."""
    return sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())


def _assert_no_token(stage: Path, token: str) -> None:
    needle = token.encode()
    if len(needle) < 8:  # not a real Hub token; a short string could match weight bytes by chance
        return
    for n in staged_files(stage):
        if needle in (stage / n).read_bytes():
            raise ModelError(f"file {n} to upload", expected="no access token in any uploaded file",
                             found="your Hugging Face token", fix="remove the token from the recipe/metrics "
                             "(e.g. a data or model option) and train again")


def _strip_local_paths(obj: Any) -> Any:
    """Absolute local paths -> their last component (no home folders or machine layout on the Hub)."""
    if isinstance(obj, dict):
        return {k: _strip_local_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip_local_paths(v) for v in obj]
    if isinstance(obj, str) and (obj.startswith(("/", "~", "\\\\")) or re.match(r"^[A-Za-z]:[\\/]", obj)):
        return _last_component(obj)
    return obj


def _looks_like_hub_id(name: str) -> bool:
    """'org/name' (or a legacy canonical id like 'bert-base-uncased') that is not a local path."""
    return bool(_REPO_ID_RE.match(name)) and "--" not in name and ".." not in name \
        and not Path(name).expanduser().exists()


def _last_component(s: str) -> str:
    return Path(s.rstrip("/\\")).name or s


def _weights_sha(folder: Path) -> str | None:
    from nlp_transfer.model import weights_sha256
    return weights_sha256(str(folder))


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"{path.name} in {path.parent}", expected="a readable JSON object",
                         found=type(e).__name__, fix="re-run training or restore the file") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path.name} in {path.parent}", expected="a JSON object", found=type(data).__name__,
                         fix="re-run training or restore the file")
    return data


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def _status(e: BaseException) -> int | None:
    return getattr(getattr(e, "response", None), "status_code", None)


def _first_line(e: BaseException) -> str:
    from nlp_transfer.publish.card import scrub_secrets
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return scrub_secrets(text)[:200]


def _unreachable(endpoint: str, e: BaseException) -> EnvironmentSetupError:
    status = _status(e)
    found = f"HTTP {status}: {_first_line(e)}" if status else f"{type(e).__name__}: {_first_line(e)}"
    return EnvironmentSetupError(f"Hub at {endpoint}", expected="a reachable Hugging Face Hub", found=found,
                                 fix="check your network (and HF_ENDPOINT), then run the push again")


# --------------------------------------------------------------------------- CLI

def _cmd_push(args: argparse.Namespace) -> int:
    result = push_to_hub(args.output_dir, args.repo_id, private=args.private, revision=args.revision,
                         merge=args.merge, overwrite=args.overwrite, commit_message=args.message,
                         base_model_id=args.base_model_id, onnx=args.format == "onnx")
    kind = result.strategy + (" merged" if result.merged else "")
    print(f"pushed {args.output_dir} ({kind}) to {result.repo_id}@{result.revision}: {len(result.files)} files, "
          f"{result.total_bytes / 1e6:.2f} MB in {result.seconds:.1f} s")
    if result.base_model:
        print(f"base model: {result.base_model['name']}@{str(result.base_model.get('revision'))[:12]}")
    print(f"commit: {result}")
    rev = f', revision="{result.revision}"' if result.revision != "main" else ""
    print(f'load:   nlp_transfer.load("{result.repo_id}"{rev})')
    return 0


def add_subcommand(sub: "argparse._SubParsersAction") -> None:  # noqa: F821
    """``nlp-transfer push OUTPUT_DIR --repo-id user/name [...]``."""
    p = sub.add_parser("push", help="publish a trained output folder to the Hugging Face Hub",
                       description="Publish a trained output folder to the Hub (token: HF_TOKEN or `hf auth "
                                   "login`). Nothing is uploaded unless every check passes.")
    p.add_argument("output_dir", help="the output.dir of a finished training run")
    p.add_argument("--repo-id", required=True, help="user/name or org/name")
    p.add_argument("--private", action="store_true", help="create the repo private")
    p.add_argument("--revision", help="branch to push to (created from main if new)")
    p.add_argument("--merge", action="store_true",
                   help="frozen: include the encoder weights; lora: merge adapters into the encoder")
    p.add_argument("--overwrite", action="store_true", help="replace the content of an existing repo/branch")
    p.add_argument("--base-model-id", help="Hub id of the base model when training used a local copy of it")
    p.add_argument("--message", help="commit message")
    p.add_argument("--format", choices=["default", "onnx"], default="default",
                   help="onnx: also upload the checked ONNX export in onnx/")
    p.set_defaults(func=_cmd_push)

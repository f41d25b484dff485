"""The local Hub-protocol server (tests/hub_server.py) is faithful enough for huggingface_hub 2.x
and transformers: uploads (regular + LFS), listings, downloads, auth errors, revisions.

Needs the ``hub`` / ``local_hub`` fixtures: tests/conftest.py imports them from hub_server
(which must happen before huggingface_hub is imported, see hub_server's docstring).
"""
from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (HfHubHTTPError, RemoteEntryNotFoundError, RepositoryNotFoundError,
                                    RevisionNotFoundError)

from hub_server import (ALICE_READ_TOKEN, ALICE_WRITE_TOKEN, BOB_WRITE_TOKEN, LFS_SIZE_THRESHOLD, WRONG_TOKEN,
                        LocalHub, validate_card_metadata)

# huggingface_hub's own LFS PUT passes a file object as `data=`; httpx2 deprecates that spelling.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")

BIG = LFS_SIZE_THRESHOLD + 512 * 1024  # > 10 MB: must travel through the LFS batch + PUT path


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "to_push"
    (folder / "nested").mkdir(parents=True)
    (folder / "notes.txt").write_text("small text file\nsecond line\n", encoding="utf-8")
    (folder / "nested" / "config.json").write_text(json.dumps({"a": 1}), encoding="utf-8")
    (folder / "weights.bin").write_bytes(random.Random(0).randbytes(BIG))
    return folder


def _status(err: pytest.ExceptionInfo) -> int:
    return err.value.response.status_code


def test_upload_folder_then_list_and_download_back_identical(hub: LocalHub, tmp_path: Path) -> None:
    api = HfApi()
    repo_id = hub.new_repo_id("roundtrip")
    url = api.create_repo(repo_id)
    assert url.repo_id == repo_id and url.startswith(hub.endpoint)
    folder = _folder(tmp_path)
    info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="add files")
    assert len(info.oid) == 40

    expected = {"notes.txt", "nested/config.json", "weights.bin"}
    assert set(api.list_repo_files(repo_id)) == expected | {".gitattributes"}
    # the big binary went through LFS (batch + PUT), the text file as a regular blob
    methods = [(m, p.split("?")[0]) for m, p, _ in hub.requests]
    assert ("POST", f"/{repo_id}.git/info/lfs/objects/batch") in methods
    assert any(m == "PUT" and p.startswith("/lfs-upload/") for m, p in methods)
    siblings = {s.rfilename: s for s in api.model_info(repo_id, files_metadata=True).siblings}
    assert siblings["weights.bin"].lfs is not None and siblings["weights.bin"].lfs.size == BIG
    assert siblings["notes.txt"].lfs is None and siblings["notes.txt"].size == (folder / "notes.txt").stat().st_size

    for name in expected:
        path = hf_hub_download(repo_id, name, cache_dir=tmp_path / "cache1")
        assert Path(path).read_bytes() == (folder / name).read_bytes(), name
    snap = Path(snapshot_download(repo_id, cache_dir=tmp_path / "cache2"))
    for name in expected:
        assert (snap / name).read_bytes() == (folder / name).read_bytes(), name
    assert hub.files(repo_id)["weights.bin"] == (folder / "weights.bin").read_bytes()

    # pushing the same folder again changes nothing: same head commit, no second LFS upload
    n_puts = sum(m == "PUT" for m, _ in methods)
    again = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="same files")
    assert again.oid == info.oid
    assert sum(m == "PUT" for m, _, _ in hub.requests) == n_puts


def test_wrong_token_is_401_everywhere(hub: LocalHub, tmp_path: Path) -> None:
    repo_id = hub.new_repo_id("wrongtoken")
    HfApi().create_repo(repo_id)
    bad = HfApi(token=WRONG_TOKEN)
    with pytest.raises(HfHubHTTPError) as e:
        bad.whoami()
    assert _status(e) == 401 and "Invalid user token" in str(e.value)
    with pytest.raises(HfHubHTTPError) as e:
        bad.create_repo(hub.new_repo_id("never"))
    assert _status(e) == 401 and "Invalid credentials" in str(e.value)
    with pytest.raises(HfHubHTTPError) as e:
        bad.upload_folder(repo_id=repo_id, folder_path=_folder(tmp_path), commit_message="x")
    assert _status(e) == 401
    with pytest.raises(HfHubHTTPError) as e:
        bad.model_info(repo_id)
    assert _status(e) == 401
    assert set(hub.files(repo_id)) == {".gitattributes"}  # nothing was pushed


def test_missing_token_cannot_write(hub: LocalHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HF_TOKEN")
    anonymous = HfApi(token=False)
    with pytest.raises(HfHubHTTPError) as e:
        anonymous.create_repo(hub.new_repo_id("anon"))
    assert _status(e) == 401 and "authenticated" in str(e.value)
    repo_id = hub.new_repo_id("public")
    HfApi(token=ALICE_WRITE_TOKEN).create_repo(repo_id)
    assert anonymous.model_info(repo_id).id == repo_id  # public repos stay readable
    with pytest.raises(HfHubHTTPError) as e:
        anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert _status(e) == 401


def test_read_only_token_reads_but_cannot_write(hub: LocalHub) -> None:
    repo_id = hub.new_repo_id("readonly")
    HfApi(token=ALICE_WRITE_TOKEN).create_repo(repo_id, private=True)
    reader = HfApi(token=ALICE_READ_TOKEN)
    who = reader.whoami()
    assert who["name"] == "alice" and who["auth"]["accessToken"]["role"] == "read"
    assert reader.model_info(repo_id).private is True  # her own private repo is visible
    with pytest.raises(HfHubHTTPError) as e:
        reader.create_repo(hub.new_repo_id("ro"))
    assert _status(e) == 403 and "read-only" in str(e.value)
    with pytest.raises(HfHubHTTPError) as e:
        reader.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=repo_id)
    assert _status(e) == 403 and "read-only" in str(e.value)
    assert set(hub.files(repo_id)) == {".gitattributes"}


def test_other_namespace_is_403_and_private_repos_are_hidden(hub: LocalHub) -> None:
    bob = HfApi(token=BOB_WRITE_TOKEN)
    public, private = hub.new_repo_id("pub", user="bob"), hub.new_repo_id("priv", user="bob")
    bob.create_repo(public)
    bob.create_repo(private, private=True)
    bob.upload_file(path_or_fileobj=b"bob's", path_in_repo="f.txt", repo_id=public)
    alice = HfApi(token=ALICE_WRITE_TOKEN)
    with pytest.raises(HfHubHTTPError) as e:
        alice.create_repo(hub.new_repo_id("mine", user="bob"))
    assert _status(e) == 403 and 'namespace "bob"' in str(e.value)
    with pytest.raises(HfHubHTTPError) as e:
        alice.upload_file(path_or_fileobj=b"alice's", path_in_repo="f.txt", repo_id=public)
    assert _status(e) == 403
    assert hub.files(public)["f.txt"] == b"bob's"
    assert alice.list_repo_files(public) == [".gitattributes", "f.txt"]  # readable, not writable
    with pytest.raises(RepositoryNotFoundError):
        alice.model_info(private)
    # exist_ok does not hide a namespace alice cannot write to when the repo does not exist
    with pytest.raises(HfHubHTTPError) as e:
        alice.create_repo(hub.new_repo_id("new", user="bob"), exist_ok=True)
    assert _status(e) == 403


def test_create_repo_twice_is_409_unless_exist_ok(hub: LocalHub) -> None:
    api = HfApi()
    repo_id = hub.new_repo_id("twice")
    first = api.create_repo(repo_id)
    with pytest.raises(HfHubHTTPError) as e:
        api.create_repo(repo_id)
    assert _status(e) == 409
    assert api.create_repo(repo_id, exist_ok=True) == first


def test_missing_repo_revision_and_file_raise_the_usual_errors(hub: LocalHub, tmp_path: Path) -> None:
    api = HfApi()
    repo_id = hub.new_repo_id("errors")
    api.create_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(hub.new_repo_id("nope"))
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(repo_id, "missing.txt", cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(hub.new_repo_id("nope"), "config.json", cache_dir=tmp_path)
    assert api.file_exists(repo_id, ".gitattributes") and not api.file_exists(repo_id, "missing.txt")


def test_branches_tags_and_revisions(hub: LocalHub, tmp_path: Path) -> None:
    api = HfApi()
    repo_id = hub.new_repo_id("revs")
    api.create_repo(repo_id)
    v1 = api.upload_file(path_or_fileobj=b"v1", path_in_repo="f.txt", repo_id=repo_id).oid
    api.create_branch(repo_id, branch="dev")
    api.create_branch(repo_id, branch="dev", exist_ok=True)
    v2 = api.upload_file(path_or_fileobj=b"v2", path_in_repo="f.txt", repo_id=repo_id, revision="dev").oid
    api.create_tag(repo_id, tag="v1.0", revision=v1)
    refs = api.list_repo_refs(repo_id)
    assert {b.name: b.target_commit for b in refs.branches} == {"main": v1, "dev": v2}
    assert [t.target_commit for t in refs.tags] == [v1]
    read = {rev: Path(hf_hub_download(repo_id, "f.txt", revision=rev, cache_dir=tmp_path)).read_bytes()
            for rev in ("main", "dev", "v1.0", v2)}
    assert read == {"main": b"v1", "dev": b"v2", "v1.0": b"v1", v2: b"v2"}
    assert [c.commit_id for c in api.list_repo_commits(repo_id, revision="dev")][:2] == [v2, v1]
    pr = api.upload_file(path_or_fileobj=b"pr", path_in_repo="f.txt", repo_id=repo_id, create_pr=True)
    assert pr.pr_url is not None and hub.files(repo_id)["f.txt"] == b"v1"
    assert hub.files(repo_id, revision=f"refs/pr/{pr.pr_num}")["f.txt"] == b"pr"


def test_readme_metadata_is_validated_on_upload(hub: LocalHub) -> None:
    api = HfApi()
    repo_id = hub.new_repo_id("card")
    api.create_repo(repo_id)
    bad = "---\nmodel-index:\n- name: m\n  results:\n  - task: {}\n    metrics: []\n---\n# card\n"
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_file(path_or_fileobj=bad.encode(), path_in_repo="README.md", repo_id=repo_id)
    good = "---\nlicense: apache-2.0\ntags:\n- nlp_transfer\n---\n# card\n"
    api.upload_file(path_or_fileobj=good.encode(), path_in_repo="README.md", repo_id=repo_id)
    info = api.model_info(repo_id)
    assert info.card_data["license"] == "apache-2.0" and info.tags == ["nlp_transfer"]


def test_validate_card_metadata_rules() -> None:
    ok = ("---\nlicense: mit\nmodel-index:\n- name: m\n  results:\n  - task: {type: text-classification}\n"
          "    dataset: {type: imdb, name: IMDB}\n    metrics:\n    - {type: accuracy, value: 0.9}\n---\n")
    assert validate_card_metadata(ok) == []
    assert validate_card_metadata("no metadata at all") == []
    assert any("YAML" in m for m in validate_card_metadata("---\nkey: [unclosed\n---\n"))
    assert validate_card_metadata("---\ntags: 3\n---\n") == ['"tags" must be a string or a list of strings']
    errs = validate_card_metadata(ok.replace("{type: accuracy, value: 0.9}", "{type: accuracy}"))
    assert errs == ['"model-index[0].results[0].metrics[0]" needs "type" and "value"']


def test_lfs_put_with_wrong_content_is_rejected(hub: LocalHub) -> None:
    repo_id = hub.new_repo_id("lfs")
    HfApi().create_repo(repo_id)
    payload = {"operation": "upload", "transfers": ["basic"], "ref": {"name": "main"}, "hash_algo": "sha256",
               "objects": [{"oid": "a" * 64, "size": 3}]}
    req = urllib.request.Request(f"{hub.endpoint}/{repo_id}.git/info/lfs/objects/batch", method="POST",
                                 data=json.dumps(payload).encode(),
                                 headers={"Authorization": f"Bearer {ALICE_WRITE_TOKEN}",
                                          "Content-Type": "application/vnd.git-lfs+json"})
    with urllib.request.urlopen(req) as resp:
        href = json.loads(resp.read())["objects"][0]["actions"]["upload"]["href"]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(urllib.request.Request(href, method="PUT", data=b"xyz"))
    assert e.value.code == 400 and "does not match" in json.loads(e.value.read())["error"]


def test_transformers_push_to_hub_and_from_pretrained(hub: LocalHub, tiny_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tiny_model).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    repo_id = hub.new_repo_id("tiny-bert")
    model.push_to_hub(repo_id)  # transformers' own push path: save_pretrained + create_commit
    tokenizer.push_to_hub(repo_id)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(HfApi().list_repo_files(repo_id))

    loaded = AutoModel.from_pretrained(repo_id, cache_dir=tmp_path).eval()
    loaded_tok = AutoTokenizer.from_pretrained(repo_id, cache_dir=tmp_path)
    enc = loaded_tok(["the team won the match", "stock market data"], padding=True, return_tensors="pt")
    assert enc["input_ids"].tolist() == tokenizer(["the team won the match", "stock market data"],
                                                  padding=True, return_tensors="pt")["input_ids"].tolist()
    with torch.no_grad():
        assert torch.equal(model(**enc).last_hidden_state, loaded(**enc).last_hidden_state)

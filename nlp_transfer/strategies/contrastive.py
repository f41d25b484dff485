"""``contrastive``: few-shot transfer by SetFit's method (Tunstall et al. 2022, "Efficient Few-Shot
Learning Without Prompts").

Two phases, one run:

1. **Pairs** (:meth:`ContrastiveStrategy.tune_encoder`): sentence pairs drawn from the labelled
   examples, two class-name sentences per class among them by default ("This sentence is joy":
   ``data.label_examples``, :attr:`ContrastiveStrategy.label_examples`), each round giving every
   example one same-label and one other-label partner (balanced, seeded by ``train.seed``),
   fine-tune the whole encoder so that same-label sentences point the same way
   (``strategy.pair_loss``: SetFit's cosine-similarity MSE, a margin loss or CoSENT) on the pooled
   sentence vector (mean pooling unless the checkpoint declares another).
2. **Head**: the engine's loop then trains the task head on features of the *tuned* encoder, as
   ``frozen`` does (cached features, early stopping, best epoch, checkpoints), with SetFit's head in
   mind: the features are unit-length where the checkpoint declares sentence-transformers'
   Normalize (``declared_normalize``), and the loss carries scikit-learn's L2 penalty
   (``strategy.head_c``).

The output folder is a full one (the tuned encoder + ``head.safetensors``): reload, push and card
follow ``full``. Resume: the tuned encoder is kept in ``checkpoints/contrastive/`` with a
fingerprint of what produced it, and a resumed run reuses it instead of repeating phase 1; the RNG
is reseeded after phase 1 either way, so an interrupted run ends bitwise like an uninterrupted one.
Under N processes phase 1 runs identically on every process (few-shot data is small; no gradient
exchange needed), phase 2 splits its batches as any run does.

Written on top of plain torch rather than ``sentence_transformers.SentenceTransformerTrainer``
(what SetFit runs): that trainer owns its model, loop and data pipeline, where this phase must
share our encoder object, pooling, collator, mixed precision and seeding with the head phase.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from nlp_transfer.errors import ConfigError, NLPTransferError
from nlp_transfer.model.embedding_rows import (SeenRowsEmbedding, merge_seen_rows, train_seen_rows_if_exact,
                                               unseen_decay)
from nlp_transfer.strategies.base import TuneContext
from nlp_transfer.strategies.frozen import FrozenStrategy
from nlp_transfer.strategies.full import FullStrategy

#: Tasks whose labels say which sentences belong together.
SUPPORTED_TASKS = ("sequence_classification",)
#: Above this many unordered pairs (about 2,000 examples) partners are sampled instead of listed.
MAX_ENUMERATED_PAIRS = 2_000_000


def sample_pairs(labels: list[int], rounds: int, seed: int) -> list[tuple[int, int, float]]:
    """SetFit's pairs (``ContrastiveDataset`` with ``num_iterations``): every unordered pair of
    examples, an example with itself included, in a seeded random order, split into same-label
    ``(i, j, 1.0)`` and other-label ``(i, j, 0.0)`` pairs; each list is cycled to ``rounds`` x
    examples pairs, and the two are interleaved. Exactly half are positive."""
    n = len(labels)
    rng = random.Random(seed)
    if n * (n + 1) // 2 > MAX_ENUMERATED_PAIRS:
        return sampled_pairs(labels, rounds, rng)
    order = [(i, j) for i in range(n) for j in range(i, n)]
    rng.shuffle(order)
    pos = [(i, j, 1.0) for i, j in order if labels[i] == labels[j]]
    neg = [(i, j, 0.0) for i, j in order if labels[i] != labels[j]]
    size = rounds * n
    pairs: list[tuple[int, int, float]] = []
    for k in range(size):
        pairs.append(pos[k % len(pos)])
        pairs.append(neg[k % len(neg)])
    return pairs


def sampled_pairs(labels: list[int], rounds: int, rng: random.Random) -> list[tuple[int, int, float]]:
    """Large training sets, where listing every pair would not fit in memory (SetFit lists them
    all): each round gives every example one random same-label and one other-label partner."""
    by_label: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_label.setdefault(int(y), []).append(i)
    others = {y: [i for z, idx in by_label.items() if z != y for i in idx] for y in by_label}
    pairs: list[tuple[int, int, float]] = []
    for _ in range(rounds):
        for i, y in enumerate(labels):
            pairs.append((i, rng.choice(by_label[int(y)]), 1.0))
            pairs.append((i, rng.choice(others[int(y)]), 0.0))
    return pairs


def length_grouped(pairs: list[tuple[int, int, float]], lengths: list[int], batch_size: int,
                   rng: random.Random, group: int = 50) -> list[list[tuple[int, int, float]]]:
    """Batches of pairs in a seeded random order, sorted by length within mega-batches of ``group``
    batches (transformers' LengthGroupedSampler idea): both sides of a batch are padded together,
    so similar lengths pad less. The batches are then shuffled."""
    shuffled = list(pairs)
    rng.shuffle(shuffled)
    size = batch_size * group
    batches = []
    for m in range(0, len(shuffled), size):
        mega = sorted(shuffled[m:m + size], key=lambda p: max(lengths[p[0]], lengths[p[1]]))
        batches += [mega[b:b + batch_size] for b in range(0, len(mega), batch_size)]
    rng.shuffle(batches)
    return batches


#: CoSENT's temperature: sentence-transformers' ``CoSENTLoss(scale=20.0)`` default.
COSENT_SCALE = 20.0


def pair_loss(u: torch.Tensor, v: torch.Tensor, target: torch.Tensor, kind: str, margin: float) -> torch.Tensor:
    """``cosine``: MSE(cos(u, v), target) (sentence-transformers' CosineSimilarityLoss, SetFit's
    default); ``margin``: same-label pairs to cos 1, other-label pairs below ``margin``;
    ``cosent``: every same-label pair of the batch ranked above every other-label pair,
    log(1 + sum exp(scale (cos_neg - cos_pos))) (Su 2022; sentence-transformers' ``CoSENTLoss``,
    written out here because that class wants a SentenceTransformer model object)."""
    cos = nn.functional.cosine_similarity(u.float(), v.float())
    if kind == "cosine":
        return nn.functional.mse_loss(cos, target)
    if kind == "cosent":
        diff = COSENT_SCALE * (cos[:, None] - cos[None, :])  # [i, j]: cos_i - cos_j
        ranked = target[:, None] < target[None, :]  # i other-label, j same-label: i should score lower
        diff = diff.masked_fill(~ranked, float("-inf"))
        return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.reshape(-1)]), dim=0)
    pos = target * (1 - cos).pow(2)
    neg = (1 - target) * nn.functional.relu(cos - margin).pow(2)
    return (pos + neg).mean()


def check_task(task: str) -> None:
    if task not in SUPPORTED_TASKS:
        raise ConfigError("strategy=contrastive", expected=f"task in {list(SUPPORTED_TASKS)} (labels that say "
                          "which sentences belong together)", found=f"task={task}",
                          fix="use strategy=frozen, lora or full for this task")


def check_pairable(labels: list[int], label_names: list[str] | None) -> None:
    """Same-label pairs need two examples of every class, other-label pairs two classes."""
    counts: dict[int, int] = {}
    for y in labels:
        counts[int(y)] = counts.get(int(y), 0) + 1
    name = (lambda y: label_names[y]) if label_names else str
    single = sorted(name(y) for y, c in counts.items() if c < 2)
    if single:
        raise ConfigError("strategy=contrastive", expected="at least 2 training examples of every class "
                          "(a same-label pair needs two)", found=f"1 example of {', '.join(map(repr, single))}",
                          fix="add examples of that class, or use strategy=frozen")
    if len(counts) < 2:
        raise ConfigError("strategy=contrastive", expected="at least 2 classes (other-label pairs)",
                          found=f"{len(counts)} class", fix="check data.label_column")


class ContrastiveStrategy(FullStrategy):
    """SetFit's method on our loop: contrastive pairs tune the encoder, then a head on its features."""
    name = "contrastive"
    uses_feature_cache = True
    streams = False  # it needs every training row up front
    trains_encoder = True
    stores_encoder = True
    freezes_parameters = True
    native_head = False  # the head trains on cached sentence vectors of the tuned encoder
    #: ``train.min_steps`` is for encoder fine-tuning: the head phase keeps its measured 100 epochs
    #: (full's True would stretch SST-2 k=8, 16 rows a step, to 200).
    step_budget = False
    undeclared_pooling = "mean"
    #: SetFit's head sees the checkpoint's sentence embedding, normalised where it declares so
    #: (all-MiniLM-L6-v2): SST-2 k=8, 3 seeds, our head 58.6 -> 60.2 on unit-length features.
    declared_normalize = True
    examples = 0  #: training examples, counted in phase 1 (the head penalty is 1 / (2 C n))
    #: ``lr``: the encoder's rate in the pair phase (SetFit's body_learning_rate). ``epochs``: of the
    #: head on the tuned features; 8 examples per class are one or two head steps an epoch, and 100
    #: epochs gained 0.9 pt over 30 on emotion k=8 (0.366 vs 0.357, same tuned encoder).
    defaults = {"epochs": 100, "lr": 2e-5, "head_lr": 1e-2, "patience": 5}
    #: Two rows "This sentence is <class>" per class join the training rows (data.label_examples, SetFit's
    #: get_templated_dataset): k=8, 16 paired seeds, SST-2 64.4 -> 68.8, emotion 36.4 -> 46.5 (README "Few-shot").
    label_examples = 2
    saved_weights = "the contrastively tuned encoder and the head"
    card_tags = ("setfit-style", "contrastive", "few-shot")

    @classmethod
    def check_recipe(cls, recipe: Any) -> None:
        check_task(recipe.task)

    # ------------------------------------------------------------------ phase 1
    def tune_encoder(self, ctx: TuneContext) -> dict[str, Any] | None:
        if ctx.tasks > 1:
            raise ConfigError("strategy=contrastive", expected="a single-task recipe", found=f"{ctx.tasks} tasks",
                              fix="train each task with strategy=contrastive, or use frozen/lora/full")
        check_task(ctx.task)  # the task's own name: a multi-task base config carries a default task
        labels = [int(y) for y in ctx.train["label"]]
        check_pairable(labels[:len(labels) - ctx.added_rows], ctx.label_names)  # the user's rows: 2 of each
        self.examples = len(labels)  # the head's penalty (apply) is scaled by it
        cfg, s = ctx.cfg, self.cfg
        pairs = sample_pairs(labels, s.pair_rounds, cfg.train.seed)
        fingerprint = {"rounds": s.pair_rounds, "batch": s.pair_batch_size, "epochs": s.pair_epochs,
                       "loss": s.pair_loss, "margin": s.pair_margin, "lr": cfg.resolved_train()["lr"],
                       "adapter": [s.pair_adapter, s.lora_r, s.lora_alpha, s.lora_dropout, s.target_modules]
                       if s.pair_adapter != "none" else "none",
                       "seed": cfg.train.seed, "pooling": ctx.model.pooling, "data": ctx.train._fingerprint}
        folder = Path(ctx.out_dir) / "checkpoints" / "contrastive"
        reused = self._load(folder, fingerprint, ctx.model.encoder) if cfg.output.resume else None
        if reused is not None:
            self.tuned_params = reused
            ctx.say(f"[nlp_transfer] contrastive: tuned encoder reused from {folder}")
        else:
            self.tuned_params = self._train_pairs(ctx, pairs)
            self._save(folder, fingerprint, ctx.model.encoder, self.tuned_params)
        encoder = ctx.model.encoder
        from accelerate.utils import set_seed
        set_seed(cfg.train.seed)  # the head phase starts from the same RNG whether phase 1 ran or was reused
        digest = hashlib.sha256()
        for k, v in sorted(encoder.state_dict().items()):
            digest.update(k.encode())
            digest.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
        return {"tuned_encoder": digest.hexdigest()[:16]}

    def _train_pairs(self, ctx: TuneContext, pairs: list[tuple[int, int, float]]) -> int:
        """The pair phase; returns the number of parameters it trained (encoder or adapters)."""
        from tqdm.auto import tqdm
        from transformers import get_scheduler

        model, s, seed = ctx.model, self.cfg, ctx.cfg.train.seed
        model.to(ctx.device)
        if s.pair_adapter == "lora":
            model.encoder = self._lora_encoder(model)
            params = [p for p in model.encoder.parameters() if p.requires_grad]
        else:
            params = [p for n, p in model.encoder.named_parameters() if not n.startswith("pooler.")]
        for p in params:
            p.requires_grad = True
        trained = sum(p.numel() for p in params)
        rows = [{k: v for k, v in r.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
                for r in ctx.train]
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": ctx.cfg.train.weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
        seen_rows = self._seen_rows(ctx, groups, rows)
        params = [p for g in groups for p in g["params"]]  # the seen rows in place of the table
        lr = ctx.cfg.resolved_train()["lr"]
        opt = torch.optim.AdamW(groups, lr=lr, fused=ctx.device.type in ("cpu", "cuda"))
        steps = math.ceil(len(pairs) / s.pair_batch_size) * s.pair_epochs
        sched = get_scheduler("linear", opt, num_warmup_steps=int(ctx.cfg.train.warmup_ratio * steps),
                              num_training_steps=steps)
        ctx.say(f"[nlp_transfer] contrastive: {len(pairs)} pairs ({s.pair_rounds} rounds x {len(rows)} examples "
                f"x 2), {steps} steps, loss={s.pair_loss}, lr={lr:g}")
        bar = tqdm(total=steps, desc="contrastive pairs", disable=not ctx.show)
        t0 = time.perf_counter()
        torch.manual_seed(seed)  # dropout masks of this phase
        model.encoder.train()
        order = random.Random(seed + 1)
        lengths = [len(r["input_ids"]) for r in rows]
        for _ in range(s.pair_epochs):
            for chunk in length_grouped(pairs, lengths, s.pair_batch_size, order):
                loss = self._pair_step(ctx, rows, chunk)
                if not torch.isfinite(loss):
                    raise NLPTransferError("contrastive pair loss", expected="a finite number", found=str(loss.item()),
                                      fix="lower train.lr")
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, ctx.cfg.train.max_grad_norm or float("inf"))
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                bar.update(1)
        bar.close()
        ctx.say(f"[nlp_transfer] contrastive: {steps} steps in {time.perf_counter() - t0:.1f} s")
        if seen_rows is not None:  # one plain table again, the other rows decayed as AdamW would have
            merge_seen_rows(model.encoder, unseen_decay(opt, sched, seen_rows.rows)(steps))
        for p in model.encoder.parameters():
            p.requires_grad = False
        if s.pair_adapter == "lora":  # the adapters folded into the encoder's weights: a plain encoder again
            model.encoder = model.encoder.merge_and_unload()
        model.encoder.eval()
        return trained

    @staticmethod
    def _seen_rows(ctx: TuneContext, groups: list[dict[str, Any]],
                   rows: list[dict[str, Any]]) -> SeenRowsEmbedding | None:
        """``train.skip_unseen_embeddings`` in the pair phase, as in the engine's loop: only the
        word-embedding rows of the training sentences' tokens train: the same update, without a dense
        gradient and AdamW pass over MiniLM's table (half its weights) each step; emotion k=8, the
        same accuracy in 0.95x the time (benchmarks/results/fewshot_seen_rows.md). None: every row trains."""
        if not ctx.cfg.train.skip_unseen_embeddings:
            return None
        # no gradient scaler in this phase, so no skipped steps (why_not_seen_rows' skipped_steps)
        module, line = train_seen_rows_if_exact(ctx.model.encoder, groups, (r["input_ids"] for r in rows))
        if module is not None:
            ctx.say(f"[nlp_transfer] contrastive: {line}")
        return module

    def _lora_encoder(self, model: nn.Module) -> nn.Module:
        """The encoder with LoRA adapters on the lora strategy's target modules (``strategy.lora_*``)."""
        from peft import LoraConfig, get_peft_model

        from nlp_transfer.strategies.lora import LoraStrategy
        targets = LoraStrategy(self.cfg).target_modules(model)
        return get_peft_model(model.encoder, LoraConfig(r=self.cfg.lora_r, lora_alpha=self.cfg.lora_alpha,
                                                        lora_dropout=self.cfg.lora_dropout, target_modules=targets,
                                                        bias="none"))

    def _pair_step(self, ctx: TuneContext, rows: list[dict[str, Any]], chunk: list[tuple[int, int, float]]) -> torch.Tensor:
        """Both sides of the pairs in one forward pass (one padded batch of 2 x pairs sentences)."""
        batch = ctx.collate([rows[i] for i, _, _ in chunk] + [rows[j] for _, j, _ in chunk])
        batch = {k: v.to(ctx.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        with ctx.autocast():
            vec = ctx.model.encode(**batch)
        n = len(chunk)
        target = torch.tensor([t for _, _, t in chunk], device=vec.device)
        return pair_loss(vec[:n], vec[n:], target, self.cfg.pair_loss, self.cfg.pair_margin)

    # ------------------------------------------------------------------ phase-1 checkpoint
    @staticmethod
    def _save(folder: Path, fingerprint: dict[str, Any], encoder: nn.Module, trained: int) -> None:
        from accelerate import PartialState
        if not PartialState().is_main_process:
            return
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "encoder.safetensors.tmp"
        save_file({k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}, str(tmp))
        os.replace(tmp, folder / "encoder.safetensors")
        (folder / "tuned.json").write_text(json.dumps({**fingerprint, "trained_params": trained}, sort_keys=True),
                                           encoding="utf-8")

    @staticmethod
    def _load(folder: Path, fingerprint: dict[str, Any], encoder: nn.Module) -> int | None:
        """The phase-1 encoder of an interrupted run with the same fingerprint: loads it and
        returns the parameters that phase trained (None: nothing to reuse)."""
        try:
            saved = json.loads((folder / "tuned.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        trained = int(saved.pop("trained_params", 0))
        if saved != json.loads(json.dumps(fingerprint, sort_keys=True)):
            return None
        encoder.load_state_dict(load_file(str(folder / "encoder.safetensors")))
        return trained

    # ------------------------------------------------------------------ phase 2: frozen's head training
    def apply(self, model: nn.Module) -> nn.Module:
        """The tuned encoder frozen and in eval mode; the head trains with SetFit's regularisation:
        scikit-learn's ``LogisticRegression(C)`` objective divided by n is mean cross-entropy +
        ||W||^2 / (2 C n). Measured on SST-2 k=8 (3 seeds, same tuned encoders): 58.6 without the
        penalty on unnormalised features, 61.7 with C=1 on unit-length ones (scikit-learn's own fit
        of the same objective: 61.8). The default C: StrategyConfig.head_c."""
        model = FrozenStrategy.apply(self, model)
        if self.cfg.head_c and self.examples:
            model.head_l2 = 1.0 / (2.0 * self.cfg.head_c * self.examples)
        return model

    # ------------------------------------------------------------------ publishing
    @classmethod
    def push_description(cls, merged: bool) -> str:
        return "contrastively tuned (SetFit-style) model"

    @classmethod
    def describe(cls, details: dict[str, Any], merged: bool = False) -> str:
        text = ("**Contrastive few-shot** (SetFit's method, Tunstall et al. 2022): the encoder was fine-tuned on "
                "sentence pairs drawn from the labelled examples (same label: pulled together; different labels: "
                "pushed apart), then the task head was trained on the tuned encoder's sentence vectors.")
        if "pair_rounds" not in details:
            return text
        d = details
        loss = {"cosine": "cosine-similarity loss (SetFit's `CosineSimilarityLoss`)",
                "cosent": f"CoSENT ranking loss (sentence-transformers' `CoSENTLoss`, scale {COSENT_SCALE:g})"
                }.get(d.get("pair_loss"), f"{d.get('pair_loss')} loss"
                      + (f" (margin {d['pair_margin']})" if "pair_margin" in d else ""))
        trained = ("LoRA adapters, merged into the encoder before the head was trained"
                   if d.get("pair_adapter") == "lora" else "every encoder weight")
        return (text + f"\nPairs: {d['pair_rounds']} rounds (each labelled example in one same-label and one "
                f"other-label pair a round), {d.get('pair_batch_size', '?')} pairs a step, "
                f"{d.get('pair_epochs', 1)} epoch(s), {loss}; the pair phase trained {trained}.")

    @classmethod
    def card_settings(cls, settings: dict[str, Any]) -> dict[str, Any]:
        keys = ("pair_rounds", "pair_batch_size", "pair_epochs", "pair_loss", "pair_adapter")
        picked = {k: settings[k] for k in keys if settings.get(k) is not None}
        if settings.get("pair_loss") == "margin" and settings.get("pair_margin") is not None:
            picked["pair_margin"] = settings["pair_margin"]
        return picked


"""The engine: one training loop for one task or many.

plan -> accelerator -> data (per task) -> model + strategy -> loaders -> optimizer ->
loop (each step draws a task; held-out and train-sample evaluation, early stopping,
checkpoints, resume, SIGTERM) -> best weights -> final passes -> atomic save.

A single-task recipe is a one-task plan: the same loop, the same checkpoints, the same
resume; only the layout of its output folder and of its printout differ.

Why hand-written rather than ``transformers.Trainer``: Trainer cannot train a head on
cached frozen features, evaluates the train split only as a separate full pass, and
saves the last rather than the best adapter+head without extra callbacks. Everything
distributed (DDP/FSDP/DeepSpeed, mixed precision, gradient accumulation, exact gathered
metrics) comes from Accelerate.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from nlp_transfer.training import checkpoint as ckpt
from nlp_transfer.config import eval_batch_size, stretched_epochs
from nlp_transfer.errors import ConfigError, NLPTransferError
from nlp_transfer.metrics import preload as preload_metrics
from nlp_transfer.training.step import build_optimizer, clip_parameters, compiled_step_model, training_step
from nlp_transfer.model import (HEADS, TASKS, auto_pooling, build_model, count_params, format_params, load_encoder,
                                load_tokenizer, resolve_head, resolve_model)
from nlp_transfer.model.embedding_rows import merge_seen_rows, train_seen_rows_if_exact, unseen_decay
from nlp_transfer.model.multitask import MultiHead, MultiTaskModel
from nlp_transfer.model import GlobalBatchDropout
from nlp_transfer.model.features import launched_on_cpus
from nlp_transfer.strategies import TuneContext, get_strategy, snapshot_trainable, strategy_class
from nlp_transfer.log import NAME as LOGGER_NAME
from nlp_transfer.log import configure as configure_logging
from nlp_transfer.log import verbosity
from nlp_transfer.training.callbacks import TrainState, as_callbacks, callback_name, metrics_function
from nlp_transfer.training.evaluate import default_collator, evaluate
from nlp_transfer.training.finish import finish_run
from nlp_transfer.training.output import base_reference, prepare_output_dir
from nlp_transfer.training.result import RunResult
from nlp_transfer.training.runs import RunPlan, TaskRun, build_loaders, prepare_task_data, tokenize_run
from nlp_transfer.training.host_memory import heap_allocations
from nlp_transfer.training.sampling import combine_scores, task_probabilities, task_schedule



def process_count_note(processes: int, encoder_config: Any, features_only: bool) -> str | None:
    """On N > 1 processes, the launch line that says when this run cannot equal a 1-process run.

    The head's dropout draws the same masks on any process count (``GlobalBatchDropout``), and
    the global batch, data order, sharded feature extraction and metrics are exact. The encoder's
    own dropout layers (a fine-tuned encoder) draw per process: such a run matches 1 process in
    distribution, not number for number."""
    if processes <= 1 or features_only:
        return None
    rates = {k: getattr(encoder_config, k, 0) or 0 for k in ("hidden_dropout_prob", "attention_probs_dropout_prob",
                                                             "dropout", "attention_dropout")}
    active = [f"{k}={v:g}" for k, v in rates.items() if isinstance(v, (int, float)) and v > 0]
    if not active:
        return None
    return (f"[nlp_transfer] note: the encoder trains with its own dropout ({', '.join(active)}), whose masks are "
            f"drawn per process: this {processes}-process run matches a 1-process run in distribution, not number "
            "for number (frozen features, and encoders without dropout, are exact)")


#: Evaluations of a streamed run when ``eval.every_steps`` is unset (a stream has no epochs).
STREAM_EVALUATIONS = 10
#: Where a streamed split that ``frozen`` needs whole is spooled (inside the output folder, removed
#: at the end of the run).
SPOOL_DIR = ".stream"


class Engine:
    """Runs one :class:`RunPlan`. Each stage is a method, called in order by :meth:`run`."""

    def __init__(self, plan: RunPlan, callbacks: Any = None, compute_metrics: Any = None) -> None:
        self.plan, self.cfg = plan, plan.base
        self.user_callbacks = callbacks
        self.compute_metrics = metrics_function(compute_metrics)
        self.callbacks: list[Any] = []
        self.window = [0.0, 0]  # train loss since the last log line: sum, batches
        self.runs: dict[str, TaskRun] = {}
        self.history: list[dict[str, Any]] = []
        self.seen_rows: Any = None  # train.skip_unseen_embeddings: the SeenRowsEmbedding while it trains
        self.best: dict[str, Any] = {"value": -math.inf, "epoch": 0, "step": 0, "weights": None, "scores": None,
                                     "record": None}
        self.step = self.bad_evals = 0
        self.stopped_early = False
        self.timing = {"eval_s": 0.0}  # phase times for metrics.json (read by benchmarks/run.py)
        self.resumed_from: str | None = None

    @property
    def streamed(self) -> bool:
        """The training rows are read from a stream as training goes (not ``frozen``'s spool)."""
        return any(r.stream is not None for r in self.runs.values())

    # ------------------------------------------------------------------ stages
    def run(self) -> RunResult:
        import datasets
        import transformers

        self.t0 = time.time()
        # Library progress bars are switched off during the run (ours cover it) and back on after.
        bars = datasets.is_progress_bar_enabled(), transformers.utils.logging.is_progress_bar_enabled()
        try:
            self.setup()
            self.prepare_data()
            self.build_model()
            on_cpu = self.accelerator.device.type == "cpu"
            with heap_allocations(self.cfg.train.heap_allocations and on_cpu):  # the steps, not data prep
                self.prepare_loaders()
                self.prepare_optimization()
                start_epoch, skip = self.resume()
                self.loop(start_epoch, skip)
            self.count_streamed_rows()
            result = finish_run(self)  # the best weights, final passes, metrics and the saved folder
            self.fire("on_train_end")
            return result
        finally:
            self.remove_spool()
            if bars[0]:
                datasets.enable_progress_bars()
            if bars[1]:
                transformers.utils.logging.enable_progress_bar()

    def count_streamed_rows(self) -> None:
        """A stream's ``train_size`` in metrics.json: the rows training read (frozen: the spooled rows)."""
        t = self.cfg.train
        for r in self.runs.values():
            if r.data.stats.get("streamed"):
                r.data.stats["train_size"] = self.step * t.gradient_accumulation_steps * t.batch_size \
                    if r.stream is not None else len(r.train_tok)

    def remove_spool(self) -> None:
        """Delete a stream's spool file (no wait: a process still reading it keeps its memory map)."""
        spool, acc = getattr(self, "spool_dir", None), getattr(self, "accelerator", None)
        if spool is not None and acc is not None and acc.is_local_main_process and spool.exists():
            shutil.rmtree(spool, ignore_errors=True)

    def setup(self) -> None:
        """Accelerator (global batch split over processes), seed, output folder."""
        from accelerate import Accelerator
        from accelerate.utils import DataLoaderConfiguration, set_seed

        import datasets
        import transformers

        cfg = self.cfg
        # Our own bars cover data, features, training and evaluation; library bars are noise.
        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
        self.hp = cfg.resolved_train()
        self.out_dir = Path(cfg.output.dir)
        self.spool_dir = self.out_dir / SPOOL_DIR
        self.report_to = [r for r in cfg.output.report_to if r and r != "none"]
        self.accelerator = acc = Accelerator(
            cpu=launched_on_cpus(),  # gloo under torchrun on a machine without GPUs
            # The configured batch is the *global* batch, identical on 1 or N processes. It must go
            # through DataLoaderConfiguration: accelerate 1.15 accepts ``split_batches=`` but ignores it.
            dataloader_config=DataLoaderConfiguration(split_batches=True),
            gradient_accumulation_steps=cfg.train.gradient_accumulation_steps,
            mixed_precision=None if cfg.train.mixed_precision == "auto" else cfg.train.mixed_precision,
            log_with=self.report_to or None, project_dir=str(self.out_dir / "logs"))
        self.main = acc.is_main_process
        # The main process speaks for all. Plain logging rather than accelerate.logging.get_logger:
        # its adapter prefixes every line with "[RANK 0]".
        self.log = configure_logging(cfg.output.verbosity) if self.main else logging.getLogger(LOGGER_NAME + ".rank")
        if not self.main:
            self.log.disabled = True
        self.say = self.log.info
        self.show = self.main and cfg.output.progress_bars and verbosity(cfg.output.verbosity) in ("debug", "info")
        self.callbacks = as_callbacks(self.user_callbacks, self.trainer_arguments)
        if acc.num_processes > 1 and cfg.train.batch_size % acc.num_processes:
            raise ConfigError("train.batch_size", expected=f"a multiple of the {acc.num_processes} processes",
                              found=str(cfg.train.batch_size), fix="pick a batch size divisible by the process count")
        if self.plan.multi and (cfg.train.class_weights not in (None, "none") or cfg.train.balanced_sampler):
            raise ConfigError("train.class_weights / train.balanced_sampler", expected="unset in a multi-task recipe",
                              found="set", fix="remove them (they apply to single-task recipes)")
        # None: the per-process default for this device, resolved here and saved with the config
        cfg.eval.batch_size = eval_batch_size(cfg.eval.batch_size, acc.num_processes, acc.device.type != "cpu")
        set_seed(cfg.train.seed)
        if self.main:
            prepare_output_dir(self.out_dir, cfg.output.overwrite or bool(cfg.output.resume))
        acc.wait_for_everyone()

    def prepare_data(self) -> None:
        if self.plan.multi and any(e.data.streaming for e in self.plan.tasks.values()):
            raise ConfigError("data.streaming", expected="a single-task recipe", found="a multi-task plan",
                              fix="train each streamed task in its own recipe, or pass data.streaming=false")
        with self.accelerator.main_process_first():
            for i, (name, entry) in enumerate(self.plan.tasks.items()):
                data = prepare_task_data(entry, strategy_class(self.cfg.strategy.name).label_examples)
                self.runs[name] = TaskRun(name, entry, TASKS[entry.task], data, i, data.label_names)
                added = data.stats.get("label_example_rows")
                if added:
                    self.say(f"[nlp_transfer] {added} rows of {entry.data.label_template!r} filled with the "
                             f"{len(data.label_names)} class names joined the training rows "
                             f"(data.label_examples={entry.data.label_examples}; 0 turns them off)")

    def build_model(self) -> None:
        """The encoder with one head (single-task layout) or a head per task; the tokenizer."""
        cfg, m = self.cfg, self.cfg.model
        if not self.plan.multi:
            (r,) = self.runs.values()
            self.model, self.resolved, self.pooling = build_model(
                m.name, r.entry.task, r.num_labels, m.pooling, m.head_dropout, m.revision, m.trust_remote_code,
                strategy=cfg.strategy.name, label_names=r.label_names, head=m.head,
                n_train=len(r.data.train) if hasattr(type(r.data.train), "__len__") else None)  # None: a stream
        else:
            resolve_head(m.head, cfg.strategy.name, "", multi_task=True)  # an explicit native is refused here
            self.resolved = resolve_model(m.name)
            encoder = load_encoder(self.resolved, m.revision, m.trust_remote_code)
            self.pooling = m.pooling if m.pooling != "auto" else \
                auto_pooling(self.resolved, cfg.strategy.name)
            heads = {n: HEADS[r.spec.head](encoder.config.hidden_size, r.spec.num_outputs(r.num_labels),
                                           m.head_dropout) for n, r in self.runs.items()}
            self.model = MultiTaskModel(encoder, MultiHead(heads), self.pooling,
                                        {n: r.entry.task for n, r in self.runs.items()})
        # load_tokenizer refuses a folder without tokenizer files (no silent empty vocabulary).
        self.tokenizer = load_tokenizer(self.resolved, revision=m.revision, trust_remote_code=m.trust_remote_code)
        limit = getattr(self.model.encoder.config, "max_position_embeddings", None)
        if limit and m.max_length > limit:
            raise ConfigError("model.max_length", expected=f"<= {limit} (the model's position limit)",
                              found=str(m.max_length), fix=f"pass model.max_length={min(limit, 512)}")
        self.base_ref = base_reference(self.resolved, m.name)

    def prepare_loaders(self) -> None:
        """Tokenise, apply the strategy (trainability is decided there, and only there), loaders."""
        cfg, acc = self.cfg, self.accelerator
        rng = np.random.default_rng(cfg.train.seed)
        self.strategy = get_strategy(cfg.strategy)
        # each node's first process tokenises (datasets' cache, a stream's spool file); the others read it
        with acc.local_main_process_first():
            for r in self.runs.values():
                tokenize_run(r, self.tokenizer, cfg, rng, self.strategy.uses_feature_cache, self.spool_dir)
        tuned = self.tune_encoder()
        self.trained = self.strategy.apply(self.model)
        self.trainable, self.total = count_params(self.trained)
        self.trainable += self.strategy.tuned_params  # contrastive: the encoder, trained before the head
        what = f"multi-task {list(self.runs)} " if self.plan.multi else ""
        self.say(f"[nlp_transfer] {what}strategy={self.strategy.name} pooling={self.pooling} "
                  f"{format_params(self.trainable, self.total)}")
        for module in self.model.modules():  # head dropout: the same masks on any process count
            if isinstance(module, GlobalBatchDropout):
                module.global_batch, module.max_positions = cfg.train.batch_size, cfg.model.max_length
        note = process_count_note(acc.num_processes, self.model.encoder.config, self.strategy.uses_feature_cache)
        if note:
            self.say(note)
        self.class_weights = None
        if not self.plan.multi:  # per-class loss weights (tasks/imbalance.py); refused for multi-task
            from nlp_transfer.tasks.imbalance import apply_class_weights
            (r,) = self.runs.values()
            self.class_weights = apply_class_weights(self.model, r.spec, cfg.train.class_weights, r.train_tok,
                                                     r.label_names)
            if self.class_weights:
                self.say(f"[nlp_transfer] class weights {self.class_weights}")
        key = {"model_id": self.resolved, "revision": cfg.model.revision, "weights_sha": self.base_ref["sha256"],
               "pooling": self.pooling, "max_length": cfg.model.max_length}
        if tuned:  # features of a tuned encoder are not the base model's
            key["weights_sha"] = f"{key['weights_sha']}+{sorted(tuned.items())}"
        for r in self.runs.values():
            r.loaders = build_loaders(r, self.model, self.tokenizer, cfg, self.strategy, acc, key,
                                      r.name if self.plan.multi else None, self.show, self.say)
            r.choose_metrics(custom=self.compute_metrics is not None)
            preload_metrics(r.metric_names)  # evaluate's ~1 s import here, not in the first evaluation

    def tune_encoder(self) -> dict[str, Any] | None:
        """The strategy's phase before the head trains (contrastive pairs), on the first task's data."""
        r = next(iter(self.runs.values()))
        collate = r.spec.collator(self.tokenizer) if r.spec.collator else default_collator(self.tokenizer)
        ctx = TuneContext(self.model, r.train_tok, r.entry.task, r.label_names, collate, self.cfg,
                          self.accelerator.device, self.out_dir, self.say, self.show, self.accelerator.autocast,
                          tasks=len(self.runs), added_rows=r.data.stats.get("label_example_rows", 0))
        return self.strategy.tune_encoder(ctx)

    def prepare_optimization(self) -> None:
        cfg, acc, hp = self.cfg, self.accelerator, self.hp
        groups = self.strategy.param_groups(self.trained, hp["lr"], hp["head_lr"], cfg.train.weight_decay)
        self.train_seen_rows(groups)
        self.batches = {n: len(r.loaders["train"]) for n, r in self.runs.items()}
        self.train_rows = {n: r.train_rows() for n, r in self.runs.items()}
        self.steps_in_epoch = sum(self.batches.values())
        self.every_eval = cfg.eval.every_steps
        if self.streamed:  # one loop-epoch of train.max_steps; evaluated every tenth of it by default
            hp["epochs"] = 1
            self.every_eval = self.every_eval or max(1, math.ceil(cfg.train.max_steps / STREAM_EVALUATIONS))
            self.say(f"[nlp_transfer] streaming: {cfg.train.max_steps} steps of {cfg.train.batch_size} rows, "
                     f"held-out: {next(iter(self.runs.values())).data.stats['held_out_source']}, "
                     f"evaluating every {self.every_eval} steps")
        self.eval_every_epochs = self.step_budget()
        optimizer, scheduler, self.total_steps = build_optimizer(groups, hp["head_lr"], acc.device,
                                                                 self.steps_in_epoch, cfg.train, hp["epochs"])
        if self.seen_rows is not None:  # what weight decay makes of the rows that do not train, per step
            self.unseen_scale_at = unseen_decay(optimizer, scheduler, self.seen_rows.rows)
        self.trained, self.optimizer, self.scheduler = acc.prepare(self.trained, optimizer, scheduler)
        for r in self.runs.values():
            r.loaders = {k: (acc.prepare(dl) if dl is not None else None) for k, dl in r.loaders.items()}
        self.step_model = compiled_step_model(self.trained, cfg.train.compile, self.strategy.uses_feature_cache,
                                              self.say)
        self.clip_params = clip_parameters(acc, self.trained)
        s = self.plan.sampling
        self.probs = task_probabilities(self.batches, s.sampling, s.temperature)
        if self.plan.multi:
            self.say(f"[nlp_transfer] task sampling ({s.sampling}): "
                      + ", ".join(f"{k} {v:.2f}" for k, v in self.probs.items()))
        self.state = TrainState(self.out_dir, self.total_steps)
        if self.report_to:
            self.init_trackers()

    def train_seen_rows(self, groups: list[dict[str, Any]]) -> None:
        """``train.skip_unseen_embeddings``: train only the word-embedding rows of tokens in the
        training data when that is the same update (model/embedding_rows.py); merged back in
        ``finish_run``. A stream's tokens are not known in advance: it trains the whole table."""
        encoder = self.model.encoder
        self.seen_rows = None
        if not self.cfg.train.skip_unseen_embeddings or self.streamed:
            return
        ids = (chunk.flatten().to_numpy() for r in self.runs.values()
               for chunk in r.train_tok.data.column("input_ids").chunks)
        self.seen_rows, line = train_seen_rows_if_exact(encoder, groups, ids,
                                                        skipped_steps=self.accelerator.mixed_precision == "fp16")
        (self.say if self.seen_rows is not None else self.log.debug)(f"[nlp_transfer] {line}")

    def merge_embedding_rows(self, step: int) -> None:
        """One plain word-embedding table again (after ``train_seen_rows``), as of ``step``."""
        if self.seen_rows is not None:
            merge_seen_rows(self.model.encoder, self.unseen_scale_at(step))
            self.seen_rows = None

    def step_budget(self) -> int:
        """``train.min_steps``: more epochs when the data is small (the strategy honours it and
        ``train.epochs`` is its default). Returns every how many epochs to evaluate, so that a
        budget of 60 short epochs keeps the evaluations of the default epochs."""
        cfg, hp = self.cfg, self.hp
        if not (self.strategy.step_budget and cfg.train.min_steps and cfg.train.epochs is None) or self.streamed:
            return 1
        per_epoch = math.ceil(self.steps_in_epoch / cfg.train.gradient_accumulation_steps)
        need = stretched_epochs(cfg.train.min_steps, per_epoch, hp["epochs"])
        if need == hp["epochs"]:
            return 1
        every = math.ceil(need / hp["epochs"])
        self.say(f"[nlp_transfer] step budget: {per_epoch} steps per epoch, {need} epochs for train.min_steps="
                 f"{cfg.train.min_steps} (instead of {hp['epochs']}); evaluating every {every} epochs")
        hp["epochs"] = need
        return every

    def init_trackers(self) -> None:
        """Every tracker accelerate supports (``output.report_to``), with the resolved config, the run's
        name (tensorboard: ``logs/<run_name>``; wandb ``name``; mlflow ``run_name``) and init kwargs."""
        cfg, out = self.cfg, self.cfg.output
        flat = {f"{sec}.{k}": (v if isinstance(v, (int, float, str, bool)) else str(v))
                for sec, d in cfg.to_dict().items() if isinstance(d, dict) for k, v in d.items()}
        if self.plan.multi:
            flat["tasks"] = ",".join(self.runs)
        kwargs = {k: dict(v) for k, v in (out.tracker_init_kwargs or {}).items()}
        if out.run_name:
            kwargs.setdefault("wandb", {}).setdefault("name", out.run_name)
            kwargs.setdefault("mlflow", {}).setdefault("run_name", out.run_name)
        self.accelerator.init_trackers(out.run_name or "nlp_transfer", config=flat,
                                       init_kwargs={k: v for k, v in kwargs.items() if k in self.report_to})

    def trainer_arguments(self) -> Any:
        """TrainingArguments' names for this run's settings, the ``args`` a TrainerCallback receives.
        A namespace, not ``TrainingArguments`` itself: building one resets Accelerate's state."""
        from types import SimpleNamespace
        hp, t, out = self.hp, self.cfg.train, self.cfg.output
        return SimpleNamespace(
            output_dir=str(self.out_dir), learning_rate=hp["lr"] or hp["head_lr"], num_train_epochs=hp["epochs"],
            per_device_train_batch_size=t.batch_size // self.accelerator.num_processes,
            gradient_accumulation_steps=t.gradient_accumulation_steps, weight_decay=t.weight_decay, seed=t.seed,
            max_grad_norm=t.max_grad_norm, max_steps=t.max_steps or -1, logging_steps=out.logging_steps,
            eval_steps=self.cfg.eval.every_steps, save_steps=out.checkpoint_every_steps, report_to=self.report_to,
            run_name=out.run_name, metric_for_best_model=self.cfg.eval.metric_for_best)

    # ------------------------------------------------------------------ callbacks and step logs
    def fire(self, hook: str, *args: Any, where: tuple[int, int] | None = None) -> None:
        """Call ``hook`` on every callback. One that raises stops the run with a one-line error naming
        it; inside the loop (``where`` = epoch, position) a checkpoint is written first."""
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is None:
                continue
            try:
                fn(self.state, *args)
            except Exception as e:  # noqa: BLE001 - user code: any error stops the run the same way
                kept = ""
                if where is not None:
                    kept = f"; the checkpoint {self.checkpoint(*where, notify=False)} is kept: continue with output.resume=auto"
                raise NLPTransferError(f"callback {callback_name(cb)}.{hook} at step {self.step}",
                                       expected="a callback that returns", found=f"{type(e).__name__}: {e}",
                                       fix="fix the callback" + kept) from e

    def after_step(self, epoch: int, pos: int, out: dict[str, Any]) -> bool:
        """Step logs every ``output.logging_steps`` (trackers and ``on_log``), then ``on_step_end``.
        Returns True when a callback asked to stop."""
        st = self.state
        st.step, st.epoch = self.step, round(epoch - 1 + pos / self.steps_in_epoch, 4)
        if self.step % self.cfg.output.logging_steps == 0 and self.window[1]:
            logs = {"train/loss": self.window[0] / self.window[1],
                    "train/learning_rate": float(self.scheduler.get_last_lr()[0]), "epoch": st.epoch}
            if out.get("grad_norm") is not None:
                logs["train/grad_norm"] = float(out["grad_norm"])
            self.window = [0.0, 0]
            self.accelerator.log(logs, step=self.step)
            self.fire("on_log", logs, where=(epoch, pos))
        self.fire("on_step_end", where=(epoch, pos))
        return st.should_stop

    # ------------------------------------------------------------------ data position
    def start_pass(self, r: TaskRun, skip: int = 0, resuming: bool = False) -> None:
        """A new pass over a task's training data, shuffled by a generator seeded from the pass
        number: the same order on every process and after a resume."""
        if not resuming:
            r.pass_no += 1
        r.generator.manual_seed(self.cfg.train.seed + 1000 * r.index + r.pass_no)
        loader = r.loaders["train"]
        if r.stream is not None:  # the stream skips the consumed rows itself, untokenised
            r.stream.start_row = skip * self.cfg.train.batch_size
        elif skip:
            loader = self.accelerator.skip_first_batches(loader, skip)
        r.iterator, r.consumed = iter(loader), skip

    def next_batch(self, r: TaskRun) -> dict[str, Any]:
        if r.peeked is not None:
            batch, r.peeked = r.peeked, None
        else:
            if r.iterator is None:
                self.start_pass(r)
            batch = next(r.iterator)
        r.consumed += 1
        if r.consumed >= self.batches[r.name]:
            next(r.iterator, None)  # finish the pass now, as a for-loop would, so Accelerate closes it
            r.iterator = None
        return batch

    def last_batch_share(self, r: TaskRun, batch: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """This process's rows of a pass's last, short global batch, and its loss weight.

        Accelerate completes a short last batch (m < batch_size rows) with rows from the start of
        the pass so every process gets batch_size / N rows; one process trains those m rows once.
        Here each process keeps only its real rows (a prefix: the fill is appended) and weighs its
        mean loss by real * N / m, so DDP's average of the N gradients is the mean over the m real
        rows: the 1-process update. A process without real rows trains one row with weight 0."""
        n_proc = self.accelerator.num_processes
        m = self.train_rows[r.name] % self.cfg.train.batch_size
        if n_proc == 1 or not m or r.consumed != self.batches[r.name]:
            return batch, 1.0
        per = self.cfg.train.batch_size // n_proc
        real = max(0, min(per, m - self.accelerator.process_index * per))
        rows = max(real, 1)
        kept = {k: v[:rows] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == per else v
                for k, v in batch.items()}
        return kept, real * n_proc / m

    # ------------------------------------------------------------------ resume / checkpoint
    def resume(self) -> tuple[int, int]:
        """Restore weights, optimizer, scheduler, RNG and data position from a checkpoint (if any).
        Returns (first epoch, batches of it already consumed)."""
        acc, cfg = self.accelerator, self.cfg
        acc.register_save_state_pre_hook(ckpt.trainable_only_hook)
        resume_from = ckpt.resolve_resume(self.out_dir, cfg.output.resume)
        if resume_from is None:
            return 1, 0
        state, best_weights = ckpt.load_checkpoint(acc, resume_from)
        diffs = ckpt.config_diff(state["config"], self.plan.source.to_dict())
        if diffs and not cfg.output.force_resume:
            raise ConfigError(f"resuming from {resume_from}", expected="the same config as the interrupted run",
                              found="differences in " + "; ".join(diffs),
                              fix="restore those values, or pass output.force_resume=true")
        self.step, self.history, self.bad_evals = state["step"], state["history"], state["bad_evals"]
        self.best.update({k: state["best"][k] for k in ("value", "epoch", "step", "scores", "record")},
                         weights=best_weights)
        for n, pos in state["tasks"].items():
            r = self.runs[n]
            r.pass_no, r.running, r.gap_warned = pos["pass_no"], list(pos["running"]), pos["gap_warned"]
            if r.stream is not None:
                r.stream.pass_rows = list(pos.get("stream_passes") or [])
            if pos["live"]:
                # Start the iterator (and fetch one batch) *before* restoring the RNG: building a
                # DataLoader iterator draws a base seed from the global RNG, which the uninterrupted
                # run did before the checkpoint was taken. A task's pass does not end with the epoch
                # (tasks are sampled), so this holds at an epoch boundary too.
                self.start_pass(r, skip=pos["consumed"], resuming=True)
                r.peeked = next(r.iterator)
        if state["batch_in_epoch"] or any(pos["live"] for pos in state["tasks"].values()):
            rng = torch.load(Path(resume_from) / f"loop_rng_{acc.process_index}.pt", weights_only=True)
            torch.set_rng_state(rng["cpu"])
            if "cuda" in rng and torch.cuda.is_available():
                torch.cuda.set_rng_state(rng["cuda"])
        self.resumed_from = str(resume_from)
        self.say(f"[nlp_transfer] resumed from {resume_from} (epoch {state['epoch']}, step {self.step})")
        return state["epoch"], state["batch_in_epoch"]

    def checkpoint(self, epoch: int, batch_in_epoch: int, notify: bool = True) -> Path:
        state = {"epoch": epoch, "batch_in_epoch": batch_in_epoch, "step": self.step, "bad_evals": self.bad_evals,
                 "history": self.history, "tasks": {n: r.position() for n, r in self.runs.items()},
                 "best": {k: self.best[k] for k in ("value", "epoch", "step", "scores", "record")},
                 "config": self.plan.source.to_dict()}
        path = ckpt.save_checkpoint(self.accelerator, self.out_dir, self.step, state, self.best["weights"],
                                    self.cfg.output.keep_last_n, self.best["step"])
        if notify:  # not while reporting a failed callback: it must not fail a second time
            self.fire("on_save", path)
        return path

    # ------------------------------------------------------------------ the loop
    def train_mode(self) -> None:
        self.trained.train()
        if self.strategy.uses_feature_cache:
            self.accelerator.unwrap_model(self.trained).encoder.eval()  # frozen encoder: no dropout, no stats

    def nonfinite(self, name: str) -> Any:
        def error(loss: torch.Tensor) -> Exception:  # a NaN/inf loss names the step and the way back
            task = f" of task '{name}'" if self.plan.multi else ""
            return NLPTransferError(
                f"training loss{task} at step {self.step + 1}", expected="a finite number", found=str(loss.item()),
                fix=f"lower train.lr or check the labels; last good checkpoint: "
                    f"{ckpt.latest_complete(self.out_dir) or 'none'}")
        return error

    def loop(self, start_epoch: int, skip: int) -> None:
        cfg, acc, hp = self.cfg, self.accelerator, self.hp
        self.state.step = self.step
        self.fire("on_train_begin")
        out_cfg, every_eval = cfg.output, self.every_eval
        t_loop = time.time()
        self.timing["setup_s"] = t_loop - self.t0
        progress = tqdm(total=self.total_steps, initial=self.step, desc=self.progress_label(), disable=not self.show)
        loss_w = {n: float(r.entry.loss_weight) for n, r in self.runs.items()}
        done = self.step >= self.total_steps
        with ckpt.StopSignal() as stop:
            for epoch in range(start_epoch, hp["epochs"] + 1):
                if done:
                    break
                self.train_mode()
                schedule = task_schedule(self.probs, self.steps_in_epoch, cfg.train.seed + epoch)
                pos = skip if epoch == start_epoch else 0
                if not pos:
                    for r in self.runs.values():
                        r.running = [0.0, 0]
                while pos < len(schedule):
                    r = self.runs[schedule[pos]]
                    batch, share = self.last_batch_share(r, self.next_batch(r))
                    out = training_step(acc, self.trained, self.step_model, batch, self.optimizer,
                                        self.scheduler, cfg.train.max_grad_norm, self.nonfinite(r.name),
                                        loss_weight=loss_w[r.name] * share, clip_params=self.clip_params)
                    loss = out["loss"].detach().float().item()
                    r.running[0] += loss
                    r.running[1] += 1
                    self.window[0] += loss
                    self.window[1] += 1
                    pos += 1
                    if not acc.sync_gradients:
                        continue
                    self.step += 1
                    progress.update(1)
                    progress.set_postfix(loss=f"{self.mean_loss():.4f}")
                    done = self.after_step(epoch, pos, out)  # step logs, callbacks (which may stop the run)
                    if every_eval and self.step % every_eval == 0 and not done:
                        if self.evaluate_all(epoch - 1 + pos / self.steps_in_epoch, where=(epoch, pos)):
                            self.stopped_early = done = True
                        done = done or self.state.should_stop
                        self.train_mode()
                    if cfg.train.max_steps and self.step >= cfg.train.max_steps:
                        done = True
                    if done:
                        break
                    if stop.received is not None:
                        path = self.checkpoint(epoch, pos)
                        self.say(f"[nlp_transfer] signal {stop.received}: checkpoint written to {path}; "
                                  f"continue with output.resume=auto")
                        raise SystemExit(128 + stop.received)
                    if out_cfg.checkpoint_every_steps and self.step % out_cfg.checkpoint_every_steps == 0 \
                            and pos < self.steps_in_epoch:
                        self.checkpoint(epoch, pos)
                due = done or epoch % self.eval_every_epochs == 0 or epoch == hp["epochs"]
                if due and (not every_eval or not self.history or self.history[-1]["step"] != self.step):
                    if self.evaluate_all(float(epoch), where=(epoch + 1, 0)):
                        self.stopped_early = done = True
                    done = done or self.state.should_stop
                at_end = done or epoch == hp["epochs"]
                # a step budget's short epochs checkpoint at its evaluations, not 100 times for 50 examples
                per_epoch = out_cfg.checkpoint_every_epoch and epoch % self.eval_every_epochs == 0
                if not at_end and (per_epoch or stop.received is not None or (
                        out_cfg.checkpoint_every_steps and self.step % out_cfg.checkpoint_every_steps == 0)):
                    self.checkpoint(epoch + 1, 0)
                if stop.received is not None and not at_end:
                    self.say(f"[nlp_transfer] signal {stop.received}: checkpoint written; "
                              f"continue with output.resume=auto")
                    raise SystemExit(128 + stop.received)
        progress.close()
        self.timing["loop_s"] = time.time() - t_loop

    def progress_label(self) -> str:
        return f"train {'multi-task ' if self.plan.multi else ''}({self.strategy.name})"

    def task_losses(self) -> dict[str, float]:
        return {n: (r.running[0] / r.running[1] if r.running[1] else float("nan")) for n, r in self.runs.items()}

    def mean_loss(self) -> float:
        total = sum(r.running[1] for r in self.runs.values())
        return sum(r.running[0] for r in self.runs.values()) / max(total, 1)

    # ------------------------------------------------------------------ evaluation
    def score_task(self, r: TaskRun, epoch_f: float) -> dict[str, Any]:
        """Held-out and train-sample scores of one task, its gap, and the overfitting warning."""
        acc, cfg = self.accelerator, self.cfg
        where = f" {r.name}" if self.plan.multi else ""
        kw = {"label_names": r.label_names, "extra": r.extra, "compute_metrics": self.compute_metrics}
        ho = evaluate(acc, self.trained, r.loaders["held_out"], r.entry.task, r.metric_names,
                      f"eval{where} held-out", self.show, **kw)
        if r.best_metric not in ho:
            raise ConfigError("eval.metric_for_best" if not self.plan.multi else f"tasks.{r.name}.metric_for_best",
                              expected=f"one of the held-out scores {sorted(ho)}", found=repr(r.best_metric),
                              fix="name a metric of eval.metrics or a key that compute_metrics returns")
        tr = evaluate(acc, self.trained, r.loaders["sample"], r.entry.task, r.metric_names,
                      f"eval{where} train-sample", self.show, **kw) if len(r.sample_idx) else {}
        gap = (tr.get(r.best_metric, float("nan")) - ho[r.best_metric]) if tr else float("nan")
        if r.best_metric == "loss":
            gap = -gap
        if not math.isnan(gap) and gap > cfg.eval.gap_warning and not r.gap_warned:
            r.gap_warned = True
            on = f" on task '{r.name}'" if self.plan.multi else ""
            extra = ", a smaller loss_weight for this task" if self.plan.multi else ""
            msg = (f"overfitting{on}: train-sample {r.best_metric} is {gap:.3f} above held-out at epoch {epoch_f:.2f} "
                   f"(threshold eval.gap_warning={cfg.eval.gap_warning}); consider fewer epochs, a lower LR{extra}, "
                   f"more data or a strategy that trains fewer weights")
            if self.main:
                warnings.warn(msg, stacklevel=2)
                self.log.warning(f"[nlp_transfer] WARNING {msg}")
        return {"held_out": ho, "train_sample": tr, "gap": gap}

    def evaluate_all(self, epoch_f: float, where: tuple[int, int] | None = None) -> bool:
        """Score every task; track the best (the combination of the tasks' best metrics); tell the
        callbacks (``on_evaluate``); return True to stop early."""
        acc = self.accelerator
        losses = self.task_losses()
        if acc.num_processes > 1:  # each process saw its slice of every batch
            losses = {n: float(acc.reduce(torch.tensor(v, device=acc.device), "mean")) for n, v in losses.items()}
        t_eval = time.perf_counter()
        if self.seen_rows is not None:  # held-out text reads the untrained rows as decay has left them
            self.seen_rows.unseen_scale.fill_(self.unseen_scale_at(self.step))
        # Every DataLoader pass draws a seed from torch's global RNG: without the fork, how often a
        # run evaluates would move the dropout masks of every later training step.
        cuda = [acc.device] if acc.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda):
            scores = {n: self.score_task(r, epoch_f) for n, r in self.runs.items()}
        self.timing["eval_s"] += time.perf_counter() - t_eval
        weights = {n: float(r.entry.combine_weight) for n, r in self.runs.items()}
        signs = {n: r.sign for n, r in self.runs.items()}
        combined = combine_scores({n: s["held_out"][self.runs[n].best_metric] for n, s in scores.items()},
                                  weights, signs)
        tr_vals = {n: s["train_sample"].get(self.runs[n].best_metric) for n, s in scores.items() if s["train_sample"]}
        combined_tr = combine_scores(tr_vals, weights, signs) if len(tr_vals) == len(scores) else float("nan")
        rec = self.record(epoch_f, losses, scores, combined, combined_tr)
        self.history.append(rec)
        keep_last = not self.cfg.eval.select_best  # the last evaluation is "the best": no snapshot, no stop
        if keep_last or combined > self.best["value"] + self.cfg.eval.min_delta:
            self.best.update(value=combined, epoch=epoch_f, step=self.step, scores=scores, record=rec,
                             weights=None if keep_last else snapshot_trainable(acc.unwrap_model(self.trained)))
            self.bad_evals = 0
        else:
            self.bad_evals += 1
        st = self.state
        st.history, st.best = self.history, {k: self.best[k] for k in ("value", "epoch", "step")}
        st.metrics = dict(scores[next(iter(scores))]["held_out"]) if not self.plan.multi else \
            {"combined": combined, **{n: dict(s["held_out"]) for n, s in scores.items()}}
        self.fire("on_evaluate", st.metrics, where=where)
        return self.bad_evals >= self.hp["patience"]

    def record(self, epoch_f: float, losses: dict[str, float], scores: dict[str, dict[str, Any]],
               combined: float, combined_tr: float) -> dict[str, Any]:
        """One history entry, logged to trackers and printed (single-task or multi-task wording)."""
        acc, step = self.accelerator, self.step
        if not self.plan.multi:
            (n, s), = scores.items()
            metric = self.runs[n].best_metric
            ho, tr, gap = s["held_out"], s["train_sample"], s["gap"]
            acc.log({**{f"held_out/{k}": v for k, v in ho.items()}, **{f"train_sample/{k}": v for k, v in tr.items()},
                     "gap": gap, "train/loss": losses[n]}, step=step)
            self.say(f"[nlp_transfer] epoch {epoch_f:.2f} step {step}: held-out {metric}={ho[metric]:.4f} "
                      f"train-sample {metric}={tr.get(metric, float('nan')):.4f} gap={gap:+.4f} loss={losses[n]:.4f}")
            return {"epoch": round(epoch_f, 3), "step": step, "train_loss": losses[n], "held_out": ho,
                    "train_sample": tr, "gap": gap}
        acc.log({"combined": combined, **{f"{n}/held_out/{k}": v for n, s in scores.items()
                                          for k, v in s["held_out"].items()}}, step=step)
        self.say(f"[nlp_transfer] epoch {epoch_f:.2f} step {step}: combined={combined:.4f} " + " ".join(
            f"{n}.{self.runs[n].best_metric}={s['held_out'][self.runs[n].best_metric]:.4f} (gap {s['gap']:+.4f})"
            for n, s in scores.items()))
        return {"epoch": round(epoch_f, 3), "step": step, "train_loss": losses, "combined": combined,
                "combined_train_sample": combined_tr, "gap": combined_tr - combined,
                "tasks": {n: {"held_out": dict(s["held_out"]), "train_sample": dict(s["train_sample"]), "gap": s["gap"]}
                          for n, s in scores.items()}}


def run_plan(plan: RunPlan, callbacks: Any = None, compute_metrics: Any = None) -> RunResult:
    """Train a plan of one or more tasks; returns where the output folder is and its metrics."""
    return Engine(plan, callbacks, compute_metrics).run()

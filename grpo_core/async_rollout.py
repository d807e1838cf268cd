"""Asynchronous (off-policy) rollouts: ``rollout.max_staleness: k > 0`` (issue 17).

One-step-off / PipelineRL-style generation: a worker thread with its own copy of the policy
(and its own hf engine and tokenizer) runs the trainer's generation rounds in the order they
were submitted, while the trainer trains on an earlier batch. The trainer (grpo_core.trainer)
submits the first round of step ``s`` right after the update of step ``s - k - 1`` (steps
``0..k`` at the start), queued behind the weights of that moment, so batch ``s`` is sampled by
policy version ``max(0, s - k)`` (version v: the weights after v training steps) and trained at version
``s``: staleness ``min(s, k)``. The weights are queued to the worker after every update (a
clone of the trainable parameters), and a job runs on exactly the weights queued before it:
the batches do not depend on thread timing.

A stale batch carries the behaviour policy's per-token log-probs (the worker's copy, at the
sampling temperature) as ``Rollouts.sampler_logp``; the trainer then takes its usual
train-vs-sampler path: old log-probs from the current weights (the proximal policy) and
truncated importance weights min(pi_now / pi_behaviour, rollout.is_cap)
(``trainer.sampler_mismatch``). A batch of staleness 0 is on-policy and trained exactly as the
synchronous loop trains it.

``hf``'s generate seeds and draws from torch's global generator, so every generation (the
worker's and the trainer's own: the held-out curve, a sampler's extra round) runs under
:attr:`RolloutWorker.lock`.
"""

from __future__ import annotations

import copy
import dataclasses
import queue
import threading
from concurrent.futures import Future

import torch

from grpo_core.episodes import Episodes
from grpo_core.rollout import Rollouts


@dataclasses.dataclass
class RolloutJob:
    """One generation round of step ``step`` (``rnd``: the collect round), sampled by policy
    version ``version``. ``problems`` are the rows' problems as shown (hints included; only
    ``hints`` is saved, the rest is the train set's). ``behaviour``: the worker computes the
    behaviour log-probs (the batch is stale when it is trained). The result, (Rollouts,
    Episodes, token counts), comes from ``future`` (:meth:`wait`) or from a checkpoint."""

    step: int
    rnd: int
    version: int
    idx: list[int]
    sizes: list[int]
    row_idx: list[int]
    problems: list
    behaviour: bool
    future: Future | None = None
    result: tuple[Rollouts, Episodes, dict] | None = None

    def wait(self) -> tuple[Rollouts, Episodes, dict]:
        """The job's result (re-raises the worker's exception)."""
        if self.result is None:
            self.result = self.future.result()
            self.future = None
        return self.result

    def state(self) -> dict:
        """A state tree of the finished job (grpo_core.rundir.save_state)."""
        ro, ep, counts = self.wait()
        return {
            "step": self.step,
            "rnd": self.rnd,
            "version": self.version,
            "idx": list(self.idx),
            "sizes": list(self.sizes),
            "row_idx": list(self.row_idx),
            "hints": [p.hint for p in self.problems],
            "behaviour": self.behaviour,
            "rollouts": {f.name: getattr(ro, f.name) for f in dataclasses.fields(ro)},
            "episodes": {f.name: getattr(ep, f.name) for f in dataclasses.fields(ep)},
            "counts": dict(counts),
        }

    @staticmethod
    def from_state(d: dict, train_set: list) -> RolloutJob:
        """The job of :meth:`state`, its problems rebuilt from the train set and the hints."""
        problems = [
            train_set[i] if h is None else dataclasses.replace(train_set[i], hint=h)
            for i, h in zip(d["row_idx"], d["hints"])
        ]
        return RolloutJob(
            step=int(d["step"]),
            rnd=int(d["rnd"]),
            version=int(d["version"]),
            idx=[int(i) for i in d["idx"]],
            sizes=[int(g) for g in d["sizes"]],
            row_idx=[int(i) for i in d["row_idx"]],
            problems=problems,
            behaviour=bool(d["behaviour"]),
            result=(Rollouts(**d["rollouts"]), Episodes(**d["episodes"]), dict(d["counts"])),
        )


class RolloutWorker:
    """A thread that runs submitted jobs in order on its own copy of the policy.

    ``sync(model, version)`` queues ``model``'s trainable parameters (cloned now) for the copy;
    ``submit(fn)`` queues ``fn(engine, model, tokenizer, version)`` and returns its Future. A
    job sees exactly the weights queued before it. An error in a job is that job's Future's
    exception; a failed weight load fails every later job. :meth:`close` cancels what has not
    started, waits for the running job and joins the thread.
    """

    def __init__(self, model, tokenizer, version: int, make_engine):
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.model.eval()  # (generate and the behaviour pass: no dropout)
        self.tokenizer = copy.deepcopy(tokenizer)  # a fast tokenizer is not shared by threads
        self.engine = make_engine(self.model, self.tokenizer)
        self.version = version
        # held around every generation, this thread's and the trainer's own (hf's generate
        # seeds and draws from torch's global generator)
        self.lock = threading.Lock()
        self._q: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._run, name="grpo-rollout-worker", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def sync(self, model, version: int) -> None:
        """Queue ``model``'s current trainable parameters as policy ``version``."""
        w = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        self._q.put(("sync", version, w))

    def submit(self, fn) -> Future:
        fut: Future = Future()
        self._q.put(("run", fn, fut))
        return fut

    def _run(self) -> None:
        torch.set_num_threads(self._threads)  # (a new thread starts with the default count)
        params = dict(self.model.named_parameters())
        failed: BaseException | None = None
        while True:
            item = self._q.get()
            if item is None:
                return
            if item[0] == "sync":
                if failed is None and not self._stop.is_set():
                    try:
                        with torch.no_grad():
                            for n, t in item[2].items():
                                params[n].copy_(t)
                        self.version = item[1]
                    except BaseException as e:  # noqa: BLE001 - reported by the next job
                        failed = e
                continue
            _, fn, fut = item
            if self._stop.is_set():
                fut.cancel()
                continue
            if not fut.set_running_or_notify_cancel():
                continue
            if failed is not None:
                fut.set_exception(failed)
                continue
            try:
                with self.lock:
                    res = fn(self.engine, self.model, self.tokenizer, self.version)
            except BaseException as e:  # noqa: BLE001 - re-raised in the trainer by wait()
                fut.set_exception(e)
            else:
                fut.set_result(res)

    def close(self, timeout: float = 120.0) -> bool:
        """Cancel the jobs that have not started, let the running one finish, join the thread
        (at most ``timeout`` s) and free the engine. True when the thread has ended."""
        self._stop.set()
        self._q.put(None)
        self._thread.join(timeout)
        self.engine.close()
        return not self._thread.is_alive()

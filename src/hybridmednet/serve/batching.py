"""Micro-batching on one inference thread per model: every case already queued when the thread
is free runs as one batch (up to ``max_batch``), so a lone request never waits for company and,
under load, the cases that arrive while a batch runs form the next one. ``max_latency_ms`` > 0
additionally holds a batch that long for more cases (larger batches, at that cost in latency).

The queue is bounded: when ``max_queue`` cases already wait, a new one is refused at once with
503 and ``Retry-After`` (the caller retries; the service never hangs or grows without bound). A
case that waits longer than ``timeout_s`` is answered 503 too, and dropped from its batch if it
had not started.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from hybridmednet.serve.uploads import UploadError


@dataclass
class Pending:
    image: np.ndarray
    extras: dict | None
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(self, run_batch: Callable[[np.ndarray, dict | None], np.ndarray], *, max_batch: int = 32,
                 max_latency_ms: float = 0.0, max_queue: int = 256, timeout_s: float = 10.0,
                 on_batch: Callable[[int, int], None] | None = None):
        self.run_batch, self.max_batch, self.max_latency = run_batch, max_batch, max_latency_ms / 1000
        self.max_queue, self.timeout_s, self.on_batch = max_queue, timeout_s, on_batch
        self.queue: asyncio.Queue[Pending] | None = None
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue(maxsize=self.max_queue)
        self.task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    @property
    def depth(self) -> int:
        return self.queue.qsize() if self.queue is not None else 0

    async def submit(self, image: np.ndarray, extras: dict | None = None) -> np.ndarray:
        """The raw probabilities of one case, ``(C,)``."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait(Pending(image, extras, future))
        except asyncio.QueueFull:
            raise UploadError(503, f"the service is busy ({self.max_queue} cases queued); retry shortly",
                              headers={"Retry-After": "1"}) from None
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()
            raise UploadError(503, f"no answer within {self.timeout_s:g} s (the service is overloaded); retry shortly",
                              headers={"Retry-After": "2"}) from None

    async def run_exclusive(self, fn: Callable, *args):
        """Run ``fn`` on the inference thread (between batches): Grad-CAM and other single-case work."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _collect(self) -> list[Pending]:
        first = await self.queue.get()
        batch, deadline = [first], time.perf_counter() + self.max_latency
        while len(batch) < self.max_batch and not self.queue.empty():  # what is waiting already
            batch.append(self.queue.get_nowait())
        while len(batch) < self.max_batch and self.max_latency > 0:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return [p for p in batch if not p.future.done()]  # timed-out cases are dropped before running

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            images = np.stack([p.image for p in batch])
            extras = None
            if batch[0].extras:
                extras = {k: np.concatenate([p.extras[k] for p in batch]) for k in batch[0].extras}
            try:
                probs = await loop.run_in_executor(self.executor, self.run_batch, images, extras)
            except Exception as exc:  # noqa: BLE001 - a failed batch answers its callers, the loop lives on
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), self.depth)
            for p, row in zip(batch, probs):
                if not p.future.done():
                    p.future.set_result(row)

"""onnxruntime CPU sessions: :func:`cpu_session`, and :class:`WorkerSessions` for one-row forwards of a
graph on worker threads, one per core.

A MiniLM paragraph's GEMMs are too small for two cores to share well through onnxruntime's intra-op
threads, and graphs run one row per forward (int8 activations are quantised per
tensor, so batching would make a row's output depend on its batch-mates). Running several rows at once,
each on its own thread of one single-threaded session, uses every core instead; the outputs are the
same (docs/performance.md has the speed-up).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["WorkerSessions", "cpu_session"]

Item = TypeVar("Item")
Out = TypeVar("Out")


def cpu_session(graph: Path, threads: int, optimize: bool = True) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``graph`` on the CPU: ``threads`` intra-op threads, nodes run
    one after another, warnings only; ``optimize`` = ORT_ENABLE_ALL (fuses GELU, LayerNorm on load), else
    no graph optimisation. Raises what onnxruntime raises for a graph it cannot load."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])


class WorkerSessions:
    """Worker threads sharing one single-threaded session of ``graph``, built on first use.

    Args:
        graph: the ``.onnx`` file.
        workers: how many rows run at once (>= 1).
        optimize: as for :func:`cpu_session`.
    """

    def __init__(self, graph: Path, workers: int, optimize: bool = True) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.graph = graph
        self.workers = workers
        self._optimize = optimize
        self._lock = threading.Lock()
        self._pool: tuple[ThreadPoolExecutor, Any] | None = None

    def _started(self) -> tuple[ThreadPoolExecutor, Any]:
        with self._lock:
            if self._pool is None:
                session = cpu_session(self.graph, 1, self._optimize)
                self._pool = (ThreadPoolExecutor(self.workers, thread_name_prefix="onnx-rows"), session)
            return self._pool

    def map(self, forward: Callable[[Any, Item], Out], items: Sequence[Item]) -> Iterator[Out]:
        """``forward(session, item)`` for every item, ``workers`` at a time, results in input order
        (an exception is raised when its result is reached)."""
        pool, session = self._started()
        return pool.map(lambda item: forward(session, item), items)

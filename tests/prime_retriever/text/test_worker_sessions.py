"""WorkerSessions: rows of a real (tiny) onnxruntime graph run on worker threads, in order, errors raised."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from prime_retriever.text.worker_sessions import WorkerSessions


def _doubling_graph(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])
    node = helper.make_node("Add", ["x", "x"], ["y"])
    model = helper.make_model(helper.make_graph([node], "double", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(path))
    return path


def _forward(session: Any, row: list[float]) -> float:
    if not row:
        raise ValueError("an empty row")
    return float(session.run(["y"], {"x": np.asarray(row, np.float32)})[0].sum())


def test_rows_come_back_in_input_order(tmp_path: Path) -> None:
    rows = WorkerSessions(_doubling_graph(tmp_path / "g.onnx"), 2)
    items = [[float(i), 1.0] for i in range(50)]
    assert list(rows.map(_forward, items)) == [2.0 * (i + 1) for i in range(50)]


def test_an_error_in_one_row_is_raised(tmp_path: Path) -> None:
    rows = WorkerSessions(_doubling_graph(tmp_path / "g.onnx"), 2)
    with pytest.raises(ValueError, match="empty row"):
        list(rows.map(_forward, [[1.0], [], [2.0]]))
    assert list(rows.map(_forward, [[3.0]])) == [6.0]  # the workers keep working


def test_workers_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="workers"):
        WorkerSessions(tmp_path / "g.onnx", 0)

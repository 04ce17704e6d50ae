"""The import-layer check: src/ctl has no import circle, no import from a higher layer and no import of
another module's private name; and the check itself finds each of these in a made-up package."""

from __future__ import annotations

from pathlib import Path

import import_graph


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "ctl" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_check_finds_a_circle_through_a_function_level_and_a_type_only_import(tmp_path):
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "def f():\n    from ctl.io import write\n",
            "io.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ctl import errors\n",
            "methods.py": "import ctl.io\n",
        },
    )
    graph = import_graph.import_graph(src)
    assert graph["ctl.methods"] == {"ctl.io": ["*"]}
    assert import_graph.cycles(graph) == [["ctl.errors", "ctl.io"]]


def test_the_check_finds_an_upward_import_and_a_private_name(tmp_path):
    src = _package(
        tmp_path,
        {
            "__init__.py": "",
            "training/__init__.py": "",
            "training/protocol.py": "from ctl.report.runs import baseline_copy\n",
            "training/continuation.py": "from .task import _row_predictions\n",
            "training/task.py": "def _row_predictions(): ...\n",
            "report/__init__.py": "",
            "report/runs.py": "from ctl.training import task\n",
        },
    )
    graph = import_graph.import_graph(src)
    assert graph["ctl.report.runs"] == {"ctl.training.task": ["*"]}
    assert import_graph.cycles(graph) == []
    assert import_graph.upward_imports(graph) == [
        "ctl.training.continuation imports the private name ctl.training.task._row_predictions",
        "ctl.training.protocol (layer 4) imports ctl.report.runs (layer 5)",
    ]


def test_the_command_modules_sit_above_their_packages():
    assert import_graph.layer_of("ctl.serve.cli") > import_graph.layer_of("ctl.serve.score")
    assert import_graph.layer_of("ctl.data.importer.config") == import_graph.layer_of("ctl.data")


def test_src_has_no_import_circle():
    assert import_graph.cycles(import_graph.import_graph()) == []


def test_src_imports_look_down_only_and_take_no_private_name():
    assert import_graph.upward_imports(import_graph.import_graph()) == []


def test_every_module_of_src_is_in_a_named_layer():
    # a new top-level module falls to the package's own layer 0 unless LAYERS places it
    top = {name for name in import_graph.module_files() if name.count(".") == 1}
    assert sorted(name for name in top if name not in import_graph.LAYERS) == []

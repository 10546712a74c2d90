"""Every chapter notebook runs top to bottom in a real Jupyter kernel without error.

MINIRLHF_FAST=1 is set for the kernel: chapters may shrink their training runs under it, so
the suite stays quick; the committed notebooks were executed in full. Marked ``notebooks``
(167 s in CI for the eleven chapters and the GPT-2 cells, before chapter 4's appendix):
``pytest -m notebooks``, which CI runs after the default suite.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.notebooks  # the chapters and the appendix: pytest -m notebooks (CI runs it)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("MINIRLHF_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors


@pytest.mark.notebooks  # about 25 s
def test_chapter_10_runs_its_gpt2_cells_when_the_files_exist(tmp_path, monkeypatch):
    """Chapter 10's GPT-2 cells, on a GPT-2 folder at toy size written here in the Hugging Face
    layout (OpenAI's names, the causal-mask buffers, vocab.json and merges.txt): the real 124M
    files are never downloaded, and the same cells run on them."""
    import json

    import numpy as np

    from minirlhf.lm.bpe import bytes_to_unicode
    from minirlhf.lm.model import GPT, GPTConfig
    from minirlhf.lm.safetensors import save_file

    table = bytes_to_unicode()
    G = table[32]
    merges = [("t", "h"), ("th", "e"), (G, "the"), ("i", "s"), (G, "is"), ("a", "n")]
    vocab = {c: i for i, c in enumerate(table.values())}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder = tmp_path / "gpt2"
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = GPTConfig(vocab_size=len(vocab), block_size=128, n_layer=2, n_head=2, n_embd=16)
    tensors = GPT(config).state_dict()
    for i in range(config.n_layer):
        tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((128, 128), np.float32))[None, None]
    save_file(folder / "model.safetensors", tensors)
    (folder / "config.json").write_text(json.dumps({
        "model_type": "gpt2", "vocab_size": len(vocab), "n_positions": 128, "n_ctx": 128,
        "n_embd": 16, "n_layer": 2, "n_head": 2, "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5, "bos_token_id": len(vocab) - 1,
        "eos_token_id": len(vocab) - 1}))
    monkeypatch.setenv("MINIRLHF_GPT2_DIR", str(folder))
    monkeypatch.setenv("MINIRLHF_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    path = next(p for p in NOTEBOOKS if p.name.startswith("10_"))
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "found" in printed and "skipped" not in printed
    assert "tokens/s on this CPU" in printed and "log p(' Paris.'" in printed


@pytest.fixture(scope="session")
def student_copy(tmp_path_factory):
    """A fresh student copy: every solution region stripped, no run folder."""
    from minirlhf.course.classroom import make_student

    out = tmp_path_factory.mktemp("student") / "minirlhf-student"
    make_student(Path(__file__).resolve().parent.parent, out)
    return out


@pytest.mark.notebooks  # the chapters of a student copy: each cell stops at its first stub
@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_a_fresh_student_copy_runs_every_chapter_without_an_error_cell(student_copy, name,
                                                                       monkeypatch):
    """Run All on a chapter of a fresh student copy (fast mode, its own minirlhf imported): no
    cell ends in an error; a cell that needs an unsolved exercise prints one line naming it
    (minirlhf.course.unsolved), and so does a later cell that needs what it did not make. Every
    chapter that uses the library's exercises shows at least one such line."""
    monkeypatch.setenv("MINIRLHF_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("PYTHONPATH", str(student_copy))
    path = student_copy / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("import minirlhf\nprint(minirlhf.__file__)"))
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert printed.splitlines()[-1] == str(student_copy / "minirlhf" / "__init__.py")
    needs = [line for line in printed.splitlines() if line.startswith("this cell needs")]
    assert needs, name
    assert all(line.endswith(("solve it and re-run", "solve it and re-run from there"))
               for line in needs), needs
    assert all(line.count("`") % 2 == 0 for line in needs), needs  # no command cut in two
    assert "Traceback" not in printed

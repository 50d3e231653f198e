"""The library imports without the packages of its extras, and a feature that
needs one says which extra installs it."""
import subprocess
import sys

import pytest
import torch

import nft_pyg
from nft_pyg.symmetry import draw
from nft_pyg.utils.extras import optional_import

EXTRA_PACKAGES = ("matplotlib", "sklearn", "scipy")


def test_every_library_package_imports_without_the_extras():
    """The applications (nft_pyg.tasks, nft_pyg.cli) need the ``apps`` extra
    (Lightning, torchmetrics, ...); everything below them does not."""
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in EXTRA_PACKAGES)
    code = (f"import sys; {blocked}\n"
            "import nft_pyg, nft_pyg.graph, nft_pyg.tensor, nft_pyg.nn, nft_pyg.nn.models, "
            "nft_pyg.symmetry, nft_pyg.transforms, nft_pyg.inr, nft_pyg.tickets, "
            "nft_pyg.datasets\n"
            "assert not any(sys.modules[name] for name in "
            f"{EXTRA_PACKAGES!r})\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_draw_without_matplotlib_names_the_plot_extra(monkeypatch):
    graph = nft_pyg.from_module(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU(),
                                                    torch.nn.Linear(3, 1)))
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"nft_pyg.symmetry.draw needs matplotlib.*"
                                          r"pip install 'nft_pyg\[plot\]'"):
        draw(graph)


def test_missing_scikit_learn_names_the_apps_extra(monkeypatch):
    for name in ("sklearn", "sklearn.datasets"):   # as if never installed nor imported
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"the digits datasets needs scikit-learn.*"
                                          r"pip install 'nft_pyg\[apps\]'"):
        optional_import("sklearn.datasets", "the digits datasets")


def test_a_broken_dependency_of_an_installed_package_is_not_blamed_on_the_extra(
        tmp_path, monkeypatch):
    package = tmp_path / "installed_but_broken"
    package.mkdir()
    (package / "__init__.py").write_text("import a_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError) as info:
        optional_import("installed_but_broken", "a feature")
    assert info.value.name == "a_dependency_that_is_missing"
    assert "nft_pyg[" not in str(info.value)

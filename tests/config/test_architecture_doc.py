"""docs/architecture.md names only what exists: every module path, dotted name, URL name and
Celery task it mentions is checked against the code, and the README links to it."""

import importlib
import re

from django.urls import NoReverseMatch, reverse

from tests.conftest import ROOT

DOC = ROOT / "docs" / "architecture.md"


def _code_spans() -> list[str]:
    return re.findall(r"`([^`\n]+)`", DOC.read_text())


def test_the_readme_links_to_the_architecture_doc():
    assert "docs/architecture.md" in (ROOT / "README.md").read_text()


def test_every_file_and_folder_it_names_exists():
    paths = [s for s in _code_spans() if re.fullmatch(r"[\w./-]+/[\w./-]*|[\w-]+\.(py|html|md)", s)]
    assert len(paths) >= 20, paths  # the doc is about the code: it names many of its files
    missing = [p for p in paths if not (ROOT / p.rstrip("/")).exists()]
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_every_dotted_name_it_gives_imports_or_is_a_celery_task():
    """`module.function` / `module.Class` spans (e.g. `collection.pm_loop.choose_shown`), or
    the names Celery knows tasks by (e.g. `collection.generate_responses`)."""
    from config.celery import app

    app.loader.import_default_modules()  # registers every app's tasks
    names = [
        s
        for s in _code_spans()
        if re.fullmatch(r"(assistant|collection|training|evals|experiments|config)(\.\w+)+", s)
        and s not in app.tasks
    ]
    tasks = [s for s in _code_spans() if s in app.tasks]
    assert len(names) >= 10 and len(tasks) >= 5, (names, tasks)
    broken = []
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                target = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            try:
                for attribute in parts[cut:]:
                    target = getattr(target, attribute)
            except AttributeError:
                broken.append(name)
            break
        else:
            broken.append(name)
    assert not broken, f"docs/architecture.md names what does not exist: {broken}"


def test_every_url_name_it_gives_resolves():
    """`app:name` spans are URL names."""
    urls = [s for s in _code_spans() if re.fullmatch(r"[a-z]+:[a-z_]+", s)]
    assert len(urls) >= 5, urls
    broken = []
    for name in urls:
        try:
            reverse(name)
        except NoReverseMatch as error:
            if "with no arguments not found" not in str(error) and "arguments '()'" not in str(
                error
            ):
                broken.append(name)
    assert not broken, f"unknown URL names in docs/architecture.md: {broken}"

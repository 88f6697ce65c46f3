"""The documentation: the site builds with --strict, the README is a front page whose figures and
links come from the docs, and the config-group table lists exactly what `conf/` holds."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CONF = ROOT / "conf"
# groups whose options are not a user's choice of file (Hydra's own, or plugin configs)
NOT_LISTED = {"hydra"}


def table_rows(text: str, header: str) -> list[list[str]]:
    """Cells of the rows of the first Markdown table whose header row starts with `header`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def group_table() -> dict[str, set[str]]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    return {row[0].strip("`"): set(re.findall(r"`([\w.]+)`", row[1]))
            for row in table_rows(text, "| group | options |")}


def test_config_group_table_lists_every_option_file():
    listed = group_table()
    on_disk = {d.name: {p.stem for p in d.glob("*.yaml")} for d in CONF.iterdir()
               if d.is_dir() and d.name not in NOT_LISTED}
    assert set(listed) == set(on_disk), "docs/configuration.md: groups differ from conf/"
    for group, options in on_disk.items():
        assert listed[group] == options, (f"docs/configuration.md lists {sorted(listed[group])} for `{group}`; "
                                          f"conf/{group}/ holds {sorted(options)}")


def test_group_table_check_sees_a_missing_option():
    # the parser reads the options of each row, so a file added to conf/ without a row entry is caught
    assert "tcm" in group_table()["model"] and "plateau_never_written" not in group_table()["schedule"]


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the manual belongs in docs/"
    assert "make test" in README.read_text()


def relative_links(path: Path) -> list[str]:
    return [link.split("#")[0] for link in re.findall(r"\]\(([^)\s]+)\)", path.read_text())
            if not re.match(r"[a-z]+://|#|mailto:", link)]


def test_readme_links_point_at_files_that_exist():
    missing = [link for link in relative_links(README) if not (ROOT / link).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_readme_model_figures_come_from_the_linked_pages():
    """Each parameter count and GMACs figure of the README's model table stands on the page its row links to."""
    rows = table_rows(README.read_text(), "| model | paper |")
    assert len(rows) >= 9
    checked = 0
    for row in rows:
        page = re.search(r"\]\(([^)]+)\)", row[-1]).group(1)
        text = (ROOT / page).read_text()
        for cell in (row[3], row[4]):
            figure = cell.split(" ")[0]
            if figure == "—":
                continue
            assert figure in text, f"README's {row[0]} figure {figure} is not on {page}"
            checked += 1
    assert checked >= 16


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None,
                    reason="docs extras not installed (pip install -e '.[docs]')")
def test_site_builds_strict(tmp_path):
    # no -q: it silences the warnings that --strict turns into a failure
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1",
                                                                          "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "site" / "papers" / "tcm" / "index.html").is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "RecognitionModule" in api and "TemporalCorrelationModule" in api  # rendered from docstrings

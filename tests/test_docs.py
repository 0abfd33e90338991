"""The repository explains itself: every document it points a reader to is in it."""

import re
import subprocess

from conftest import ROOT

TEXT_SUFFIXES = (".py", ".md", ".ini", ".toml", ".txt", ".cfg", ".html", ".js")
DOC_REFERENCE = re.compile(r"\bdocs/[\w-]+\.md\b")
# an upper-case document name (like the README) is expected at the top level
TOP_DOCUMENT = re.compile(r"\b[A-Z][A-Z_]+\.md\b")
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+\.md)(#[\w-]+)?\)")


def _text_files():
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [ROOT / f for f in listed if f.endswith(TEXT_SUFFIXES) and (ROOT / f).is_file()]


def test_every_referenced_document_exists():
    missing = []
    for path in _text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(ROOT)
        for ref in DOC_REFERENCE.findall(text):
            if not (ROOT / ref).is_file():
                missing.append(f"{rel}: {ref}")
        for ref in TOP_DOCUMENT.findall(text):
            if not (ROOT / ref).is_file():
                missing.append(f"{rel}: {ref}")
        if path.suffix == ".md":
            for link, _ in MARKDOWN_LINK.findall(text):
                if "://" not in link and not (path.parent / link).is_file():
                    missing.append(f"{rel}: ({link})")
    assert missing == []


def test_the_architecture_page_names_only_real_files():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:bridge|evaluation|torch_models|tf_models|tests)/[\w/.]*)`", text))
    assert named, "the page names the files it describes"
    assert sorted(n for n in named if not (ROOT / n).exists()) == []

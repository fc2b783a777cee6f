"""The repository documents itself and stands alone.

A user has the repository and nothing else: no development notes, issue tracker or work logs. So no file a user
reads may point at them: no development sessions, rounds or issue numbers, no notes that are not in the repository
(the developers' reference, design, style and checkpoint notes, their shared folder and seed codebases, section
signs of those notes),
no "seed" meaning an original codebase, no "README, \"Section\"" cross-references (the README is a first screen;
reference material lives in docs/), no numbered calibration items (docs/calibration.md is dated instead). Facts
from those sources are written out with a citation of the original paper or repository instead.

The scan covers every file git tracks (plus new files git does not ignore) and the generated `reports/summary.md`,
except `dvc.lock` and the artifacts under `data/` and `models/`. This file is exempt, since it spells the patterns
out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()
SKIPPED_FILES = {"dvc.lock", SELF}
SKIPPED_DIRS = ("data/", "models/")
GENERATED = ("reports/summary.md",)

FORBIDDEN = re.compile(
    "|".join(
        [
            # development sessions, rounds and issue numbers
            r"\bsessions?[ -]\d",
            r"\b(?:this|that|earlier|previous|later|next|each|every|another|same|one|development) sessions?\b",
            r"\b(?:the|these|those) sessions\b",
            r"\bissues? #?\d",
            r"\b(?:development )?rounds? \d",
            # notes that only the developers have
            # the notes' names in capitals only (a docs page of this repository may share one in lower case), and
            # not a constant such as REFERENCE_SIGN nor the word REFERENCES
            r"(?-i:\b(?:REFERENCE|DESIGN|STYLE|CHECKPOINTS)\b)",
            r"§ ?\d",
            r"\.\./shared\b",
            r"\bseeds/",
            r"\barchitecture brief\b",
            r"\b(?:from|in|of) the brief\b",
            # "seed" meaning one of the original codebases (never a random seed: `seed: 0`, `study.seed`)
            r"\b(?:robustness|stochastic|stochastic-embedding|stochastic-ssl|dissl|source) seeds?\b",
            r"\bthe seeds?(?:'s)? (?:code|codebase|repo|repository|repositories|study|studies|implementation|paper"
            r"|readme|table|number|knobs|ablation|evaluate)",
            # numbered calibration items and README section references
            r"\bcalibration\W{0,3}items?\s*\d",
            r"\bitems? \d+\b",
            r"\bREADME,? [\"“]",
        ]
    ),
    re.IGNORECASE,
)


def _candidate_files() -> list[str]:
    """Tracked files plus untracked files that git does not ignore, relative to the repository root."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run([git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode()
    files = {f for f in out.split("\0") if f}
    files.update(g for g in GENERATED if (ROOT / g).is_file())
    return sorted(f for f in files if f not in SKIPPED_FILES and not f.startswith(SKIPPED_DIRS))


def _text(path: Path) -> str | None:
    """The file's text, or None for binary files and files listed by git but absent from the work tree."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def forbidden_mentions(text: str) -> list[tuple[int, str]]:
    """(line number, matched text) of every forbidden mention in `text`."""
    return [(i, m.group(0)) for i, line in enumerate(text.splitlines(), 1) for m in FORBIDDEN.finditer(line)]


# The examples below name sessions, issues and the developers' notes only in pieces, joined when the tests run, so
# that no line of this file points a reader at them.
_SESSION, _ISSUE, _SEED = "sess" "ion", "iss" "ue", "se" "ed"
_REF, _DES, _STY, _SHARED = "REFER" "ENCE", "DES" "IGN", "STY" "LE", "../sha" "red"


def test_the_pattern_flags_what_a_user_cannot_follow() -> None:
    for text in [f"measured in {_SESSION} 8", f"{_SESSION}-4 overhead table", f"{_SESSION}s 2-4", f"({_ISSUE} 9)",
                 f"lightly {_ISSUE}s #1528", f"{_REF}.md §2.1", f"{_REF} §2.4", f"({_DES}.md §3)", f"{_STY}.md #7",
                 f"see {_SHARED}/{_SEED}s/", f"the robustness {_SEED}'s number",
                 f"the stochastic-embedding {_SEED}'s grid",
                 f"the {_SEED}'s knobs (β, M, prior)", 'README "Calibration" item 8', 'README, "Design changes"',
                 "Calibration item 11", "(item 10)", "round 3 of the calibration", "the §2.1 probe",
                 f"no GPU was lent to this {_SESSION}", "a change from the brief"]:
        assert forbidden_mentions(text), text


def test_the_pattern_leaves_ordinary_text_alone() -> None:
    for text in ["study:\n  seed: 0", "study.seed draws the data", "seed=cfg.study.seed", "the same seed twice",
                 "REFERENCE_SIGN = {}", 'REFERENCES = ("auto",)', "reference model of the mCE",
                 '@pytest.fixture(scope="session")', "start_new_session=True", "round(width * scale)",
                 "lightly-ai/lightly#1528", "seeds 0 / 1 / 2", "see docs/calibration.md",
                 "the README's first screen", f"docs/{_DES.lower()}.md", "`.item()` of a tensor", "three seeds"]:
        assert not forbidden_mentions(text), text


def test_no_file_mentions_development_notes_sessions_or_issues() -> None:
    found = []
    for name in _candidate_files():
        text = _text(ROOT / name)
        if text is None:
            continue
        found += [f"{name}:{line}: {match!r}" for line, match in forbidden_mentions(text)]
    assert not found, (
        f"{len(found)} mention(s) of things a user of the repository does not have (development sessions, issue "
        "numbers, notes outside the repository, numbered calibration items, README section references). Replace "
        "each with what the reader needs: a citation of the paper or repository, or a pointer to a docs/ page.\n"
        + "\n".join(found)
    )


def test_the_readme_is_a_first_screen() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 220, f"README.md has {len(lines)} lines; reference material belongs in docs/"
    head = "\n".join(lines[:30])
    assert "make study" in head and "make test" in head, "the first 30 lines of README.md must show both commands"


def test_links_between_the_documents_resolve() -> None:
    """Relative links of README.md and docs/*.md point at files that exist (anchors are not checked)."""
    missing = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            path = target.split("#")[0]
            if path and "://" not in path and not (doc.parent / path).exists():
                missing.append(f"{doc.relative_to(ROOT).as_posix()} -> {target}")
    assert not missing, "links to missing files:\n" + "\n".join(missing)

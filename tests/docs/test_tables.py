"""The interop page's tables are copies of interop/README.md's: each row must still be there, word for
word, so the page cannot drift from the results it reports (#16)."""

from __future__ import annotations

from tests.docs.snippets import DOCS, ROOT


def test_every_interop_table_row_is_in_interop_readme() -> None:
    source = (ROOT / "interop" / "README.md").read_text().splitlines()
    rows = [line for line in (DOCS / "interop.md").read_text().splitlines() if line.startswith("| ")]
    assert len(rows) >= 15
    missing = [row for row in rows if row not in source]
    assert not missing, "rows no longer in interop/README.md (copy the new ones):\n" + "\n".join(missing)

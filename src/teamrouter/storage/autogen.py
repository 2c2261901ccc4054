"""Regenerate the initial migration from the models (`make migration`).

Before the first release the schema has a single revision; this rewrites it from the models against
an empty SQLite database so it is always complete. After a release, add revisions instead.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from alembic import command

from teamrouter.storage.migrate import MIGRATIONS, alembic_config

INITIAL = MIGRATIONS / "versions" / "0001_initial.py"


def main() -> None:
    INITIAL.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = alembic_config(f"sqlite:///{Path(tmp) / 'empty.db'}")
        command.revision(config, message="initial schema", autogenerate=True, rev_id="0001")
    generated = next((MIGRATIONS / "versions").glob("0001_*.py"))
    if generated != INITIAL:
        generated.rename(INITIAL)
    # Autogenerate's output is not house style; tidy it so `make test`'s ruff check passes.
    ruff = Path(sys.executable).with_name("ruff")
    subprocess.run([str(ruff), "check", "--fix", "--quiet", str(INITIAL)], check=False)
    subprocess.run([str(ruff), "format", "--quiet", str(INITIAL)], check=False)
    print(f"wrote {INITIAL}")


if __name__ == "__main__":
    main()

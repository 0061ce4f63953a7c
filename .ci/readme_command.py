"""Print the README's command marked `<!-- ci: NAME -->` (the bash block right below the marker), so
that CI runs exactly what the README tells a new user to run.

    bash -euo pipefail -c "$(python3 .ci/readme_command.py main-job)"
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def marked_command(text: str, name: str) -> str:
    """The body of the one ```bash block that follows `<!-- ci: name -->`; SystemExit if not exactly one."""
    found = re.findall(rf"<!-- ci: {re.escape(name)} -->\s*```bash\n(.*?)```", text, flags=re.S)
    if len(found) != 1:
        raise SystemExit(f"readme_command: README.md has {len(found)} blocks marked '<!-- ci: {name} -->', not 1")
    return found[0].strip()


if __name__ == "__main__":
    print(marked_command(README.read_text(encoding="utf-8"), sys.argv[1]))

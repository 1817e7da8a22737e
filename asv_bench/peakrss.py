"""Peak resident memory of a piece of code, measured in a fresh Python process (Linux).

The child runs ``setup`` (imports, inputs, JIT warm-up), resets its high-water
mark (``VmHWM``, Linux >= 4.0), runs ``measured`` and reports the peak RSS
minus the RSS before ``measured``: what that code and its temporaries cost.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))

_TEMPLATE = """
import json
{setup}

def _status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024

with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
_base = _status("VmRSS")
{measured}
print(json.dumps(dict(used=_status("VmHWM") - _base, **({report}))))
"""


def peak_rss(setup: str, measured: str, report: str = "{}", env: dict | None = None) -> dict:
    """``{"used": bytes, **report}`` from a child running ``setup`` then ``measured``.

    ``report`` is a Python expression (a dict) evaluated in the child after ``measured``.
    """
    code = _TEMPLATE.format(
        setup=textwrap.dedent(setup), measured=textwrap.dedent(measured), report=report
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=HERE,  # not the repository root, which ``python -c`` would put first on sys.path
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if out.returncode != 0:
        sys.exit(f"peak memory run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])

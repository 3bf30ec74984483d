"""syslog-ng `file()` → `amqp()` from Debian's packages (one persistent message per line, with
flow control: without it syslog-ng drops lines once its queue is full), installed when missing;
its consumer is bench.naive's with --newline (syslog-ng drops the line's newline)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from bench.common import Proc

PACKAGES = ("syslog-ng-core", "syslog-ng-mod-amqp")


def ensure_installed() -> str | None:
    """Install syslog-ng and its AMQP module with apt-get when missing (root or sudo); return why
    it is unavailable, or None when it is there."""
    if shutil.which("syslog-ng") and Path("/usr/lib/syslog-ng").exists() and _has_amqp():
        return None
    sudo: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            return "syslog-ng missing and not root: apt-get install " + " ".join(PACKAGES)
        sudo = ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "update", "-qq"], env=env, capture_output=True)
    done = subprocess.run(
        [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not _has_amqp():
        return f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr.strip()[-300:]}"
    return None


def _has_amqp() -> bool:
    return any(Path("/usr/lib/syslog-ng").glob("*/libafamqp.so"))


def version() -> str:
    try:
        out = subprocess.run(["syslog-ng", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return "absent"
    return out.splitlines()[0] if out else "unknown"


def config(input_path: Path, url: str, name: str) -> str:
    parts = urlsplit(url)
    return f"""@version: 3.38
options {{ stats-freq(0); flush-lines(100); log-fifo-size(100000); }};
source s_in {{
  file("{input_path}" flags(no-parse) follow-freq(0.01) log-fetch-limit(1000) log-iw-size(100000));
}};
destination d_amqp {{
  amqp(host("{parts.hostname}") port({parts.port or 5672}) vhost("/")
       username("{parts.username or "guest"}") password("{parts.password or "guest"}")
       exchange("{name}") exchange-declare(no) routing-key("{name}")
       body("${{MESSAGE}}") persistent(yes));
}};
log {{ source(s_in); destination(d_amqp); flags(flow-control); }};
"""


def proc(workdir: Path, input_path: Path, url: str, name: str) -> Proc:
    conf = workdir / "syslog-ng.conf"
    conf.write_text(config(input_path, url, name))
    argv = [
        "syslog-ng", "-F", "--no-caps", "-f", str(conf),
        "-R", str(workdir / "syslog-ng.persist"),
        "-c", str(workdir / "syslog-ng.ctl"),
        "-p", str(workdir / "syslog-ng.pid"),
    ]  # fmt: skip
    return Proc("syslog-ng", argv, workdir / "syslog-ng.log", cwd=workdir)

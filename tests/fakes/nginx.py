"""nginx (Debian's package) in front of gateway replicas on loopback: its own prefix, pid file,
temp directories and error log under a test's directory, in the foreground, on a free port."""

from __future__ import annotations

import asyncio
import os
import pwd
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fakes.served import free_port
from fakes.waits import stopped, until_healthy

# Idle keep-alive connections nginx keeps to the replicas (per worker).
KEEPALIVE = 32


def _start(binary: str, config: str, prefix: Path) -> subprocess.Popen[bytes]:
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "nginx.conf").write_text(config)
    command = [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]
    with (prefix / "stderr.log").open("wb") as stderr:
        return subprocess.Popen(
            [*command, "-e", str(prefix / "error.log"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,  # its worker goes with it
        )


def render(port: int, backends: Sequence[int], prefix: Path) -> str:
    """The config: round robin over `backends`, HTTP/1.1 with keep-alive to them, nothing
    buffered (an SSE event leaves as it arrives), no access log, everything under `prefix`."""
    # max_fails=0: a replica that was down gets requests again as soon as it is back.
    servers = "".join(f"    server 127.0.0.1:{backend} max_fails=0;\n" for backend in backends)
    temp = "".join(
        f"  {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # A root master would run its worker as `nobody`, which cannot enter the test's directory.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
{temp}  client_max_body_size 32m;
  upstream messagegate {{
{servers}    keepalive {KEEPALIVE};
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://messagegate;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 60s;
    }}
  }}
}}
"""


@asynccontextmanager
async def nginx_front(binary: str, backends: Sequence[int], prefix: Path) -> AsyncIterator[str]:
    """nginx on a free loopback port proxying to `backends`; yields its URL once a request
    through it reaches a replica's /health. Stopped (its process group killed) on the way out."""
    port = free_port()
    process = await asyncio.to_thread(_start, binary, render(port, backends, prefix), prefix)
    url = f"http://127.0.0.1:{port}"
    try:
        await until_healthy(url, process, prefix / "error.log")
        yield url
    finally:
        # Fast shutdown: idle keep-alive connections are not waited for.
        await stopped(process, signal.SIGTERM)

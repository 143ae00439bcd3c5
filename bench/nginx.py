"""nginx as the two references: static files by sendfile (the practical limit for a blob hit),
and a caching proxy in front of the upstream, configured as sites run one for a registry."""

from __future__ import annotations

import os
from pathlib import Path

from bench.procs import Service
from bench.tools import find_tool
from tests.support.processes import free_port

_COMMON = """\
{user}worker_processes auto;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{http}
}}
"""

_STATIC = """\
    access_log off;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
"""

# A pull-through registry cache as nginx users write it: 200 answers cached (content by digest
# for a month, tags for the tag TTL, then revalidated), the manifest types a client accepts in
# the key of a manifest, one upstream request per missing entry however many clients ask
# (proxy_cache_lock), keep-alive connections to the upstream, and an access log as the mirror
# writes its request log.
_CACHE = """\
    access_log {prefix}/access.log combined buffer=64k flush=1s;
    proxy_cache_path {cache} levels=1:2 keys_zone=registry:16m max_size=64g
                     inactive=30d use_temp_path=off;
    map $uri $accept_key {{
        ~/manifests/ $http_accept;
        default "";
    }}
    upstream registry {{
        server {upstream};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_cache registry;
        proxy_cache_key $request_uri|$accept_key;
        proxy_cache_lock on;
        proxy_cache_lock_timeout 1h;
        proxy_cache_lock_age 1h;
        proxy_cache_revalidate on;
        proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
        proxy_ignore_headers Cache-Control Expires Set-Cookie;
        add_header X-Cache-Status $upstream_cache_status always;
        location ~ "^/v2/.+/(blobs|manifests)/sha256:[0-9a-f]{{64}}$" {{
            proxy_cache_valid 200 30d;
            proxy_pass http://registry;
        }}
        location / {{
            proxy_cache_valid 200 {tag_ttl}s;
            proxy_pass http://registry;
        }}
    }}
"""


class _Nginx(Service):
    """An nginx master (and its workers) on a free loopback port, with its own prefix."""

    def __init__(self, name: str, workdir: Path, http: str, **values: object) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "tmp").mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = workdir / "nginx.conf"
        fill = {"prefix": workdir, "port": self.port, **values}
        conf.write_text(
            _COMMON.format(
                # As root, workers would drop to `nobody`, which cannot read a private temp dir.
                user="user root;\n" if os.geteuid() == 0 else "",
                prefix=workdir,
                http=http.format(**fill),
            )
        )
        argv = [find_tool("nginx"), "-p", str(workdir), "-c", str(conf), "-e", "stderr"]
        super().__init__(name, argv, workdir / "nginx.out")

    def start(self) -> None:
        super().start()
        try:
            self.wait_http(f"{self.url}/")
        except BaseException:
            self.stop()
            raise


class NginxServer(_Nginx):
    """nginx with sendfile serving `root` as static files."""

    def __init__(self, workdir: Path, root: Path) -> None:
        super().__init__("nginx", workdir, _STATIC, root=root)


class NginxCache(_Nginx):
    """nginx's caching proxy (`proxy_cache`, with a cache lock) in front of `upstream_url`."""

    def __init__(self, workdir: Path, upstream_url: str, tag_ttl: int) -> None:
        upstream = upstream_url.removeprefix("http://").rstrip("/")
        self.cache = workdir / "cache"
        super().__init__(
            "nginx cache", workdir, _CACHE, upstream=upstream, tag_ttl=tag_ttl, cache=self.cache
        )

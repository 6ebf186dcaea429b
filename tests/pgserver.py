"""A real PostgreSQL server for the tests, from the system's packages.

``PostgresServer`` runs ``initdb`` in a fresh scratch folder and starts
``postgres`` on a free localhost port with trust authentication for one
superuser; ``create_database(name)`` returns a SQLAlchemy URL.  PostgreSQL
refuses to run as root, so when the tests run as root the server runs as the
``postgres`` user of Debian's package (or ``nobody``), in a folder it owns.
"""
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

SUPERUSER = "grader"


def find_bin(name):
    """The newest server binary: Debian keeps them in /usr/lib/postgresql/<version>/bin."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return found[-1]
    return shutil.which(name)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.initdb, self.pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        if not self.initdb or not self.pg_ctl:
            raise RuntimeError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: "
                               "run 'bash scripts/install_system.sh' (Debian's postgresql package)")
        self.user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if self.user is None:
                raise RuntimeError("running as root, and there is no 'postgres' or 'nobody' user to run "
                                   "PostgreSQL as")
        self.folder = tempfile.mkdtemp(prefix="pgtest-")
        self.data = os.path.join(self.folder, "data")
        self.log = os.path.join(self.folder, "server.log")
        self.port = free_port()
        if self.user is not None:
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
            os.chmod(self.folder, 0o700)

    def _run(self, argv, timeout=120):
        def drop():
            if self.user is not None:
                os.setgroups([])
                os.setgid(self.user.pw_gid)
                os.setuid(self.user.pw_uid)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        proc = subprocess.run(argv, preexec_fn=drop, env=env, cwd=self.folder, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0:
            log = ""
            if os.path.exists(self.log):
                with open(self.log, encoding="utf-8", errors="replace") as fh:
                    log = fh.read()[-2000:]
            raise RuntimeError(f"{os.path.basename(argv[0])} failed ({proc.returncode}): "
                               f"{proc.stderr.strip()[-2000:]}\n{log}")
        return proc

    def start(self):
        self._run([self.initdb, "-D", self.data, "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                   "--no-locale", "--no-sync"])
        opts = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c max_connections=50")
        self._run([self.pg_ctl, "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60", "start"])
        return self

    def url(self, database):
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name):
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
        return self.url(name)

    def query(self, database, sql, args=()):
        import psycopg
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER, dbname=database) as conn:
            return conn.execute(sql, args).fetchall()

    def stop(self):
        try:
            if os.path.exists(os.path.join(self.data, "postmaster.pid")):
                self._run([self.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop"], timeout=60)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
